"""The study-sync deployment: a study's samples and runs from ENA, each run with the data QA verdict."""

from workflows.django_env import ensure_django

ensure_django()

from typing import Any

from django.conf import settings
from prefect import flow, get_run_logger

from analyses.models import Study
from workflows.ena.client import EnaClient
from workflows.ena.resync import resync_due_studies, sync_and_follow
from workflows.outbox import deployments
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS


@flow(
    name=deployments.STUDY_SYNC_FLOW,
    description="Create or update a study's samples and runs from ENA (without a study: the scheduled re-sync).",
)
def sync_study_with_ena(study_id: int | None = None, environment: str | None = None) -> dict[str, Any]:
    """One study (its first sync, or "sync now"), or, without one, a batch of the studies due (the schedule)."""
    deployments.refuse_other_environment(environment)
    client = EnaClient(settings.ENA_PORTAL_API_URL)
    # The verdict recorded on each run is data QA's: whether some pipeline takes it (its route).
    if study_id is None:
        report = resync_due_studies(client, check_run=STUDY_ANALYSIS.check_run)
        get_run_logger().info(
            "Re-synced %d studies: %d change(s), %d new run(s); %d failed",
            len(report.synced),
            report.changes,
            report.new_runs,
            len(report.failed),
        )
        return {"synced": len(report.synced), "changes": report.changes, "failed": report.failed}
    result = sync_and_follow(Study.objects.get(pk=study_id), client, check_run=STUDY_ANALYSIS.check_run)
    return {"usable_runs": len(result.usable_run_ids), "rejected": result.rejected, "changes": result.changes}
