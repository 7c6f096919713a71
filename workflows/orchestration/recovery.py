"""Waiting holds nothing, and recovery is a sweep over requests rather than over processes.

The service loop (in `serve_flows`, under the poller lease) calls `resume_requests` for every request one of
whose jobs changed state, and `sweep` every few seconds. The sweep compares what each unfinished request needs
with the Prefect state of its flow run and puts it back: resume a suspended run, reschedule a run whose process
died (Prefect says PENDING, RUNNING or CRASHED but no pass holds the request's lock), start a new run when the
old one is gone, and carry out cancellations, which are durable intents retried until Slurm confirms them.
"""

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Max, Q
from django.db.models.fields.json import KT
from django.utils import timezone

from analyses.errors import Conflict
from analyses.models import AssemblyAnalysisRequest, Notification
from analyses.selectors import active_request
from analyses.services import (
    ActiveRequestExists,
    RequestAlreadyFinished,
    cancel_assembly_analysis_request,
    notify_requester,
    record_request_state,
)
from prefect_utils.errors import SchedulerError
from prefect_utils.flow_processes import flow_runs_with_local_process
from prefect_utils.states import TERMINAL_STATES
from workflows.models import ClusterJob, RequestProgress, Trigger
from workflows.orchestration.approval import reviewed_since_last_pass
from workflows.orchestration.batches import with_member_histories
from workflows.orchestration.capacity import (
    grant_free_slots,
    holds_untaken_grant,
    holds_valid_grant,
    keep_grants,
    queued_without_grant,
    requests_queued_without_grant,
)
from workflows.orchestration.cleanup import clean_work_directories
from workflows.orchestration.cluster import build_jobs_service
from workflows.orchestration.plans import supersede_for_retry
from workflows.orchestration.request_lock import (
    RequestBusy,
    request_lock,
    requests_with_live_pass,
    sweep_lock,
)
from workflows.outbox import deployments, prefect_api
from workflows.outbox.dispatch import enqueue_trigger
from workflows.selectors import current_plan, source_label_of

logger = logging.getLogger(__name__)
Status = AssemblyAnalysisRequest.Status
MAX_RECOVERY_DELAY = timedelta(minutes=10)
# A run whose process is alive on this host but has shown no pass for this long is hung, not starting: it is put
# back like a dead one.
LIVE_PROCESS_GRACE = timedelta(minutes=15)


def carry_out_cancellation(request_id: int, *, lock_held: bool = False) -> bool:
    """scancel every job of a cancelled request (found by key if never recorded) and cancel its flow run.

    True once Slurm confirmed every job over; False means "try again later" (a pass holds the request, the
    controller is down, a job is still dying), and the sweep does.
    """
    request = AssemblyAnalysisRequest.objects.get(pk=request_id)
    if request.status != Status.CANCELLED:
        return False
    progress, _ = RequestProgress.objects.get_or_create(request_id=request_id)
    if progress.cancel_carried_out_at is not None:
        return True
    try:
        # Under the request lock, so that no pass submits a job after the scancel has looked.
        with nullcontext() if lock_held else request_lock(request_id, wait_seconds=0):
            remaining = build_jobs_service().cancel(
                {"request_id": request_id}, reason=request.status_detail or "request cancelled"
            )
    except RequestBusy:
        return False
    except SchedulerError as exc:
        logger.warning("Request %s: cannot scancel its jobs yet: %s", request_id, exc)
        return False
    if request.flow_run_id and not lock_held:
        try:
            prefect_api.cancel_flow_run(request.flow_run_id)
        except Exception as exc:  # Prefect down: the jobs are what costs money, and they are cancelled
            logger.warning("Request %s: cannot cancel flow run %s: %s", request_id, request.flow_run_id, exc)
    if remaining:
        logger.info("Request %s: %d job(s) not yet confirmed over", request_id, len(remaining))
        return False
    RequestProgress.objects.filter(pk=request_id).update(cancel_carried_out_at=timezone.now())
    logger.info("Request %s: cancellation carried out", request_id)
    return True


