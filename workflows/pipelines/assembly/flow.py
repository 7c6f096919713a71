"""The assembly flow: one reconciler pass (or a few, for short jobs), then suspend until the poller resumes it."""

from workflows.django_env import ensure_django

ensure_django()

from typing import Any

from django.conf import settings
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.runtime import flow_run as current_flow_run

from emgapi.log_format import request_context
from prefect_utils.slurm_flow import suspend_while_jobs_run
from workflows.orchestration.cluster import build_jobs_service
from workflows.orchestration.reconciler import reconcile
from workflows.orchestration.recovery import carry_out_cancellation
from workflows.outbox import deployments
from workflows.pipelines.assembly.pipeline import ASSEMBLY
from workflows.selectors import request_jobs


def _on_cancelled(flow, flow_run: FlowRun, state: State) -> None:
    """Cancel in the Prefect UI while a pass runs: cancel the request; its jobs are scancelled with it."""
    from analyses.models import AssemblyAnalysisRequest
    from analyses.services import RequestAlreadyFinished, cancel_assembly_analysis_request

    request_id = (flow_run.parameters or {}).get("request_id")
    if request_id is None:
        return
    request = AssemblyAnalysisRequest.objects.get(pk=request_id)
    try:
        cancel_assembly_analysis_request(request, by=None, reason="Flow run cancelled in Prefect.")
    except RequestAlreadyFinished:
        carry_out_cancellation(request.pk)


def jobs_table(request_id: int) -> list[dict[str, str]]:
    rows = []
    for job in request_jobs(request_id):
        rows.append(
            {
                "step": job.step or job.name,
                "run": job.run or "",
                "attempt": str(job.attempt),
                "slurm job": job.slurm_job_id or "",
                "state": job.state + (" (stale)" if job.state_stale else ""),
                "exit code": "" if job.exit_code is None else str(job.exit_code),
                "log": job.spec.get("output_path") or "",
            }
        )
    return rows


@flow(
    name=deployments.ASSEMBLY_ANALYSIS_FLOW,
    description="Fetch an ENA study, check its runs, then QC, assemble and analyse each run as Slurm jobs.",
    on_cancellation=[_on_cancelled],
)
def assemble_and_analyse_study(request_id: int, environment: str | None = None) -> dict[str, Any]:
    """A reconciler: each run of this flow (first, resumed or rescheduled) moves the request on and exits.

    `environment` is set by the dispatcher; a run without it predates environments and is taken as ours.
    """
    deployments.refuse_other_environment(environment)
    with request_context(request_id):
        return _one_pass(request_id)


def _one_pass(request_id: int) -> dict[str, Any]:
    logger = get_run_logger()
    result = reconcile(
        request_id,
        pipeline=ASSEMBLY,
        jobs=build_jobs_service(),
        flow_run_id=str(current_flow_run.id),
        linger_seconds=settings.WORKFLOWS_LINGER_SECONDS,
        # Another run of this request may be lingering with the lock: wait that out rather than fail.
        lock_wait_seconds=settings.WORKFLOWS_LINGER_SECONDS + 60,
    )
    logger.info("Request %s: %s", request_id, result.summary)
    for accession, reason in result.failed.items():
        logger.warning("Run %s did not go through: %s", accession, reason)
    create_table_artifact(
        key=f"request-{request_id}-cluster-jobs",
        table=jobs_table(request_id),
        description=f"Slurm jobs of assembly-analysis request {request_id}",
    )
    if result.waiting:
        logger.info("Request %s: suspending until one of its Slurm jobs ends", request_id)
        suspend_while_jobs_run()
    return {"status": result.status, "succeeded": result.succeeded, "failed": result.failed}
