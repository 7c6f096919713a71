"""What the admin shows of a request's work and the steering it offers, as plain functions.

Nothing here calls Prefect or Slurm: the web thread records intent (a trigger due now, a cancelled status, a new
plan generation) and wakes the service loops, which act.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest, Study
from analyses.services import ActiveRequestExists
from prefect_utils.states import TERMINAL_STATES, JobState
from workflows.models import ClusterJob, Trigger
from workflows.orchestration.recovery import NothingToRetry, retry_failed_runs
from workflows.outbox import deployments
from workflows.outbox.dispatch import enqueue_trigger
from workflows.outbox.wakeup import wake_service_loops
from workflows.selectors import latest_trigger, newest_request_jobs, request_job_counts, request_jobs

if TYPE_CHECKING:  # django-stubs' helper, installed with the type checker only
    from django_stubs_ext import WithAnnotations

    from workflows.selectors import StepAndRun


def prefect_ui_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI (`PREFECT_UI_URL`), or None when there is no run or no UI."""
    if not flow_run_id or not settings.PREFECT_UI_URL:
        return None
    return f"{settings.PREFECT_UI_URL.rstrip('/')}/runs/flow-run/{flow_run_id}"


def trigger_state(trigger: Trigger) -> str:
    """dispatched / pending / failing: a pending trigger that already failed is what an operator looks for."""
    if trigger.status == Trigger.Status.DISPATCHED:
        return "dispatched"
    return f"failing ({trigger.attempts} attempts)" if trigger.attempts else "pending"


def dispatch_now(triggers: QuerySet[Trigger]) -> int:
    """Make pending triggers due at once (their back-off forgotten) and wake the dispatchers; how many."""
    due = triggers.filter(status=Trigger.Status.PENDING).update(next_attempt_at=None)
    if due:
        wake_service_loops()
    return due


def redispatch_trigger(trigger: Trigger) -> str:
    """Send a request's trigger again now if it never reached Prefect; what was done, for the admin's message.

    A trigger that failed stays pending, waiting out its back-off: re-dispatching it makes it due at once. The
    service loop sends it (with its own idempotency key, so never twice); a dispatched one is left alone, as its
    flow run exists and the sweep replaces it if it is lost.
    """
    if trigger.status == Trigger.Status.DISPATCHED:
        return f"trigger {trigger.pk} was dispatched already (flow run {trigger.flow_run_id}): nothing to re-dispatch."
    state = trigger_state(trigger)
    error = f"; last error: {trigger.last_error[:200]}" if trigger.last_error else ""
    dispatch_now(Trigger.objects.filter(pk=trigger.pk))
    return f"trigger {trigger.pk} ({state}{error}) is due now; the service loops were woken to send it."


def redispatch(requests: Iterable[AssemblyAnalysisRequest]) -> list[tuple[bool, str]]:
    """Re-dispatch the latest trigger of each request; (due now?, what happened) per request."""
    results = []
    for request in requests:
        trigger = latest_trigger(request)
        if trigger is None:
            results.append((False, f"Request {request.pk} has no trigger: nothing to re-dispatch."))
        else:
            due = trigger.status == Trigger.Status.PENDING
            results.append((due, f"Request {request.pk}: {redispatch_trigger(trigger)}"))
    return results


def page_actions(request: AssemblyAnalysisRequest, trigger: Trigger | None) -> list[tuple[str, str]]:
    """The admin actions that would do something to this request now, as (action name, button label)."""
    actions = []
    if request.status == AssemblyAnalysisRequest.Status.AWAITING_APPROVAL:
        actions += [("approve_requests", "Approve"), ("reject_requests", "Reject")]
    if not request.is_terminal:
        actions.append(("cancel_requests", "Cancel"))
    if request.status in (
        AssemblyAnalysisRequest.Status.COMPLETED,
        AssemblyAnalysisRequest.Status.FAILED,
    ) and ((request.request_metadata or {}).get("failed_runs")):
        actions.append(("retry_failed_runs", "Retry failed runs"))
    if trigger is not None and trigger.status == Trigger.Status.PENDING and trigger.attempts:
        actions.append(("redispatch", "Re-dispatch"))
    return actions


@dataclass(frozen=True)
class RunOutcome:
    run: str
    outcome: str  # succeeded / failed / rejected by data QA
    reason: str = ""
    route: str = ""  # the first pipeline of the run's route
    pipelines: str = ""  # each pipeline of the route and what became of it