def carry_out_pending_cancellations() -> list[int]:
    """Try every cancellation not yet confirmed by Slurm; returns the requests now fully cancelled."""
    pending = AssemblyAnalysisRequest.objects.filter(status=Status.CANCELLED).exclude(
        progress__cancel_carried_out_at__isnull=False
    )
    return [
        request_id
        for request_id in pending.values_list("pk", flat=True)
        if carry_out_cancellation(request_id)
    ]


def resume_requests(request_ids: set[int]) -> list[int]:
    """Resume the suspended flow run of each request; resuming one that is not suspended is a no-op."""
    resumed = []
    requests = AssemblyAnalysisRequest.objects.filter(
        pk__in=request_ids, status__in=AssemblyAnalysisRequest.ACTIVE_STATUSES
    )
    for request in requests:
        if request.flow_run_id and _resume(request.pk, request.flow_run_id):
            resumed.append(request.pk)
    return resumed


def resume_reviewed_requests() -> list[int]:
    """Resume the flow run of each request approved or rejected since it last passed: an approved one goes on, a
    rejected one ends. Run when a decision wakes the service loop, and by each sweep (a resume that came before
    the run had suspended, or was lost, is made again until a pass has read the decision)."""
    reviewed = AssemblyAnalysisRequest.objects.filter(pk__in=reviewed_since_last_pass())
    return [
        request.pk for request in reviewed if request.flow_run_id and _resume(request.pk, request.flow_run_id)
    ]


def wake_requests(ended: set[int]) -> list[int]:
    """After a poll: resume the requests whose jobs ended, and those granted the slots their jobs freed.

    A request queued for capacity without a grant is not resumed for its own ended jobs: its pass could submit
    nothing (scenario b of bench/scale.py: 30 of 52 passes did). Its grant resumes it, and that pass reads them.
    """
    if not ended:
        return []
    now = timezone.now()
    granted = set(grant_free_slots(build_jobs_service(), now))
    return resume_requests((ended - requests_queued_without_grant(ended, now)) | granted)


def _resume(request_id: int, flow_run_id: str) -> bool:
    try:
        accepted = prefect_api.resume_flow_run(flow_run_id)
    except Exception as exc:  # Prefect down: the sweep sees the run still suspended and tries again
        logger.warning("Request %s: cannot resume flow run %s: %s", request_id, flow_run_id, exc)
        return False
    if accepted:
        RequestProgress.objects.update_or_create(
            request_id=request_id, defaults={"last_resumed_at": timezone.now()}
        )
        RequestProgress.objects.filter(pk=request_id).update(resumes=F("resumes") + 1)
    return accepted


@dataclass
class SweepReport:
    resumed: list[int] = field(default_factory=list)
    rescheduled: list[int] = field(default_factory=list)
    restarted: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    cleaned: list[int] = field(
        default_factory=list
    )  # finished requests whose work directories were looked at
    skipped: bool = False  # another process was sweeping: this one did nothing

    def __bool__(self) -> bool:
        return bool(self.resumed or self.rescheduled or self.restarted or self.cancelled)


class _Unfinished(NamedTuple):
    """What the sweep reads of an unfinished request (the progress figures are None when it has no progress row)."""

    pk: int
    status: str
    run_id: str  # its flow run's id
    progress_row: int | None
    last_read_at: datetime | None
    capacity_wanted: int | None
    capacity_granted: int | None
    capacity_granted_at: datetime | None
    recoveries: int | None


def sweep(now: datetime | None = None) -> SweepReport:
    """One round of recovery over every unfinished request, unless another process is sweeping (then nothing).

    Fenced as the poll is: the poller lease can expire under a long sweep while its holder goes on, and two
    sweeps over the same requests would each start a new flow run for one request. The lock is PostgreSQL's,
    taken without waiting and dropped with its connection, so a sweeper that died holds nothing.
    """
    with sweep_lock() as ours:
        if not ours:
            logger.info("Sweep skipped: another process is sweeping")
            return SweepReport(skipped=True)
        return _sweep(now)


