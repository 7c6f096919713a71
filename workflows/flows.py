"""The Prefect flows, served under the names in `workflows.deployments` (see `manage.py serve_flows`)."""

from workflows.django_env import ensure_django

ensure_django()

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.schemas.objects import FlowRun, State
from prefect.runtime import flow_run as current_flow_run

from prefect_utils import slurm_flow
from prefect_utils.jobs import Resubmit, ResubmitPolicy
from workflows import deployments, request_steps
from workflows.ena import EnaStudyNotFound, EnaUnavailable
from workflows.pipeline import STEPS, build_step_spec
from workflows.services import build_jobs_service
from workflows.study_sync import SyncResult

slurm_flow.configure(build_jobs_service)

# OOM and TIMEOUT get a second, bigger attempt; anything else failing is a real failure to report.
STEP_POLICY = ResubmitPolicy(mode=Resubmit.IF_FAILED, max_attempts=2, factor=2.0)


@task(name="sync-study-from-ena", retries=2, retry_delay_seconds=10)
def sync_request_study(request_id: int) -> SyncResult:
    return request_steps.sync_request_study(request_id)


@task(name="ingest-assembly")
def ingest_assembly(request_id: int, run_id: int, workdir: str) -> dict[str, Any]:
    return request_steps.ingest_assembly(request_id, run_id, workdir).summary


def _artifact_key(request_id: int, what: str) -> str:
    return f"request-{request_id}-{what}"


def _publish_jobs_table(request_id: int) -> None:
    create_table_artifact(
        key=_artifact_key(request_id, "cluster-jobs"),
        table=request_steps.jobs_table(request_id),
        description=f"Slurm jobs of assembly-analysis request {request_id}",
    )


def _request_id_of(flow_run: FlowRun) -> int | None:
    value = (flow_run.parameters or {}).get("request_id")
    return int(value) if value is not None else None


def _on_cancelled(flow, flow_run: FlowRun, state: State) -> None:
    cancelled = slurm_flow.cancel_flow_run_jobs(str(flow_run.id), reason="flow run cancelled")
    request_id = _request_id_of(flow_run)
    if request_id is not None:
        request_steps.mark_cancelled(
            request_id, f"Flow run cancelled; Slurm jobs cancelled: {cancelled or 'none'}."
        )


def _on_failed(flow, flow_run: FlowRun, state: State) -> None:
    request_id = _request_id_of(flow_run)
    if request_id is not None:
        request_steps.fail_request(request_id, state.message or "The flow run failed.")


@flow(
    name=deployments.ASSEMBLY_ANALYSIS_FLOW,
    description="Fetch an ENA study, check its runs, then QC, assemble and analyse each run as Slurm jobs.",
    on_cancellation=[_on_cancelled],
    on_failure=[_on_failed],
)
def assemble_and_analyse_study(request_id: int) -> dict[str, Any]:
    logger = get_run_logger()
    if not request_steps.start_request(request_id, str(current_flow_run.id)):
        logger.info(
            "Request %s is already %s: nothing to do", request_id, request_steps.request_status(request_id)
        )
        return {"skipped": True}
    with request_steps.heartbeat(request_id):
        try:
            sync = sync_request_study(request_id)
        except (EnaStudyNotFound, EnaUnavailable) as exc:
            request_steps.fail_request(request_id, str(exc))
            raise
        failed: dict[str, str] = dict(sync.rejected)
        for accession, reason in sync.rejected.items():
            logger.warning("Run %s skipped by data QA: %s", accession, reason)
        if not sync.usable_run_ids:
            detail = "No usable run in the study: " + "; ".join(f"{a}: {r}" for a, r in failed.items())
            request_steps.fail_request(request_id, detail)
            raise ValueError(detail)

        progress = create_progress_artifact(
            progress=0.0, key=_artifact_key(request_id, "progress"), description="Runs finished"
        )
        config = request_steps.pipeline_config()
        chains = {}
        for run_id in sync.usable_run_ids:
            inputs = request_steps.inputs_of_run(run_id)
            workdir = request_steps.run_workdir(request_id, run_id)
            futures, previous = [], None
            for step in STEPS:
                spec = build_step_spec(step, inputs, workdir, config)
                previous = slurm_flow.run_job.submit(
                    spec,
                    policy=STEP_POLICY,
                    labels={"request_id": request_id},
                    wait_for=[previous] if previous is not None else None,
                )
                futures.append(previous)
            chains[run_id] = (inputs.run_accession, workdir, futures)

        succeeded: list[str] = []
        for done, (run_id, (accession, workdir, futures)) in enumerate(chains.items(), start=1):
            error = None
            for future in futures:
                future.wait()
                if not future.state.is_completed():
                    error = error or future.state.message or f"{future.state.name}"
                    try:
                        future.result()
                    except Exception as exc:  # the first failing step's error is the one to report
                        error = str(exc)
                    break
            if error is None:
                summary = ingest_assembly(request_id, run_id, str(workdir))
                logger.info("Run %s assembled: %s", accession, summary)
                succeeded.append(accession)
            else:
                logger.error("Run %s failed: %s", accession, error)
                failed[accession] = error
            update_progress_artifact(progress, progress=100.0 * done / len(chains))
            _publish_jobs_table(request_id)

        request = request_steps.finish_request(request_id, succeeded=succeeded, failed=failed)
        return {"status": request.status, "succeeded": succeeded, "failed": failed}


@flow(name=deployments.STUDY_SYNC_FLOW, description="Create or update a study's samples and runs from ENA.")
def sync_study_with_ena(study_id: int) -> dict[str, Any]:
    result = request_steps.sync_existing_study(study_id)
    return {"usable_runs": len(result.usable_run_ids), "rejected": result.rejected}


FLOWS = {
    deployments.ASSEMBLY_ANALYSIS: (assemble_and_analyse_study, deployments.ASSEMBLY_ANALYSIS_DEPLOYMENT),
    deployments.STUDY_SYNC: (sync_study_with_ena, deployments.STUDY_SYNC_DEPLOYMENT),
}
