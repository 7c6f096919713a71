"""A request's plan: proposed once by its pipeline, frozen in the database, read by every later pass."""

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.db import IntegrityError, connection, transaction

from analyses.errors import Unprocessable
from analyses.models import AssemblyAnalysisRequest
from prefect_utils.job_spec import JobSpec
from prefect_utils.keys import job_key
from prefect_utils.ledger import LedgerRecord
from prefect_utils.policy import ResubmitPolicy
from prefect_utils.states import JobState
from workflows.ena.client import EnaReadRun
from workflows.models import Plan, PlanStep
from workflows.pg import is_postgres
from workflows.selectors import current_plan

logger = logging.getLogger(__name__)

# The run accession of a plan's steps that run once per request, for the study, after every run of their
# pipeline has ended: the reconciler evaluates them as a run of their own, last.
STUDY_RUN = "study"

# What became of one pipeline of a run's route, in a finished request's `outcomes`: COMPLETED, "skipped: <why>",
# "failed: <why>" or "not run" (reconciler._outcomes).
COMPLETED = "completed"
SKIPPED = "skipped"


def is_over(outcome: str) -> bool:
    """Whether nothing of the pipeline is left to do or redo: it completed, or its condition skipped it."""
    return outcome == COMPLETED or outcome.startswith(SKIPPED)


class PlanningFailed(Unprocessable):
    """The request cannot be planned (no such study, no usable run): the request is failed, not retried."""

    code = "planning_failed"


@dataclass(frozen=True)
class PlannedStep:
    run_id: int | None
    run_accession: str
    step: str
    spec: JobSpec
    inputs: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    policy: ResubmitPolicy = field(default_factory=ResubmitPolicy)
    pipeline: str = ""
    when: str = ""  # a condition on the run's recorded metrics (workflows/pipelines/conditions.py)
    metrics: tuple[dict[str, Any], ...] = ()  # what its outputs record (workflows/pipelines/metrics.py)
    batch_max_runs: int = 0  # up to this many runs' step in one job (workflows/orchestration/batches.py)


@dataclass(frozen=True)
class PlanProposal:
    steps: list[PlannedStep]
    rejected: dict[str, str]  # run accession -> why data QA turned it away