def _sweep(now: datetime | None) -> SweepReport:
    """A constant number of queries and Prefect calls, plus one call per request that needs putting back."""
    # Here, not with the module: Prefect's import is seconds of CPU that most Django processes never need.
    from prefect.client.schemas.objects import StateType

    now = now or timezone.now()
    report = SweepReport(cancelled=carry_out_pending_cancellations(), cleaned=clean_work_directories(now))
    # Free slots go to the requests waiting longest for one; only those are resumed (see capacity.py).
    report.resumed = resume_requests(set(grant_free_slots(build_jobs_service(), now)))
    report.resumed += resume_reviewed_requests()

    active = AssemblyAnalysisRequest.objects.filter(status__in=AssemblyAnalysisRequest.ACTIVE_STATUSES)
    # Tuples of what is read below, the flow run id taken out of the metadata by PostgreSQL: at 10,000 unfinished
    # requests, model instances and their JSON were most of a sweep's CPU (bench/scale.py, scenario c). A request
    # that needs putting back is read whole then.
    requests = [
        _Unfinished(*row)
        for row in active.annotate(
            run_id=KT("request_metadata__flow_run_id"),
            progress_row=F("progress__pk"),
            last_read_at=F("progress__last_read_at"),
            capacity_wanted=F("progress__capacity_wanted"),
            capacity_granted=F("progress__capacity_granted"),
            capacity_granted_at=F("progress__capacity_granted_at"),
            recoveries=F("progress__recoveries"),
        )
        .filter(run_id__gt="")
        .values_list(
            "pk",
            "status",
            "run_id",
            "progress_row",
            "last_read_at",
            "capacity_wanted",
            "capacity_granted",
            "capacity_granted_at",
            "recoveries",
        )
    ]
    if not requests:
        return report
    flow_run_ids: dict[int, str] = {r.pk: r.run_id for r in requests}
    live = requests_with_live_pass()
    awaiting_dispatch = set(
        Trigger.objects.filter(status=Trigger.Status.PENDING).values_list("source", flat=True)
    )
    flow_runs = prefect_api.read_flow_runs(flow_run_ids.values())
    # Read again after Prefect answered: a pass that finished its request in between left its run COMPLETED for a
    # request that needs no other (bench/prefect_down.py saw a second flow run started so). Read in this order, a
    # request still unfinished here really has a run that ended without finishing it.
    unfinished = set(active.values_list("pk", flat=True))
    activity = {
        row["request_id"]: row
        for row in ClusterJob.objects.filter(request__in=active)
        .values("request_id")
        .annotate(
            # Only a job that ended gives a pass something to do; one that merely started running does not.
            last_change=Max("state_changed_at", filter=Q(state__in=TERMINAL_STATES)),
            # Jobs on the cluster; a row never submitted (the controller was down, the cap was reached) needs a
            # pass, not a poll.
            on_cluster=Count("pk", filter=Q(slurm_job_id__isnull=False) & ~Q(state__in=TERMINAL_STATES)),
        )
    }
    stall = timedelta(seconds=settings.WORKFLOWS_STALL_SECONDS)
    environment = deployments.environment()
    waiting_for_a_process: set[int] = set()
    for request in requests:
        if (
            request.pk not in unfinished
            or (live and request.pk in live)
            or source_label_of(AssemblyAnalysisRequest, request.pk) in awaiting_dispatch
        ):
            continue
        flow_run_id = flow_run_ids[request.pk]
        flow_run = flow_runs.get(flow_run_id)
        if flow_run is None or flow_run.state_type is None or flow_run.state_timestamp is None:
            _start_new_flow_run(request.pk, "its flow run no longer exists in Prefect")
            report.restarted.append(request.pk)
            continue
        if flow_run.parameters.get("environment") != environment:
            # Made before deployments were scoped by environment (or by another environment): no runner of ours
            # would ever pick it up again, so it would wait forever. The new run reads the same plan.
            _start_new_flow_run(request.pk, f"its flow run is not of environment {environment!r}")
            report.restarted.append(request.pk)
            continue
        state = flow_run.state_type
        stalled = now - flow_run.state_timestamp > stall
        if state in (StateType.SCHEDULED, StateType.PENDING) and holds_valid_grant(request, now):
            waiting_for_a_process.add(request.pk)
        if state == StateType.PAUSED:
            if request.pk in report.resumed:
                continue  # granted a slot or reviewed above, and resumed then
            if request.status == Status.AWAITING_APPROVAL:
                continue  # a decision resumes it (above, or when it wakes the service loop)
            if queued_without_grant(request, now):
                continue  # its grant resumes it (above, or after a poll), and that pass reads its ended jobs
            if request.capacity_wanted:
                # Granted: resumed when granted (above, or after a poll); resumed here only if that resume was lost.
                due = holds_untaken_grant(request, now)
            else:
                jobs: Mapping[str, Any] = activity.get(request.pk, {})
                last_change: datetime | None = jobs.get("last_change")
                read_at = request.last_read_at
                # A job ended since its pass read the ledger, or nothing of its own runs: its wake-up was lost.
                due = (
                    last_change is not None and (read_at is None or last_change > read_at)
                ) or not jobs.get("on_cluster")
            if due and _resume(request.pk, flow_run_id):
                report.resumed.append(request.pk)
        elif state == StateType.CRASHED or (
            state in (StateType.PENDING, StateType.RUNNING)
            and stalled
            and live is not None
            and not _shows_life(request.pk, flow_run, now)
        ):
            _reschedule(
                request.pk,
                flow_run_id,
                request.recoveries or 0,
                f"flow run {state.value} with no live pass",
                now,
                backoff=False,
            )
            report.rescheduled.append(request.pk)
        elif state == StateType.FAILED:
            _reschedule(
                request.pk,
                flow_run_id,
                request.recoveries or 0,
                f"flow run failed: {flow_run.state_message[:300]}",
                now,
                backoff=True,
            )
            report.rescheduled.append(request.pk)
        elif state == StateType.CANCELLED or (state == StateType.CANCELLING and stalled):
            # Cancelled in the Prefect UI: that is an operator's intent for the request and its jobs.
            try:
                cancel_assembly_analysis_request(
                    AssemblyAnalysisRequest.objects.get(pk=request.pk),
                    by=None,
                    reason="Flow run cancelled in Prefect.",
                )
            except RequestAlreadyFinished:
                continue
            carry_out_cancellation(request.pk)  # a first try now; later sweeps retry until Slurm confirms
            report.cancelled.append(request.pk)
        elif state == StateType.COMPLETED:
            _start_new_flow_run(request.pk, "its flow run completed with the request unfinished")
            report.restarted.append(request.pk)
    # Their runs wait for a runner's process slot, or for their process to start: slow, not lost (see capacity.py).
    keep_grants(waiting_for_a_process, now)
    if report:
        logger.info("Sweep: %s", report)
    return report