def run_outcomes(
    request: AssemblyAnalysisRequest, rejected: dict[str, str] | None = None
) -> list[RunOutcome]:
    """Per run, as the last finished pass recorded it (with its route and what became of each pipeline of it),
    and the runs data QA turned away when planning."""
    metadata = request.request_metadata or {}
    routes = metadata.get("outcomes", {})

    def outcome(run: str, what: str, reason: str = "") -> RunOutcome:
        route = routes.get(run, {})
        pipelines = "; ".join(f"{name}: {done}" for name, done in route.get("pipelines", {}).items())
        return RunOutcome(run, what, reason, route.get("route", ""), pipelines)

    outcomes = [outcome(run, "succeeded") for run in metadata.get("succeeded_runs", [])]
    outcomes += [outcome(run, "failed", reason) for run, reason in metadata.get("failed_runs", {}).items()]
    outcomes += [RunOutcome(run, "rejected by data QA", reason) for run, reason in (rejected or {}).items()]
    return outcomes


@dataclass(frozen=True)
class JobRow:
    job: ClusterJob
    step: str
    run: str

    @property
    def elapsed(self) -> timedelta | None:
        if self.job.started_at is None:
            return None
        return (self.job.ended_at or timezone.now()) - self.job.started_at


def _job_row(job: "WithAnnotations[ClusterJob, StepAndRun]") -> JobRow:
    # A job outside the plan (adopted, or its plan gone) still shows what its labels say it was.
    return JobRow(job, job.step or job_step(job), job.run or str((job.labels or {}).get("run", "")))


def job_rows(request: AssemblyAnalysisRequest) -> list[JobRow]:
    """The request's Slurm jobs, each with the plan step and run it belongs to: one query."""
    return [_job_row(job) for job in request_jobs(request.pk)]


# What a request's admin page lists of its jobs; the rest are a paginated list a link away.
LAST_JOBS_SHOWN = 50
FAILURES_SHOWN = 20
FAILED_STATES = frozenset(state.value for state in TERMINAL_STATES - {JobState.COMPLETED})


@dataclass(frozen=True)
class JobsOverview:
    """A request's jobs at a glance, whatever their number (a 5,000-run study has 20,000)."""

    counts: dict[str, int]  # jobs (every attempt) by state, the most common first
    last: list[JobRow]  # the newest LAST_JOBS_SHOWN, oldest first: every job of a smaller request
    failures: list[JobRow]  # the newest FAILURES_SHOWN that failed, when `last` is not every job

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return sum(jobs for state, jobs in self.counts.items() if state in FAILED_STATES)


def jobs_overview(request: AssemblyAnalysisRequest) -> JobsOverview:
    """Counts by state, the last jobs and the newest failures: at most three queries, each bounded."""
    counts = request_job_counts(request.pk)
    total = sum(counts.values())
    last = [_job_row(job) for job in newest_request_jobs(request.pk, LAST_JOBS_SHOWN)] if total else []
    # When the last jobs are all of them, the failures are among them already.
    failures = (
        [_job_row(job) for job in newest_request_jobs(request.pk, FAILURES_SHOWN, FAILED_STATES)]
        if total > LAST_JOBS_SHOWN and FAILED_STATES & counts.keys()
        else []
    )
    return JobsOverview(counts, last, failures)


def retry(requests: Iterable[AssemblyAnalysisRequest]) -> list[tuple[bool, str]]:
    """Retry the failed runs of each request; (retried?, what happened) per request, for the admin's messages."""
    results = []
    for request in requests:
        try:
            runs = retry_failed_runs(request.pk)
        except NothingToRetry as exc:
            results.append((False, f"Nothing to retry: {exc}"))
        except ActiveRequestExists as exc:
            results.append((False, f"Not retried: {exc}"))
        else:
            results.append((True, f"Request {request.pk}: retrying the failed steps of {', '.join(runs)}."))
    return results


def format_elapsed(elapsed: timedelta | None) -> str:
    if elapsed is None:
        return ""
    minutes, seconds = divmod(int(elapsed.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def job_step(job: ClusterJob) -> str:
    """The step a job runs, for lists where the plan is not joined: its "step" label when the submitter set one,
    else from its name (`emgapi-<step>-<run>`), which every pipeline job has had since the first ledger row."""
    if step := (job.labels or {}).get("step"):
        return str(step)
    parts = job.name.split("-")
    return parts[1] if len(parts) >= 3 and parts[0] == "emgapi" else job.name


def sync_with_ena(studies: Iterable[Study]) -> int:
    """A study-sync flow run for each study (through the outbox, as a new study gets); how many."""
    count = 0
    for study in studies:
        enqueue_trigger(study, deployment=deployments.STUDY_SYNC, parameters={"study_id": study.pk})
        count += 1
    return count


def deletion_refused(request: AssemblyAnalysisRequest) -> str | None:
    """Why an unfinished request may not be deleted yet (its flow run and Slurm jobs would be orphaned)."""
    if request.is_terminal:
        return None
    return (
        f"Request {request.pk} is {request.status}: cancel it first (its flow run and Slurm jobs stop), then "
        "delete it."
    )
