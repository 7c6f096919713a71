"""The few Prefect API calls the web side makes, each with a short timeout and no client-side retries.

A slow or absent Prefect must never hold up a save or an HTTP response: callers treat any error as "try
again later" (the outbox does exactly that).

Prefect is imported where it is called, not with this module: every Django process loads the outbox (its signals
write triggers), and `import prefect` costs ~3 s of CPU that a web worker, a `manage.py` command or a test's child
process that never calls Prefect should not pay.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings.legacy import Setting


@contextmanager
def prefect_client(timeout: float | None = None) -> Iterator[SyncPrefectClient]:
    from prefect.client.orchestration import get_client
    from prefect.settings import (
        PREFECT_API_REQUEST_TIMEOUT,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    timeout = settings.PREFECT_DISPATCH_TIMEOUT_SECONDS if timeout is None else timeout
    updates: dict[Setting, object] = {PREFECT_CLIENT_MAX_RETRIES: 0, PREFECT_API_REQUEST_TIMEOUT: timeout}
    if settings.PREFECT_API_URL:
        updates[PREFECT_API_URL] = settings.PREFECT_API_URL
    with (
        temporary_settings(updates),
        get_client(sync_client=True, httpx_settings={"timeout": timeout}) as client,
    ):
        yield client


def create_flow_run(
    deployment_name: str,
    parameters: dict,
    *,
    idempotency_key: str,
    name: str | None = None,
    tags: list[str] | None = None,
) -> str:
    """Create (or, for a key already used, return) the flow run; its id. Never the asgiref trap: plain sync."""
    with prefect_client() as client:
        deployment = client.read_deployment_by_name(deployment_name)
        flow_run = client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, idempotency_key=idempotency_key, name=name, tags=tags
        )
    return str(flow_run.id)


def read_flow_run(flow_run_id: str) -> FlowRun:
    with prefect_client() as client:
        return client.read_flow_run(uuid.UUID(str(flow_run_id)))


# Prefect's server refuses a page larger than this ("Invalid limit: must be less than or equal to 200").
READ_PAGE = 200


def read_flow_runs(flow_run_ids: Iterable[str]) -> dict[str, FlowRun]:
    """The flow runs that exist among `flow_run_ids`, one API call per 200; a deleted run is simply absent."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = [uuid.UUID(str(flow_run_id)) for flow_run_id in flow_run_ids]
    runs: dict[str, FlowRun] = {}
    if not ids:
        return runs
    with prefect_client(timeout=max(settings.PREFECT_DISPATCH_TIMEOUT_SECONDS, 10)) as client:
        for start in range(0, len(ids), READ_PAGE):
            page = ids[start : start + READ_PAGE]
            found = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page)
            )
            runs.update((str(run.id), run) for run in found)
    return runs


def cancel_flow_run(flow_run_id: str) -> None:
    """Ask Prefect to cancel; a suspended run goes straight to CANCELLED (no process, so no hook runs)."""
    from prefect.states import Cancelling

    with prefect_client() as client:
        flow_run = client.read_flow_run(uuid.UUID(str(flow_run_id)))
        if flow_run.state is None or not flow_run.state.is_final():
            client.set_flow_run_state(flow_run_id, Cancelling(), force=True)


def resume_flow_run(flow_run_id: str) -> bool:
    """Resume a suspended run; False when it was not suspended (already resumed, running, or finished)."""
    from prefect.client.schemas.responses import SetStateStatus

    with prefect_client() as client:
        result = client.resume_flow_run(uuid.UUID(str(flow_run_id)))
    return result.status == SetStateStatus.ACCEPT


def reschedule_flow_run(flow_run_id: str, reason: str, at: datetime | None = None) -> None:
    """Put a run back in the queue under the same id; its rerun reads the plan and reattaches to its jobs."""
    from prefect.states import Scheduled

    with prefect_client() as client:
        client.set_flow_run_state(
            flow_run_id, Scheduled(scheduled_time=at or datetime.now(UTC), message=reason), force=True
        )


def prefect_healthy() -> dict:
    try:
        with prefect_client(timeout=2) as client:
            client.hello()
    except Exception as exc:  # every failure here means the same thing to an operator: not reachable
        return {"ok": False, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    return {"ok": True}
