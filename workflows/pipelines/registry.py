"""The flows of the service, by deployment (each pipeline's flow lives in its own package), and this environment's
deployments of them: served by `serve_flows`, or run by Prefect workers from a process work pool."""

from typing import Any, cast

from django.conf import settings
from prefect import Flow
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Schedule

from workflows.django_env import ensure_django

ensure_django()

from workflows.outbox import deployments
from workflows.pipelines.analysis.flow import assemble_and_analyse_study
from workflows.pipelines.study_sync.flow import sync_study_with_ena

FLOWS: dict[str, tuple[Flow[..., Any], str]] = {
    deployments.ASSEMBLY_ANALYSIS: (assemble_and_analyse_study, deployments.ASSEMBLY_ANALYSIS_DEPLOYMENT),
    deployments.STUDY_SYNC: (sync_study_with_ena, deployments.STUDY_SYNC_DEPLOYMENT),
}


def runner_deployments(*, work_pool: str | None = None) -> list[RunnerDeployment]:
    """This environment's deployment of every flow.

    Without `work_pool`, for `serve_flows` to serve. With it, for `prefect worker start --pool <work_pool>`. The
    entrypoint is the flow's module path, imported by the flow-run process from the repository root (the
    worker's working directory), so workers need this checkout and the service's environment, and no image or
    remote storage.
    """
    pool: dict[str, Any] = (
        {"work_pool_name": work_pool, "job_variables": {"working_dir": str(settings.BASE_DIR)}}
        if work_pool
        else {}
    )
    return [
        # Called outside an event loop, to_deployment returns the deployment (its type says "or a coroutine").
        cast(
            RunnerDeployment,
            flow.to_deployment(
                # A runner that stops pauses its deployments; a new one must resume them or nothing runs.
                name=deployments.served_deployment_name(deployment_name),
                tags=["emgapi", deployments.environment_tag()],
                description=flow.description,
                paused=False,
                # A module path in both modes, so that a deployment re-registered by the other mode (a site moving
                # to workers, or back) is the same record but for its work pool, and in-flight runs follow it.
                entrypoint_type=EntrypointType.MODULE_PATH,
                concurrency_limit=settings.WORKFLOWS_CONCURRENCY_LIMITS.get(full_name),
                schedules=schedules(full_name),
                **pool,
            ),
        )
        for full_name, (flow, deployment_name) in FLOWS.items()
    ]


def schedules(full_name: str) -> list[Schedule]:
    """The study sync's daily re-sync of the studies due (ENA_RESYNC_CRON, in the site's time zone); none else."""
    if full_name != deployments.STUDY_SYNC or not settings.ENA_RESYNC_CRON:
        return []
    return [
        Cron(
            settings.ENA_RESYNC_CRON,
            timezone=settings.TIME_ZONE,
            # No study: the due ones. Its environment, as the dispatcher gives every run of ours.
            parameters={"environment": deployments.environment()},
            slug="ena-resync",
        )
    ]
