"""What the flows do to the database, as plain functions: the flows stay orchestration, tests call these."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from analyses.models import Analysis, Assembly, AssemblyAnalysisRequest, ProcessingStatus, Run, Study
from workflows.ena import EnaClient
from workflows.models import ClusterJob
from workflows.pipeline import PipelineConfig, RunInputs, read_assembly_stats, run_layout
from workflows.services import record_heartbeat
from workflows.study_sync import SyncResult, run_inputs, sync_study

Status = AssemblyAnalysisRequest.Status
PIPELINE_VERSION = "1.0"


def ena_client() -> EnaClient:
    return EnaClient(settings.ENA_PORTAL_API_URL)


def pipeline_config() -> PipelineConfig:
    return PipelineConfig.from_mapping({"partition": settings.SLURM_PARTITION, **settings.PIPELINE_CONFIG})


def start_request(request_id: int, flow_run_id: str) -> bool:
    """Mark the request running; False when it is already finished or cancelled (nothing to do)."""
    with transaction.atomic():
        request = AssemblyAnalysisRequest.objects.select_for_update().get(pk=request_id)
        if request.is_terminal:
            return False
        request.status = Status.RUNNING
        request.request_metadata = {
            **request.request_metadata,
            "flow_run_id": flow_run_id,
            "heartbeat_at": timezone.now().isoformat(),
        }
        request.save(update_fields=["status", "request_metadata", "updated"])
    return True


def sync_request_study(request_id: int) -> SyncResult:
    request = AssemblyAnalysisRequest.objects.get(pk=request_id)
    result = sync_study(request.study_accession, ena_client())
    AssemblyAnalysisRequest.objects.filter(pk=request_id).update(study_id=result.study_id)
    return result


def sync_existing_study(study_id: int) -> SyncResult:
    return sync_study(Study.objects.get(pk=study_id).ena_accession, ena_client())


def inputs_of_run(run_id: int) -> RunInputs:
    return run_inputs(Run.objects.get(pk=run_id))


def run_workdir(request_id: int, run_id: int) -> Path:
    run = Run.objects.get(pk=run_id)
    workdir = Path(settings.JOBS_ROOT) / f"request-{request_id}" / run.accession
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def ingest_assembly(request_id: int, run_id: int, workdir: Path) -> Analysis:
    """Assembly and Analysis rows for a run whose pipeline finished; idempotent for a rerun flow."""
    run = Run.objects.select_related("study").get(pk=run_id)
    layout = run_layout(workdir, run_inputs(run))
    stats = read_assembly_stats(layout.stats_tsv)
    summary = {
        "contigs": stats.contigs,
        "total_length": stats.total_length,
        "n50": stats.n50,
        "largest_contig": stats.largest,
    }
    with transaction.atomic():
        assembly = Assembly.objects.filter(
            study=run.study, runs=run, directory=str(layout.megahit_dir)
        ).first()
        if assembly is None:
            assembly = Assembly.objects.create(study=run.study, directory=str(layout.megahit_dir))
            assembly.runs.add(run)
        assembly.status = ProcessingStatus.COMPLETED
        assembly.save(update_fields=["status", "updated"])
        analysis, _ = Analysis.objects.update_or_create(
            assembly=assembly,
            request_id=request_id,
            defaults={
                "study": run.study,
                "pipeline_version": PIPELINE_VERSION,
                "status": ProcessingStatus.COMPLETED,
                "results_directory": str(workdir),
                "summary": summary,
            },
        )
    return analysis


def finish_request(
    request_id: int, *, succeeded: list[str], failed: dict[str, str]
) -> AssemblyAnalysisRequest:
    """Completed when at least one run went through; the runs that did not are listed with their reasons."""
    with transaction.atomic():
        request = AssemblyAnalysisRequest.objects.select_for_update().get(pk=request_id)
        if request.is_terminal:
            return request
        request.status = Status.COMPLETED if succeeded else Status.FAILED
        request.status_detail = (
            f"{len(succeeded)} run(s) assembled and analysed; {len(failed)} failed."
            if succeeded
            else "No run could be assembled and analysed."
        )
        request.request_metadata = {
            **request.request_metadata,
            "succeeded_runs": succeeded,
            "failed_runs": failed,
        }
        request.save(update_fields=["status", "status_detail", "request_metadata", "updated"])
    return request


def fail_request(request_id: int, detail: str) -> None:
    AssemblyAnalysisRequest.objects.filter(pk=request_id, status__in=[Status.PENDING, Status.RUNNING]).update(
        status=Status.FAILED, status_detail=detail[:5000], updated=timezone.now()
    )


def mark_cancelled(request_id: int, detail: str) -> None:
    AssemblyAnalysisRequest.objects.filter(pk=request_id, status__in=[Status.PENDING, Status.RUNNING]).update(
        status=Status.CANCELLED, status_detail=detail, cancelled_at=timezone.now(), updated=timezone.now()
    )


def request_status(request_id: int) -> str:
    return AssemblyAnalysisRequest.objects.values_list("status", flat=True).get(pk=request_id)


def jobs_table(request_id: int) -> list[dict[str, str]]:
    rows = []
    for job in ClusterJob.objects.filter(request_id=request_id).order_by("created"):
        elapsed = ""
        if job.started_at:
            elapsed = str((job.ended_at or timezone.now()) - job.started_at).split(".")[0]
        rows.append(
            {
                "step": job.name,
                "attempt": str(job.attempt),
                "slurm job": job.slurm_job_id or "",
                "state": job.state + (" (stale)" if job.state_stale else ""),
                "exit code": "" if job.exit_code is None else str(job.exit_code),
                "elapsed": elapsed,
                "log": job.spec.get("output_path") or "",
            }
        )
    return rows


@contextmanager
def heartbeat(request_id: int) -> Iterator[None]:
    """Beat while the flow runs, so the dispatcher can tell a live run from one whose process died."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(settings.WORKFLOWS_HEARTBEAT_SECONDS):
                close_old_connections()
                record_heartbeat(request_id)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{request_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