def _shows_life(request_id: int, seen: prefect_api.FlowRunState, now: datetime) -> bool:
    """Whether a run the sweep found stalled has moved since it read it, has a live pass now, or has a process on
    this host that is still starting it.

    Read again just before acting, because the reschedule is forced over whatever state the run has by then: a
    run whose process started after the sweep's read (PENDING then, RUNNING now) would be put back under its live
    process, whose suspension Prefect then refuses (8 runs at once after a restart of serve_flows, issue 19). A
    process still importing holds no lock yet (116 runs rescheduled so in scenario b of bench/scale.py).
    """
    current = prefect_api.read_flow_runs([seen.id]).get(seen.id)
    if current is None or (current.state_type, current.state_timestamp) != (
        seen.state_type,
        seen.state_timestamp,
    ):
        return True
    if request_id in (requests_with_live_pass() or set()):
        return True
    starting = seen.state_timestamp is not None and now - seen.state_timestamp < LIVE_PROCESS_GRACE
    return starting and seen.id in flow_runs_with_local_process()


def _reschedule(
    request_id: int,
    flow_run_id: str,
    recoveries: int,
    reason: str,
    now: datetime,
    *,
    backoff: bool,
) -> None:
    """Same flow run, back in the queue. A run whose process died goes back at once (the process, not the
    request, was the problem: bench/chaos.py saw a request held 10 minutes by back-off after repeated kills); a
    run that failed goes back at once the first time, then backing off while it keeps failing."""
    recoveries = recoveries if backoff else 0
    delay = min(timedelta(seconds=5 * 2**recoveries) if recoveries else timedelta(0), MAX_RECOVERY_DELAY)
    prefect_api.reschedule_flow_run(flow_run_id, f"emgapi recovery: {reason}", at=now + delay)
    _record_recovery(request_id, reason)
    logger.warning("Request %s: rescheduled flow run %s (%s)", request_id, flow_run_id, reason)


