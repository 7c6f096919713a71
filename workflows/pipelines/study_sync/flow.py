"""The study-sync deployment: a study's samples and runs from ENA, each run with the data QA verdict."""

from workflows.django_env import ensure_django

ensure_django()

from typing import Any

from django.conf import settings
from prefect import flow

from analyses.models import Study
from workflows.ena.client import EnaClient
from workflows.ena.study_sync import sync_study
from workflows.outbox import deployments
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS


@flow(name=deployments.STUDY_SYNC_FLOW, description="Create or update a study's samples and runs from ENA.")
def sync_study_with_ena(study_id: int, environment: str | None = None) -> dict[str, Any]:
    deployments.refuse_other_environment(environment)
    study = Study.objects.get(pk=study_id)
    # The verdict recorded on each run is data QA's: whether some pipeline takes it (its route).
    result = sync_study(
        study.ena_accession, EnaClient(settings.ENA_PORTAL_API_URL), check_run=STUDY_ANALYSIS.check_run
    )
    return {"usable_runs": len(result.usable_run_ids), "rejected": result.rejected}
