"""The flows `serve_flows` serves, by deployment: each pipeline's flow lives in its own package."""

from workflows.django_env import ensure_django

ensure_django()

from typing import Any

from django.conf import settings
from prefect import flow

from analyses.models import Study
from workflows import deployments
from workflows.ena import EnaClient
from workflows.pipelines.assembly.flow import assemble_and_analyse_study
from workflows.study_sync import sync_study


@flow(name=deployments.STUDY_SYNC_FLOW, description="Create or update a study's samples and runs from ENA.")
def sync_study_with_ena(study_id: int, environment: str | None = None) -> dict[str, Any]:
    deployments.refuse_other_environment(environment)
    study = Study.objects.get(pk=study_id)
    result = sync_study(study.ena_accession, EnaClient(settings.ENA_PORTAL_API_URL))
    return {"usable_runs": len(result.usable_run_ids), "rejected": result.rejected}


FLOWS = {
    deployments.ASSEMBLY_ANALYSIS: (assemble_and_analyse_study, deployments.ASSEMBLY_ANALYSIS_DEPLOYMENT),
    deployments.STUDY_SYNC: (sync_study_with_ena, deployments.STUDY_SYNC_DEPLOYMENT),
}
