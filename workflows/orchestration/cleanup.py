"""Work directories of finished requests, removed once their results are in the archive's store.

A run's directory under JOBS_ROOT holds its reads, intermediate files and logs. Once the request has finished and
every pipeline of the run's route completed (its results moved, with their manifest, by its datamove step) or was
skipped, nothing reads that directory again: the sweep removes it `WORK_DIRECTORY_RETENTION_DAYS` after the
request finished. A run that failed keeps its directory, for a person to read and for a retry, which reuses the
outputs of the steps that completed.
"""

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.db.models.fields.json import KT

from analyses.models import AssemblyAnalysisRequest
from workflows.models import PlanStep, RequestProgress
from workflows.orchestration.plans import is_over
from workflows.selectors import current_plan

logger = logging.getLogger(__name__)

# Requests looked at per sweep: removing a 5,000-run study's directories is a lot of unlinks for one round.
CLEANED_PER_SWEEP = 20
FINISHED = (
    AssemblyAnalysisRequest.Status.COMPLETED,
    AssemblyAnalysisRequest.Status.FAILED,
    AssemblyAnalysisRequest.Status.CANCELLED,
)


def clean_work_directories(now: datetime) -> list[int]:
    """Remove the work directories of the finished requests' runs whose results are all in the store; returns the
    requests looked at (each is looked at once, until a retry finishes it again)."""
    cutoff = now - timedelta(days=settings.WORK_DIRECTORY_RETENTION_DAYS)
    due = list(
        AssemblyAnalysisRequest.objects.filter(status__in=FINISHED, updated__lte=cutoff)
        .filter(Q(progress__isnull=True) | Q(progress__work_cleaned_at__isnull=True))
        .order_by("updated")[:CLEANED_PER_SWEEP]
    )
    for request in due:
        removed = _clean(request)
        if removed:
            logger.info("Request %s: removed the work directories of %d run(s)", request.pk, removed)
        RequestProgress.objects.update_or_create(request_id=request.pk, defaults={"work_cleaned_at": now})
    return [request.pk for request in due]


def _clean(request: AssemblyAnalysisRequest) -> int:
    plan = current_plan(request)
    outcomes = (request.request_metadata or {}).get("outcomes", {})
    if plan is None or not outcomes:
        return 0
    over = {
        run
        for run, outcome in outcomes.items()
        if outcome.get("pipelines") and all(is_over(what) for what in outcome["pipelines"].values())
    }
    # Each run's directory as its jobs were given it (frozen in the plan: JOBS_ROOT may have moved since).
    workdirs = dict(
        PlanStep.objects.filter(plan=plan, run_accession__in=over)
        .order_by()
        .values_list("run_accession", KT("spec__workdir"))
        .distinct()
    )
    removed = 0
    for run in sorted(over):
        workdir = Path(workdirs.get(run, ""))
        if not workdir.is_absolute() or not workdir.is_dir():
            continue
        shutil.rmtree(workdir)
        removed += 1
    return removed