def _start_new_flow_run(request_id: int, reason: str) -> None:
    """A new flow run under a new key (Prefect never forgets one): it reads the same plan."""
    request = AssemblyAnalysisRequest.objects.get(pk=request_id)
    progress, _ = RequestProgress.objects.get_or_create(request_id=request.pk)
    generation = progress.flow_run_generation + 1
    RequestProgress.objects.filter(pk=request.pk).update(flow_run_generation=generation)
    enqueue_trigger(
        request,
        deployment=deployments.ASSEMBLY_ANALYSIS,
        parameters={"request_id": request.pk},
        generation=generation,
    )
    _record_recovery(request.pk, reason)
    logger.warning("Request %s: new flow run (generation %d): %s", request.pk, generation, reason)


# Recovered this many times in a row, a request is stuck: /readyz names it, and its requester is told.
STUCK_AFTER_RECOVERIES = 3


def _record_recovery(request_id: int, reason: str) -> None:
    RequestProgress.objects.get_or_create(request_id=request_id)
    RequestProgress.objects.filter(pk=request_id).update(
        recoveries=F("recoveries") + 1,
        total_recoveries=F("total_recoveries") + 1,
        last_recovery_at=timezone.now(),
        last_recovery=reason[:2000],
    )
    if RequestProgress.objects.filter(pk=request_id, recoveries__gte=STUCK_AFTER_RECOVERIES).exists():
        notify_requester(request_id, Notification.Event.STUCK)


class NothingToRetry(Conflict):
    """The request is not finished, was cancelled, or no step of it failed."""

    code = "nothing_to_retry"


def retry_failed_runs(request_id: int) -> list[str]:
    """Run again the failed steps of a finished request (a new generation of its plan) in a new flow run.

    Completed steps are reused, so a run whose assembly failed starts again at its assembly. Returns the runs
    retried. Runs that data QA turned away are not retried: their data, not a job, was the problem.
    """
    with transaction.atomic():
        request = AssemblyAnalysisRequest.objects.select_for_update().get(pk=request_id)
        if request.status not in (Status.COMPLETED, Status.FAILED):
            raise NothingToRetry(
                f"Request {request_id} is {request.status}: only a finished request is retried."
            )
        plan = current_plan(request)
        if plan is None:
            raise NothingToRetry(f"Request {request_id} has no plan: nothing of it ever ran.")
        # One active request per study and requester (the POST's rule, and the database's constraint).
        if not request.forced and (other := active_request(request.study_accession, request.requester)):
            raise ActiveRequestExists(other)
        ledger = build_jobs_service().ledger
        steps = list(plan.steps.all())
        attempts = ledger.attempts({step.key for step in steps})
        # A run that failed inside a batch is retried as any failed step: its history is its batch's.
        with_member_histories(request_id, steps, attempts, ledger.attempts)
        _, retried = supersede_for_retry(plan, attempts)
        if not retried:
            raise NothingToRetry(f"No step of request {request_id} failed.")
        runs = sorted({step.run_accession for step in retried})
        try:
            with transaction.atomic():
                record_request_state(
                    request_id,
                    status=Status.PENDING,
                    detail=f"Retrying the failed steps of {', '.join(runs)}.",
                    # A new round: its end is told to the requester again (analyses.models.Notification).
                    metadata={"retries": request.retries + 1},
                )
        except IntegrityError:
            # A request for the study was created since the check above.
            other = active_request(request.study_accession, request.requester)
            if other is None:
                raise
            raise ActiveRequestExists(other) from None
        progress, _ = RequestProgress.objects.get_or_create(request_id=request_id)
        progress.flow_run_generation += 1
        # Finished again, its runs' directories are looked at again (those retried are kept until they succeed).
        progress.work_cleaned_at = None
        progress.save(update_fields=["flow_run_generation", "work_cleaned_at"])
        enqueue_trigger(
            request,
            deployment=deployments.ASSEMBLY_ANALYSIS,
            parameters={"request_id": request_id},
            generation=progress.flow_run_generation,
        )
    logger.info("Request %s: retrying %s", request_id, runs)
    return runs