class Pipeline(Protocol):
    """What the reconciler needs of a pipeline; the pipeline's own package says how it does it."""

    name: str

    @property
    def version(self) -> str:
        """Names what the plan was made from."""

    def check_run(self, run: EnaReadRun) -> str | None:
        """The pipeline's data QA gate: None if it can take the run, otherwise why not."""

    def propose_plan(self, request: AssemblyAnalysisRequest, plan_uid: str) -> PlanProposal:
        """Everything that reads the world (ENA, settings, code): called once per request, then frozen."""

    def step_metrics(self, step: PlanStep) -> dict[str, Any]:
        """The figures the outputs of a completed step record (its frozen `metrics`); raises ValueError naming the
        file that cannot be read."""

    def unmet(self, when: str, metrics: Mapping[str, Any]) -> str | None:
        """None if the condition `when` holds on a run's recorded metrics, otherwise why not (with the figures);
        raises LookupError naming a metric that was never recorded."""

    def ingested(self, request: AssemblyAnalysisRequest) -> set[tuple[str, str]]:
        """(run accession, pipeline) of the analyses already in the archive for this request."""

    def ingest(
        self,
        request: AssemblyAnalysisRequest,
        pipeline_name: str,
        steps: Sequence[PlanStep],
        metrics: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Record the analysis of one run by one pipeline whose steps all completed or were skipped, with the
        metrics they recorded; an upsert, safe to repeat."""

    def settle(self, request: AssemblyAnalysisRequest, outcomes: Mapping[str, Mapping[str, Any]]) -> None:
        """Once the request has finished: what planning set aside for pipelines that did not complete (per run,
        its route's outcomes, see reconciler._outcomes)."""


# A plan at least this large gets the planner's statistics of the steps table refreshed as it is frozen.
ANALYZE_AFTER_STEPS = 1000


def freeze_plan(request: AssemblyAnalysisRequest, pipeline: Pipeline) -> Plan:
    """Ask the pipeline for a plan and write it in one transaction, unless a plan exists already."""
    existing = current_plan(request)
    if existing is not None:
        return existing
    uid = uuid.uuid4().hex
    proposal = pipeline.propose_plan(request, uid)
    try:
        with transaction.atomic():
            plan = Plan.objects.create(
                request=request,
                generation=1,
                pipeline=pipeline.name,
                pipeline_version=pipeline.version,
                uid=uid,
                rejected=proposal.rejected,
            )
            PlanStep.objects.bulk_create(
                PlanStep(
                    plan=plan,
                    run_id=step.run_id,
                    run_accession=step.run_accession,
                    step=step.step,
                    pipeline=step.pipeline,
                    position=position,
                    when=step.when,
                    metrics=list(step.metrics),
                    depends_on=list(step.depends_on),
                    spec=step.spec.canonical(),
                    inputs=step.inputs,
                    policy=step.policy.to_dict(),
                    key=job_key(step.spec, step.inputs),
                    batch_max_runs=step.batch_max_runs,
                )
                for position, step in enumerate(proposal.steps)
            )
    except IntegrityError:
        # Another pass froze a plan first (the request lock makes this rare): theirs is the plan.
        theirs = current_plan(request)
        if theirs is None:
            raise
        return theirs
    _log_rejected(request.pk, proposal.rejected)
    if len(proposal.steps) >= ANALYZE_AFTER_STEPS and is_postgres():
        # Until autovacuum gets to it, the planner knows nothing of these rows, and the job pages of this request
        # joined each job to its step through two index scans intersected: the API jobs page at 20,000 jobs had a
        # p99 of 144 ms before ANALYZE and 83 ms after (bench/scale.py, scenario a). A sample: ~0.1 s.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {PlanStep._meta.db_table}")
    return plan


# Rejected runs logged one by one when a plan is frozen, at most (the plan lists them all).
_REJECTED_LOGGED = 20


def _log_rejected(request_id: int, rejected: Mapping[str, str]) -> None:
    for accession in sorted(rejected)[:_REJECTED_LOGGED]:
        logger.info("Request %s: data QA rejected run %s: %s", request_id, accession, rejected[accession])
    if len(rejected) > _REJECTED_LOGGED:
        logger.info(
            "Request %s: ... and %d more runs rejected by data QA",
            request_id,
            len(rejected) - _REJECTED_LOGGED,
        )


def supersede_for_retry(plan: Plan, attempts: dict[str, list[LedgerRecord]]) -> tuple[Plan, list[PlanStep]]:
    """The next generation of `plan`: the same frozen steps, where each step whose last attempt failed starts a
    new attempt; completed steps are reused as they are. `plan` itself is left as it was.

    Returns the new plan and its steps that will run again.
    """
    with transaction.atomic():
        new_plan = Plan.objects.create(
            request_id=plan.request_id,
            generation=plan.generation + 1,
            pipeline=plan.pipeline,
            pipeline_version=plan.pipeline_version,
            uid=uuid.uuid4().hex,
            rejected=plan.rejected,
        )
        steps, retried = [], []
        for step in plan.steps.all():
            history = [r for r in attempts.get(step.key, []) if r.attempt >= step.first_attempt]
            failed = bool(history) and history[-1].is_terminal and history[-1].state != JobState.COMPLETED
            copy = PlanStep(
                plan=new_plan,
                run_id=step.run_id,
                run_accession=step.run_accession,
                step=step.step,
                pipeline=step.pipeline,
                position=step.position,
                when=step.when,
                metrics=step.metrics,
                depends_on=step.depends_on,
                spec=step.spec,
                inputs=step.inputs,
                policy=step.policy,
                key=step.key,
                first_attempt=history[-1].attempt + 1 if failed else step.first_attempt,
                batch_max_runs=step.batch_max_runs,
            )
            steps.append(copy)
            if failed:
                retried.append(copy)
        PlanStep.objects.bulk_create(steps)
    return new_plan, retried
