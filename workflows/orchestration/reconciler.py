"""A flow pass over one request: make the world match the plan, then say whether there is anything to wait for.

A pass reads the plan and the ledger and then, in order: records the metrics of steps that completed since,
decides the `when:` of steps whose dependencies completed (false: the step and those after it are skipped, an
outcome), submits every step whose dependencies completed and that has no job (through the ledger, in one batch:
idempotent), applies the resubmit policy to failed attempts, ingests each run's analysis by each pipeline whose
steps all completed or were skipped, and finishes the request when nothing is left. Running it twice in
a row changes nothing the second time. It never waits for a job: the flow suspends instead, and the service
poller resumes it when a job ends (see `workflows.orchestration.recovery`).
"""

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from analyses.services import record_request_state
from prefect_utils.ledger import JobSubmission, LedgerRecord
from prefect_utils.policy import ResubmitPolicy, describe_failure
from prefect_utils.states import TERMINAL_STATES, JobState
from prefect_utils.submission import SlurmJobs
from workflows.models import ClusterJob, Plan, PlanStep, RequestProgress, StepOutcome
from workflows.orchestration.approval import hold_reason
from workflows.orchestration.batches import RequestBatches, with_member_histories
from workflows.orchestration.capacity import claim_slots
from workflows.orchestration.plans import COMPLETED, SKIPPED, STUDY_RUN, Pipeline, PlanningFailed, freeze_plan
from workflows.orchestration.request_lock import request_lock

logger = logging.getLogger(__name__)
Status = AssemblyAnalysisRequest.Status


@dataclass
class PassResult:
    request_id: int
    status: str  # the request's status after the pass
    # Jobs are pending or running, or steps wait for cluster capacity, or the request waits for approval.
    waiting: bool
    read_at: datetime
    submitted: list[str] = field(default_factory=list)  # submission keys
    ingested: list[str] = field(default_factory=list)  # run accessions
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        if self.status == Status.AWAITING_APPROVAL:
            return "awaiting approval: no job submitted"
        if not self.waiting:
            return f"{self.status}: {len(self.succeeded)} run(s) succeeded, {len(self.failed)} failed"
        return (
            f"waiting: submitted {len(self.submitted)}, ingested {len(self.ingested)}, "
            f"{len(self.succeeded)} run(s) done, {len(self.failed)} failed"
        )


@dataclass
class _RunState:
    """Where one run's steps stand, computed from the plan and the ledger alone."""

    accession: str
    steps: list[PlanStep]
    to_submit: list[JobSubmission] = field(default_factory=list)
    active: bool = False
    completed: bool = False  # every step completed or was skipped
    failure: str | None = None
    done: set[str] = field(default_factory=set)  # steps that completed
    skipped: dict[str, str] = field(default_factory=dict)  # step -> why (recorded, or decided by this pass)
    newly_skipped: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # `<step>.<metric>` -> value, as recorded
    upcoming: list[PlanStep] = field(default_factory=list)  # batched steps it has yet to become ready for
    held: bool = False  # a step ready, waiting for more runs to fill its batch

    def by_pipeline(self) -> dict[str, list[PlanStep]]:
        """The run's steps by pipeline, in the order of its route."""
        grouped: dict[str, list[PlanStep]] = defaultdict(list)
        for step in sorted(self.steps, key=lambda s: s.position):
            grouped[step.pipeline].append(step)
        return grouped

    def pipelines_over(self) -> dict[str, list[PlanStep]]:
        """The pipelines of this run whose steps all completed or were skipped, and at least one completed."""
        return {
            name: steps
            for name, steps in self.by_pipeline().items()
            if all(s.step in self.done or s.step in self.skipped for s in steps)
            and any(s.step in self.done for s in steps)
        }

    def pipeline_metrics(self, steps: Sequence[PlanStep]) -> dict[str, Any]:
        names = {step.step for step in steps}
        return {
            key.split(".", 1)[1]: value
            for key, value in self.metrics.items()
            if key.split(".", 1)[0] in names
        }


