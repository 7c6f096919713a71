"""The workflow layer's reads that apply a rule: a request's jobs, its trigger, its plan, the triggers due.

Services push (writes live in their rooms); selectors pull. Every page, flow and API view that lists a request's
jobs reads them here, so they agree on the order and on the step and run each job belongs to.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, TypedDict

from django.db.models import Count, Model, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from workflows.models import ClusterJob, Plan, PlanStep, StepBatch, Trigger

if TYPE_CHECKING:  # django-stubs' helper, installed with the type checker only
    from django_stubs_ext import WithAnnotations


class StepAndRun(TypedDict):
    """What `jobs_with_step_and_run` adds to each job: its plan step and run (None outside the plan)."""

    step: str | None
    run: str | None


def source_label(obj: Model) -> str:
    """What a trigger records as its source: `<app>.<model>:<pk>`."""
    return source_label_of(type(obj), obj.pk)


def source_label_of(model: type[Model], pk: object) -> str:
    """`source_label` of the row `pk` of `model`, without the row."""
    return f"{model._meta.label_lower}:{pk}"


def jobs_with_step_and_run() -> QuerySet[WithAnnotations[ClusterJob, StepAndRun]]:
    """Every job, oldest first (the id breaks ties: a total order, along `cluster_job_order_idx`), annotated with
    the plan step and run it belongs to, in the query that lists them."""
    # The newest plan's step first; ordered by the plan alone, not by PlanStep's default order, which joins the
    # request to sort by its creation for every job of the page.
    step = PlanStep.objects.filter(plan__request=OuterRef("request_id"), key=OuterRef("key")).order_by(
        "-plan__generation"
    )
    # A batch's job is no plan step's: its step and its runs are the batch's.
    batch = StepBatch.objects.filter(key=OuterRef("key"))
    return ClusterJob.objects.annotate(
        step=Coalesce(Subquery(step.values("step")[:1]), Subquery(batch.values("step")[:1])),
        run=Coalesce(Subquery(step.values("run_accession")[:1]), Subquery(batch.values("label")[:1])),
    ).order_by("created", "attempt", "id")


def request_jobs(request_id: int) -> QuerySet[WithAnnotations[ClusterJob, StepAndRun]]:
    """A request's jobs, every attempt, oldest first, each with its step and run (`step`, `run`; None when the
    job is outside the plan: adopted, or its plan gone)."""
    return jobs_with_step_and_run().filter(request_id=request_id)


def request_job_counts(request_id: int) -> dict[str, int]:
    """How many of a request's jobs (every attempt) are in each state, the most common first: one GROUP BY."""
    counts = (
        ClusterJob.objects.filter(request_id=request_id)
        .values_list("state")
        .annotate(jobs=Count("pk"))
        .order_by("-jobs", "state")
    )
    return dict(counts)


def newest_request_jobs(
    request_id: int, limit: int, states: Collection[str] | None = None
) -> list[WithAnnotations[ClusterJob, StepAndRun]]:
    """The newest `limit` of a request's jobs (of `states`, if given), oldest first as `request_jobs` orders
    them: read backwards along the request's index, so the cost does not grow with the request's jobs."""
    jobs = request_jobs(request_id)
    if states is not None:
        jobs = jobs.filter(state__in=states)
    return list(reversed(jobs.order_by("-created", "-attempt", "-id")[:limit]))


def latest_trigger(request: AssemblyAnalysisRequest) -> Trigger | None:
    return Trigger.objects.filter(source=source_label(request)).order_by("-created").first()


def due_triggers() -> QuerySet[Trigger]:
    """Pending triggers whose back-off has passed."""
    return Trigger.objects.filter(status=Trigger.Status.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
    )


def current_plan(request: AssemblyAnalysisRequest) -> Plan | None:
    """The request's newest plan generation: the one its passes read."""
    return Plan.objects.filter(request=request).order_by("-generation").first()
