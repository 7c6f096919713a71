"""The rows of scenario (c), made directly: N unfinished requests whose flow runs are already PAUSED in Prefect
(a deployment nobody serves, so no flow process ever runs), their places in the capacity queue, and a ledger that
fills the cluster.

Every request is `running` with a flow run (`request_metadata.flow_run_id`, parameter `environment` of this
database), suspended without a timeout as a pass leaves it. A tenth of them (at least 1, at most the cluster's
slots) have jobs RUNNING: `SLURM_MAX_ACTIVE_JOBS` ledger rows, spread over them round-robin, so the cluster is
full. The rest wait for capacity (`capacity_wanted` 2, `capacity_waiting_since` set, never served), as a pass
that found no slot leaves them. Every request's last pass read the ledger after its jobs last changed, so nothing
but a freed slot or an ended job of its own gives it a reason to be resumed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

from bench._report import say

FLOW_NAME = "emgapi-bench-scale-unserved"
DEPLOYMENT_NAME = "scale"


@dataclass
class Population:
    """What `populate` made, and how long Prefect and the database took to make it."""

    requests: int
    waiting: int  # in the capacity queue
    running: int  # with jobs of their own RUNNING
    jobs: int
    prefect_seconds: float
    rows_seconds: float


def populate(n: int, max_active: int, api_url: str, concurrency: int) -> Population:
    """N requests, their PAUSED flow runs on the Prefect server at `api_url` and `max_active` RUNNING jobs."""
    from django.db import transaction
    from django.utils import timezone

    from analyses.models import AssemblyAnalysisRequest
    from workflows.models import ClusterJob, RequestProgress
    from workflows.outbox import deployments

    start = time.perf_counter()
    # bulk_create sends no post_save: no trigger is written, so the sweep finds none awaiting dispatch.
    requests = AssemblyAnalysisRequest.objects.bulk_create(
        AssemblyAnalysisRequest(
            study_accession=f"PRJEB{90_000_000 + i}",
            status=AssemblyAnalysisRequest.Status.RUNNING,
            forced=True,
        )
        for i in range(n)
    )
    rows_seconds = time.perf_counter() - start

    start = time.perf_counter()
    flow_run_ids = asyncio.run(
        _paused_flow_runs(api_url, [r.pk for r in requests], deployments.environment(), concurrency)
    )
    prefect_seconds = time.perf_counter() - start
    say(
        f"  {n} flow runs created and suspended in {prefect_seconds:.1f} s "
        f"({n / prefect_seconds:.0f}/s, {concurrency} at a time)"
    )

    start = time.perf_counter()
    running_count = min(max(1, n // 10), max_active, n)
    running, waiting = requests[:running_count], requests[running_count:]
    now = timezone.now()
    read_at = now - timedelta(minutes=10)
    with transaction.atomic():
        for request in requests:
            request.request_metadata = {"flow_run_id": flow_run_ids[request.pk]}
        AssemblyAnalysisRequest.objects.bulk_update(requests, ["request_metadata"], batch_size=1000)
        RequestProgress.objects.bulk_create(
            [
                RequestProgress(request=r, passes=1, last_read_at=read_at, capacity_served_at=read_at)
                for r in running
            ]
            + [
                RequestProgress(
                    request=r,
                    passes=1,
                    last_read_at=read_at,
                    capacity_wanted=2,
                    # Distinct, so that the queue's order (longest wait first) is the requests' order.
                    capacity_waiting_since=read_at + timedelta(microseconds=i),
                )
                for i, r in enumerate(waiting)
            ],
            batch_size=1000,
        )
        # Fake job ids ("fake-<i>", which no Slurm issues): nothing here polls Slurm or cancels a job, and the
        # stack's shutdown is told not to scancel them (run.ScaleStack.job_ids).
        ClusterJob.objects.bulk_create(
            [
                ClusterJob(
                    key=f"bench-scale-{i:08d}",
                    name=f"bench-scale-{i}",
                    spec={},
                    slurm_job_id=f"fake-{i}",
                    state="RUNNING",
                    slurm_state="RUNNING",
                    state_checked_at=read_at,
                    state_changed_at=read_at - timedelta(minutes=10),
                    # Outside the submit rate's one-minute window: only the cap on active jobs binds.
                    submitted_at=now - timedelta(hours=1),
                    started_at=read_at - timedelta(minutes=10),
                    request=request,
                    flow_run_id=flow_run_ids[request.pk],
                )
                for i, request in ((i, running[i % running_count]) for i in range(max_active))
            ],
            batch_size=1000,
        )
    rows_seconds += time.perf_counter() - start
    return Population(n, len(waiting), running_count, max_active, prefect_seconds, rows_seconds)


async def _paused_flow_runs(
    api_url: str, request_ids: list[int], environment: str, concurrency: int
) -> dict[int, str]:
    """Request id -> the id of its flow run, created on a deployment nobody serves, Suspended with no timeout,
    `concurrency` requests at a time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Suspended

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            flow_id = await client.create_flow_from_name(FLOW_NAME)
            deployment_id = await client.create_deployment(flow_id, DEPLOYMENT_NAME)
            gate = asyncio.Semaphore(concurrency)

            async def one(request_id: int) -> tuple[int, str]:
                async with gate:
                    # One call: the server forces a given initial state (prefect.server.models.flow_runs.
                    # create_flow_run), what test_sweep does with a second call, set_flow_run_state(force=True).
                    flow_run = await client.create_flow_run_from_deployment(
                        deployment_id,
                        parameters={"request_id": request_id, "environment": environment},
                        state=Suspended(timeout_seconds=None),
                    )
                return request_id, str(flow_run.id)

            made = dict(await asyncio.gather(*(one(request_id) for request_id in request_ids)))
            suspended = await client.count_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
    if suspended != len(request_ids):
        raise SystemExit(f"{suspended} of {len(request_ids)} flow runs are PAUSED in Prefect")
    return made


def free_slots(k: int) -> set[int]:
    """Mark k RUNNING jobs COMPLETED now, as a poll records jobs that ended; the requests they belong to."""
    from django.utils import timezone

    from workflows.models import ClusterJob

    ended = list(ClusterJob.objects.filter(state="RUNNING").order_by("pk")[:k])
    now = timezone.now()
    ClusterJob.objects.filter(pk__in=[job.pk for job in ended]).update(
        state="COMPLETED", slurm_state="COMPLETED", exit_code=0, state_changed_at=now, ended_at=now
    )
    return {job.request_id for job in ended if job.request_id is not None}
