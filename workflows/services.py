"""Workflow-side operations called by signals, management commands, the admin and the flows."""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from prefect_utils.jobs import PollConfig, SlurmJobs, ThrottleConfig
from prefect_utils.scheduler import SchedulerError, SlurmClient
from workflows import prefect_api
from workflows.ledger import DjangoJobLedger

logger = logging.getLogger(__name__)


def build_jobs_service() -> SlurmJobs:
    return SlurmJobs(
        DjangoJobLedger(),
        SlurmClient(),
        poll=PollConfig(
            min_interval=settings.SLURM_POLL_MIN_SECONDS, max_interval=settings.SLURM_POLL_MAX_SECONDS
        ),
        throttle=ThrottleConfig(
            max_active_jobs=settings.SLURM_MAX_ACTIVE_JOBS,
            submits_per_minute=settings.SLURM_SUBMIT_RATE_PER_MINUTE,
        ),
    )


def stop_request_workflow(request_id: int) -> list[str]:
    """Cancel the request's flow run in Prefect and scancel its jobs; each part works without the other."""
    request = AssemblyAnalysisRequest.objects.get(pk=request_id)
    if request.flow_run_id:
        try:
            prefect_api.cancel_flow_run(request.flow_run_id)
        except (
            Exception
        ) as exc:  # Prefect down: the jobs are still cancelled below, which is what costs money
            logger.warning("Could not cancel flow run %s in Prefect: %s", request.flow_run_id, exc)
    try:
        cancelled = build_jobs_service().cancel(labels={"request_id": request.pk}, reason="request cancelled")
    except SchedulerError as exc:
        logger.error("Could not scancel the jobs of request %s: %s", request.pk, exc)
        return []
    logger.info("Request %s cancelled; scancelled jobs %s", request.pk, cancelled)
    return cancelled


def record_heartbeat(request_id: int) -> None:
    update_metadata(request_id, heartbeat_at=timezone.now().isoformat())


def update_metadata(request_id: int, **values) -> None:
    """Merge into request_metadata under a row lock: the flow, its heartbeat and the dispatcher all write it."""
    with transaction.atomic():
        request = AssemblyAnalysisRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is not None:
            request.request_metadata = {**request.request_metadata, **values}
            request.save(update_fields=["request_metadata", "updated"])


def reattach_flows(*, zombie_after: timedelta | None = None, max_reschedules: int | None = None) -> list[int]:
    """Put back in Prefect's queue every flow run that died while its request was still in progress.

    Dead means Prefect says CRASHED, or the run says RUNNING but its process stopped beating. The rerun
    starts from the top: finished steps are cache or ledger hits, running jobs are reattached.
    """
    from prefect.client.schemas.objects import StateType

    zombie_after = zombie_after or timedelta(seconds=settings.WORKFLOWS_ZOMBIE_AFTER_SECONDS)
    max_reschedules = settings.WORKFLOWS_MAX_RESCHEDULES if max_reschedules is None else max_reschedules
    rescheduled = []
    in_progress = AssemblyAnalysisRequest.objects.filter(
        status__in=[AssemblyAnalysisRequest.Status.PENDING, AssemblyAnalysisRequest.Status.RUNNING]
    ).exclude(request_metadata__flow_run_id=None)
    for request in in_progress:
        if not request.flow_run_id:
            continue
        try:
            flow_run = prefect_api.read_flow_run(request.flow_run_id)
        except Exception as exc:  # one unreadable run (deleted in the UI, say) must not block the others
            logger.warning("Request %s: cannot read flow run %s: %s", request.pk, request.flow_run_id, exc)
            continue
        state = flow_run.state.type if flow_run.state else None
        # Alive means a heartbeat, or entering RUNNING, within `zombie_after`.
        signs_of_life = [flow_run.state.timestamp] if flow_run.state else []
        if request.request_metadata.get("heartbeat_at"):
            signs_of_life.append(datetime.fromisoformat(request.request_metadata["heartbeat_at"]))
        silent = not signs_of_life or timezone.now() - max(signs_of_life) > zombie_after
        if state == StateType.CRASHED or (state == StateType.RUNNING and silent):
            count = int(request.request_metadata.get("reschedules", 0))
            if count >= max_reschedules:
                AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(
                    status=AssemblyAnalysisRequest.Status.FAILED,
                    status_detail=f"Flow run {request.flow_run_id} crashed {count + 1} times; giving up.",
                )
                continue
            reason = f"rescheduled by emgapi after the run was found {'crashed' if state == StateType.CRASHED else 'silent'}"
            prefect_api.reschedule_flow_run(request.flow_run_id, reason)
            update_metadata(request.pk, reschedules=count + 1, heartbeat_at=None)
            logger.warning("Request %s: flow run %s %s", request.pk, request.flow_run_id, reason)
            rescheduled.append(request.pk)
    return rescheduled
