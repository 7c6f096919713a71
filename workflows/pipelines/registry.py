"""The flows `serve_flows` serves, by deployment: each pipeline's flow lives in its own package."""

from typing import Any

from prefect import Flow

from workflows.django_env import ensure_django

ensure_django()

from workflows.outbox import deployments
from workflows.pipelines.assembly.flow import assemble_and_analyse_study
from workflows.pipelines.study_sync.flow import sync_study_with_ena

FLOWS: dict[str, tuple[Flow[..., Any], str]] = {
    deployments.ASSEMBLY_ANALYSIS: (assemble_and_analyse_study, deployments.ASSEMBLY_ANALYSIS_DEPLOYMENT),
    deployments.STUDY_SYNC: (sync_study_with_ena, deployments.STUDY_SYNC_DEPLOYMENT),
}