# A lingering flow passes again at most once per this many times its last pass's duration: at 20,000 steps a
# pass takes seconds, and one per job end would cost more than the resume it saves (issue 19).
PASS_PACING = 2.0
LINGER_TICK_SECONDS = 0.5


def reconcile(
    request_id: int,
    *,
    pipeline: Pipeline,
    jobs: SlurmJobs,
    flow_run_id: str = "",
    linger_seconds: float = 0.0,
    linger_max_seconds: float = 0.0,
    lock_wait_seconds: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> PassResult:
    """Passes over the request under its lock, until it finishes or has to wait on Slurm.

    With `linger_seconds`, a request whose jobs keep ending is not suspended: job ends of one request collapse
    into the passes of one process instead of a resume each (see `linger`). The lock is held throughout, so
    recovery sees a lingering run as alive.
    """
    with request_lock(request_id, wait_seconds=lock_wait_seconds):
        return linger(
            lambda: reconcile_once(request_id, pipeline=pipeline, jobs=jobs, flow_run_id=flow_run_id),
            lambda since: has_news(request_id, since),
            linger_seconds=linger_seconds,
            linger_max_seconds=linger_max_seconds or linger_seconds,
            sleep=sleep,
            clock=clock,
        )


def linger(
    pass_once: Callable[[], PassResult],
    news_since: Callable[[datetime], bool],
    *,
    linger_seconds: float,
    linger_max_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> PassResult:
    """One pass, then more while there is news, until `linger_seconds` pass without any (or `linger_max_seconds`
    since the start): the caller suspends after that.

    The ledger is kept fresh by the service poller; each tick asks it (one query) whether something happened since
    the last pass read it. Passes are paced by their own duration (PASS_PACING), so job ends that arrive faster
    than a pass takes are taken together by the next one. The maximum gives the process back to the runner's
    other flow runs now and then (WORKFLOWS_MAX_FLOW_PROCESSES).
    """
    started = clock()
    result = pass_once()
    last_pass_ended = clock()
    next_pass_at = last_pass_ended + PASS_PACING * (last_pass_ended - started)
    # A request awaiting approval waits for a person, not for a job: no news a linger could catch.
    while result.waiting and result.status != Status.AWAITING_APPROVAL:
        now = clock()
        if now - last_pass_ended >= linger_seconds or now - started >= linger_max_seconds:
            break
        sleep(LINGER_TICK_SECONDS)
        if not news_since(result.read_at):
            continue
        if (wait := min(next_pass_at, started + linger_max_seconds) - clock()) > 0:
            sleep(wait)
        pass_started = clock()
        earlier = result
        result = pass_once()
        # The summary of a lingering run counts what all its passes did, not the last one's alone.
        result.submitted = earlier.submitted + result.submitted
        result.ingested = earlier.ingested + result.ingested
        last_pass_ended = clock()
        next_pass_at = last_pass_ended + PASS_PACING * (last_pass_ended - pass_started)
    return result


def has_news(request_id: int, since: datetime) -> bool:
    """Whether a pass of the request has something to do that it had not when it read the ledger at `since`: a job
    of its own ended, it was granted cluster slots, or it was cancelled (one query)."""
    ended = ClusterJob.objects.filter(
        request_id=OuterRef("pk"), state__in=TERMINAL_STATES, state_changed_at__gt=since
    )
    return (
        AssemblyAnalysisRequest.objects.filter(pk=request_id)
        .filter(Q(status=Status.CANCELLED) | Q(progress__capacity_granted_at__gt=since) | Exists(ended))
        .exists()
    )


def reconcile_once(
    request_id: int, *, pipeline: Pipeline, jobs: SlurmJobs, flow_run_id: str = ""
) -> PassResult:
    """One pass. The caller holds the request lock (see `reconcile`)."""
    read_at = jobs.ledger.read_point()
    RequestProgress.objects.get_or_create(request_id=request_id)
    RequestProgress.objects.filter(pk=request_id).update(
        passes=F("passes") + 1, last_pass_started_at=read_at, last_read_at=read_at
    )
    try:
        result = _pass(request_id, pipeline, jobs, flow_run_id, read_at)
    except Exception as exc:
        RequestProgress.objects.filter(pk=request_id).update(
            last_pass_ended_at=timezone.now(), last_outcome=f"error: {type(exc).__name__}: {exc}"[:200]
        )
        raise
    RequestProgress.objects.filter(pk=request_id).update(
        last_pass_ended_at=timezone.now(), last_outcome=result.summary[:200], recoveries=0
    )
    logger.debug("Request %s: %s", request_id, result.summary)
    return result


def _pass(
    request_id: int, pipeline: Pipeline, jobs: SlurmJobs, flow_run_id: str, read_at: datetime
) -> PassResult:
    request = AssemblyAnalysisRequest.objects.get(pk=request_id)
    if request.is_terminal:
        return _stopped(request_id, request.status, read_at)
    if request.status == Status.AWAITING_APPROVAL:
        # Still undecided (a rerun, or a resume that came before the decision): suspend again, with this run's id.
        if flow_run_id:
            record_request_state(
                request_id, metadata={"flow_run_id": flow_run_id}, from_statuses=[request.status]
            )
        return PassResult(request_id, Status.AWAITING_APPROVAL, waiting=True, read_at=read_at)
    _mark_running(request_id, flow_run_id)
    try:
        plan: Plan | None = freeze_plan(request, pipeline)
    except PlanningFailed as exc:
        _finish(request_id, Status.FAILED, str(exc), succeeded=[], failed={})
        plan = None
    # The request was read without its row lock, and a first pass plans for as long as ENA takes: a cancellation
    # committed since then stops the pass here, before it submits anything (RUNNING and the finish are written only
    # over an active status, so neither undoes it). One landing later is carried out by the flow before it lets
    # the request lock go (flow.py), or by the sweep.
    status = AssemblyAnalysisRequest.objects.values_list("status", flat=True).get(pk=request_id)
    if plan is None or status not in AssemblyAnalysisRequest.ACTIVE_STATUSES:
        return _stopped(request_id, status, read_at)
    if (hold := hold_reason(request, plan)) is not None:
        record_request_state(
            request_id,
            status=Status.AWAITING_APPROVAL,
            detail=hold,
            from_statuses=[Status.PENDING, Status.RUNNING],
        )
        return PassResult(request_id, Status.AWAITING_APPROVAL, waiting=True, read_at=read_at)

    labels = {"request_id": request_id, **({"flow_run_id": flow_run_id} if flow_run_id else {})}
    steps = plan_steps(plan)
    submitted: list[str] = []
    attempts = jobs.ledger.attempts({step.key for step in steps})
    batches = with_member_histories(request_id, steps, attempts, jobs.ledger.attempts)
    recorded, metric_failures = _record_metrics(request_id, steps, attempts, pipeline)
    # Submitting can end attempts at once (sbatch refusing a spec), which the next evaluation must see: only the
    # keys submitted are read again (anything else that changed since `read_at` is the next pass's news).
    for _ in range(3):
        runs = _evaluate(
            steps, attempts, labels, recorded, metric_failures, unmet=pipeline.unmet, batches=batches
        )
        _record_skips(request_id, runs, recorded)
        # The runs of a batch share its submission.
        wanted = list({s.submission_key: s for run in runs for s in run.to_submit}.values())
        if not wanted:
            break
        # Slots are claimed under the capacity lock (their rows inserted), so concurrent passes never exceed the
        # cap; the request's fair share of them only, while other requests wait (see capacity.py).
        claim = uuid.uuid4().hex
        batch = claim_slots(request_id, wanted, jobs, claim)
        if not batch:
            break
        records = jobs.submit(batch, claim=claim)
        attempts.update(jobs.ledger.attempts({submission.key for submission in batch}))
        batches.member_histories(steps, attempts)
        submitted += [r.submission_key for r in records if r.job_id]
        if any(r.needs_submission for r in records):
            break  # the controller stopped answering mid-batch: the next pass goes on

    ingested_before = pipeline.ingested(request)
    ingested = []
    for run in runs:
        for pipeline_name, pipeline_steps in run.pipelines_over().items():
            if (run.accession, pipeline_name) in ingested_before:
                continue
            summary = pipeline.ingest(
                request, pipeline_name, pipeline_steps, run.pipeline_metrics(pipeline_steps)
            )
            logger.info("Run %s ingested (%s): %s", run.accession, pipeline_name or "pipeline", summary)
            ingested.append(run.accession)

    # The study's steps (a group of their own) are no run: they decide nothing of the request's status.
    succeeded = [run.accession for run in runs if run.completed and run.accession != STUDY_RUN]
    # Runs data QA turned away are the plan's `rejected`, shown as such; `failed` is what went wrong on Slurm.
    failed = {run.accession: run.failure for run in runs if run.failure and not run.active}
    waiting = any(run.active or run.to_submit or run.held for run in runs)
    result = PassResult(request_id, Status.RUNNING, waiting, read_at, submitted, ingested, succeeded, failed)
    if not waiting:
        rejected = f"; {len(plan.rejected)} rejected by data QA" if plan.rejected else ""
        skipped = sum(1 for run in runs if run.skipped)
        skips = f" ({skipped} with a pipeline skipped)" if skipped else ""
        if succeeded:
            detail = f"{len(succeeded)} run(s) analysed{skips}; {len(failed)} failed{rejected}."
        elif any(run.accession != STUDY_RUN for run in runs):
            detail = f"No run could be analysed ({len(failed)} failed{rejected})."
        else:
            detail = "No usable run in the study: " + "; ".join(plan.rejected.values())
        result.status = Status.COMPLETED if succeeded else Status.FAILED
        outcomes = _outcomes(runs)
        pipeline.settle(request, outcomes)
        _finish(request_id, result.status, detail, succeeded=succeeded, failed=failed, outcomes=outcomes)
    return result


# What a pass needs of a step only to submit it: 20,000 steps' worth of JSON decoded per pass was most of a pass
# over a 5,000-run study (bench/scale.py, scenario a), though a pass submits a handful of steps.
_SUBMISSION_FIELDS = ("spec", "inputs", "policy")


def plan_steps(plan: Plan) -> list[PlanStep]:
    """The plan's steps, without what only a submission needs (`_evaluate` reads it for the steps it submits)."""
    return list(plan.steps.defer(*_SUBMISSION_FIELDS))


def _read_submission_fields(steps: Sequence[PlanStep]) -> None:
    """Fill in the deferred spec, inputs and policy of these steps, in one query."""
    deferred = {step.pk: step for step in steps if "spec" in step.get_deferred_fields()}
    if not deferred:
        return
    rows = PlanStep.objects.filter(pk__in=list(deferred)).values_list("pk", *_SUBMISSION_FIELDS)
    for pk, spec, inputs, policy in rows:
        step = deferred[pk]
        step.spec, step.inputs, step.policy = spec, inputs, policy


def _history(step: PlanStep, attempts: dict[str, list[LedgerRecord]]) -> list[LedgerRecord]:
    # Attempts before a step's first_attempt belong to an earlier generation of the plan (see plans.py).
    return [r for r in attempts.get(step.key, []) if r.attempt >= step.first_attempt]


def _record_metrics(
    request_id: int, steps: Sequence[PlanStep], attempts: dict[str, list[LedgerRecord]], pipeline: Pipeline
) -> tuple[dict[tuple[str, str], StepOutcome], dict[str, str]]:
    """The request's recorded outcomes, after recording the metrics of every step that completed since (read
    from its outputs, once), and the runs whose outputs could not be read, with why."""
    outcomes = {(o.run_accession, o.step): o for o in StepOutcome.objects.filter(request_id=request_id)}
    due = [
        step
        for step in steps
        if step.metrics
        and (step.run_accession, step.step) not in outcomes
        and (history := _history(step, attempts))
        and history[-1].state == JobState.COMPLETED
    ]
    _read_submission_fields(due)
    failures: dict[str, str] = {}
    new = []
    for step in due:
        try:
            values = pipeline.step_metrics(step)
        except ValueError as exc:
            failures.setdefault(step.run_accession, f"{step.step}: its metrics could not be read: {exc}")
            continue
        new.append(
            StepOutcome(
                request_id=request_id,
                run_accession=step.run_accession,
                step=step.step,
                pipeline=step.pipeline,
                metrics=values,
            )
        )
    # A concurrent pass may record the same step: the first record stands, and both read the same files.
    StepOutcome.objects.bulk_create(new, ignore_conflicts=True)
    for outcome in new:
        outcomes.setdefault((outcome.run_accession, outcome.step), outcome)
    return outcomes, failures


def _record_skips(
    request_id: int, runs: Sequence[_RunState], outcomes: dict[tuple[str, str], StepOutcome]
) -> None:
    new = [
        StepOutcome(
            request_id=request_id, run_accession=run.accession, step=step, pipeline=pipeline, skipped=why
        )
        for run in runs
        for step, why in run.newly_skipped.items()
        for pipeline in [next(s.pipeline for s in run.steps if s.step == step)]
    ]
    StepOutcome.objects.bulk_create(new, ignore_conflicts=True)
    for outcome in new:
        outcomes.setdefault((outcome.run_accession, outcome.step), outcome)
    for run in runs:
        run.newly_skipped = {}


# Why a condition does not hold on a run's metrics, or None (Pipeline.unmet).
Unmet = Callable[[str, Mapping[str, Any]], str | None]


def _no_conditions(when: str, metrics: Mapping[str, Any]) -> str | None:
    raise ValueError(f"a step has `when: {when}`, but nothing was given to decide it")


def _decide_skips(run: _RunState, completed: set[str], unmet: Unmet) -> None:
    """Steps whose `when:` does not hold on the run's recorded metrics are skipped, and so is every step that
    depends on a skipped one: the decision reads recorded figures only, so a later pass decides the same."""
    for step in sorted(run.steps, key=lambda s: s.position):
        if step.step in completed or step.step in run.skipped:
            continue
        skipped_before = next((d for d in step.depends_on if d in run.skipped), None)
        if skipped_before is not None:
            run.skipped[step.step] = run.newly_skipped[step.step] = run.skipped[skipped_before]
            continue
        if not step.when or not set(step.depends_on) <= completed:
            continue
        try:
            why = unmet(step.when, run.metrics)
        except LookupError as exc:
            run.failure = (
                run.failure or f"{step.step}: cannot decide `when: {step.when}`: {exc} was not recorded"
            )
            continue
        if why is not None:
            run.skipped[step.step] = run.newly_skipped[step.step] = f"{SKIPPED}: {why}"


def _evaluate(
    steps: Sequence[PlanStep],
    attempts: dict[str, list[LedgerRecord]],
    labels: dict,
    outcomes: Mapping[tuple[str, str], StepOutcome] | None = None,
    metric_failures: Mapping[str, str] | None = None,
    *,
    unmet: Unmet | None = None,
    batches: RequestBatches | None = None,
) -> list[_RunState]:
    """Where each run stands and what to submit for it; the steps of the study (`STUDY_RUN`) last, as a run of
    their own whose first steps wait for every run of their pipeline to have ended."""
    outcomes = outcomes or {}
    metric_failures = metric_failures or {}
    unmet = unmet or _no_conditions
    by_run: dict[str, list[PlanStep]] = defaultdict(list)
    for step in steps:
        by_run[step.run_accession].append(step)
    study_steps = by_run.pop(STUDY_RUN, [])
    runs = []
    ready: list[tuple[_RunState, PlanStep, list[LedgerRecord]]] = []
    for accession, run_steps in by_run.items():
        runs.append(_evaluate_run(accession, run_steps, attempts, outcomes, metric_failures, ready, unmet))
    _submissions(ready, labels)
    _batch_submissions(ready, runs, attempts, labels, batches)
    if study_steps:
        ended = _pipelines_ended(runs)
        ready = []
        study = _evaluate_run(
            STUDY_RUN,
            study_steps,
            attempts,
            outcomes,
            metric_failures,
            ready,
            unmet,
            may_start=lambda step: step.pipeline in ended,
        )
        _submissions(ready, labels)
        runs.append(study)
    return runs


def _pipelines_ended(runs: Sequence[_RunState]) -> set[str]:
    """The pipelines none of whose runs has a job running or a step to submit."""
    busy = {step.pipeline for run in runs if run.active or run.to_submit or run.held for step in run.steps}
    return {step.pipeline for run in runs for step in run.steps} - busy


def _evaluate_run(
    accession: str,
    run_steps: list[PlanStep],
    attempts: dict[str, list[LedgerRecord]],
    outcomes: Mapping[tuple[str, str], StepOutcome],
    metric_failures: Mapping[str, str],
    ready: list[tuple[_RunState, PlanStep, list[LedgerRecord]]],
    unmet: Unmet,
    may_start: Callable[[PlanStep], bool] = lambda step: True,
) -> _RunState:
    run = _RunState(accession, run_steps, failure=metric_failures.get(accession))
    histories = {step.step: _history(step, attempts) for step in run_steps}
    completed = {
        name for name, history in histories.items() if history and history[-1].state == JobState.COMPLETED
    }
    run.done = completed
    for step in run_steps:
        outcome = outcomes.get((accession, step.step))
        if outcome is None:
            continue
        if outcome.skipped:
            run.skipped[step.step] = outcome.skipped
        run.metrics.update({f"{step.step}.{name}": value for name, value in outcome.metrics.items()})
    if any(step.when for step in run_steps) or run.skipped:
        _decide_skips(run, completed, unmet)
    over = completed | set(run.skipped)
    for step in run_steps:
        if step.step in over:
            continue
        history = histories[step.step]
        last = history[-1] if history else None
        if last is not None and not last.is_terminal and not last.needs_submission:
            run.active = True
            continue
        # A run whose metrics could not be read, or whose `when:` cannot be decided, goes no further.
        if run.failure is None and set(step.depends_on) <= completed and (step.depends_on or may_start(step)):
            ready.append((run, step, history))
        elif step.batch_max_runs:
            run.upcoming.append(step)
    run.completed = run.failure is None and over == {step.step for step in run_steps}
    return run


def _submissions(ready: list[tuple[_RunState, PlanStep, list[LedgerRecord]]], labels: dict) -> None:
    """What to submit for each ready step that is not batched: its first attempt, an attempt the controller never
    took, or the resubmit policy's next one; a failure the policy does not retry is the run's."""
    _read_submission_fields([step for _, step, _ in ready])
    for run, step, history in ready:
        if step.batch_max_runs:
            continue
        last = history[-1] if history else None
        if last is None or last.needs_submission:
            attempt = last.attempt if last else step.first_attempt
            spec = last.spec if last else step.spec
            run.to_submit.append(JobSubmission(step.key, attempt, spec, step.inputs, labels))
            continue
        next_spec = ResubmitPolicy.from_dict(step.policy).next_spec(history)
        if next_spec is None:
            run.failure = run.failure or describe_failure(last)
            continue
        logger.info("%s of %s: attempt %d after %s", step.step, run.accession, last.attempt + 1, last.state)
        run.to_submit.append(
            JobSubmission(
                step.key, last.attempt + 1, next_spec.canonical(), step.inputs, labels, last.attempt
            )
        )


def _batch_submissions(
    ready: list[tuple[_RunState, PlanStep, list[LedgerRecord]]],
    runs: Sequence[_RunState],
    attempts: Mapping[str, list[LedgerRecord]],
    labels: dict,
    batches: RequestBatches | None,
) -> None:
    """What the ready batched steps need (see batches.py), once the other steps' failures are known: a run that
    failed will never join a batch, so it does not hold one back."""
    batched = [(run, step) for run, step, _ in ready if step.batch_max_runs]
    if not batched:
        return
    if batches is None:
        raise ValueError("batched steps are ready, but the request's batches were not read")
    decisions, unbatched = batches.decide([step for _, step in batched], attempts, labels)
    failed = {run for run, _ in decisions.failures}
    may_still_come: dict[tuple[str, str], int] = defaultdict(int)
    for run in runs:
        if run.failure is None and run.accession not in failed:
            for step in run.upcoming:
                may_still_come[(step.pipeline, step.step)] += 1
    batches.form(unbatched, may_still_come, labels, decisions)
    for run, step in batched:
        member = (run.accession, step.step)
        if member in decisions.submissions:
            run.to_submit.append(decisions.submissions[member])
        elif member in decisions.failures:
            run.failure = run.failure or decisions.failures[member]
        elif member in decisions.held:
            run.held = True


def _outcomes(runs: Sequence[_RunState]) -> dict[str, dict[str, Any]]:
    """Per run: its route (the first pipeline) and what became of each pipeline of it."""
    outcomes = {}
    for run in runs:
        by_pipeline = run.by_pipeline()
        pipelines: dict[str, str] = {}
        for name, steps in by_pipeline.items():
            skipped = [run.skipped[s.step] for s in steps if s.step in run.skipped]
            if all(s.step in run.done for s in steps):
                pipelines[name] = COMPLETED
            elif skipped and all(s.step in run.done or s.step in run.skipped for s in steps):
                pipelines[name] = skipped[0]
            elif run.failure:
                pipelines[name] = f"failed: {run.failure}"
            else:
                pipelines[name] = "not run"
        outcomes[run.accession] = {"route": next(iter(by_pipeline), ""), "pipelines": pipelines}
    return outcomes


def _stopped(request_id: int, status: str, read_at: datetime) -> PassResult:
    """The pass of a request no longer active; a cancelled one's jobs are scancelled now, under the pass's lock."""
    if status == Status.CANCELLED:
        from workflows.orchestration.recovery import carry_out_cancellation

        carry_out_cancellation(request_id, lock_held=True)
    return PassResult(request_id, status, waiting=False, read_at=read_at)


def _mark_running(request_id: int, flow_run_id: str) -> None:
    record_request_state(
        request_id,
        status=Status.RUNNING,
        metadata={"flow_run_id": flow_run_id} if flow_run_id else None,
        # Not over awaiting approval: only a decision moves a request on from there.
        from_statuses=[Status.PENDING, Status.RUNNING],
    )


def _finish(
    request_id: int,
    status: str,
    detail: str,
    *,
    succeeded: list[str],
    failed: dict[str, str],
    outcomes: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Completed when at least one run went through; the runs that did not are listed with their reasons, and
    each run's route with what became of each pipeline of it."""
    record_request_state(
        request_id,
        status=status,
        detail=detail,
        metadata={"succeeded_runs": succeeded, "failed_runs": failed, "outcomes": outcomes or {}},
        from_statuses=AssemblyAnalysisRequest.ACTIVE_STATUSES,
    )
