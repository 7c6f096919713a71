"""The few Prefect API calls the web side makes, each with a short timeout and no client-side retries.

A slow or absent Prefect must never hold up a save or an HTTP response: callers treat any error as "try
again later" (the outbox does exactly that).

Prefect is imported where it is called, not with this module: every Django process loads the outbox (its signals
write triggers), and `import prefect` costs ~3 s of CPU that a web worker, a `manage.py` command or a test's child
process that never calls Prefect should not pay.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import StateType
    from prefect.context import SettingsContext

# One open client per thread, process, API URL and timeout. Building a client costs ~50 ms of CPU and deriving
# the settings below ~75 ms: a sweep that calls Prefect once per page and per resume paid that on every call
# (bench/scale.py, scenario c). An open client also keeps its connection and CSRF token between calls.
_clients = threading.local()


@contextmanager
def prefect_client(timeout: float | None = None) -> Iterator[SyncPrefectClient]:
    import prefect.context
    from prefect.settings import PREFECT_API_URL

    timeout = settings.PREFECT_DISPATCH_TIMEOUT_SECONDS if timeout is None else timeout
    api_url = settings.PREFECT_API_URL or PREFECT_API_URL.value() or ""
    key = (os.getpid(), api_url, timeout)
    cache: dict[tuple[int, str, float], tuple[SettingsContext, SyncPrefectClient]] = (
        _clients.__dict__.setdefault("cache", {})
    )
    if key not in cache:
        cache[key] = _open_client(api_url, timeout)
    context, client = cache[key]
    # The settings are entered for each call: the client reads its retry count from them as it sends.
    with prefect.context.SettingsContext(profile=context.profile, settings=context.settings):
        yield client


def _open_client(api_url: str, timeout: float) -> tuple[SettingsContext, SyncPrefectClient]:
    import prefect.context
    from prefect.client.orchestration import get_client

    current = prefect.context.get_settings_context()
    settings_used = current.settings.copy_with_update(
        updates={"client.max_retries": 0, "api.request_timeout": timeout, "api.url": api_url or None}
    )
    context = prefect.context.SettingsContext(profile=current.profile, settings=settings_used)
    with prefect.context.SettingsContext(profile=context.profile, settings=context.settings):
        client = get_client(sync_client=True, httpx_settings={"timeout": timeout})
        client.__enter__()  # open for the thread's life: httpx reconnects after a server restart
    return context, client


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


@dataclass(frozen=True)
class FlowRunState:
    """What recovery reads of a flow run: its state and the parameters that say whose it is."""

    id: str
    state_type: StateType | None
    state_timestamp: datetime | None
    state_message: str
    parameters: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlowRunState:
        from prefect.client.schemas.objects import StateType

        state = data.get("state") or {}
        timestamp = state.get("timestamp")
        return cls(
            id=str(data["id"]),
            state_type=StateType(state["type"]) if state.get("type") else None,
            state_timestamp=datetime.fromisoformat(timestamp) if timestamp else None,
            state_message=state.get("message") or "",
            parameters=data.get("parameters") or {},
        )


# Prefect's server refuses a page larger than this ("Invalid limit: must be less than or equal to 200").
READ_PAGE = 200


def read_flow_runs(flow_run_ids: Iterable[str]) -> dict[str, FlowRunState]:
    """The flow runs that exist among `flow_run_ids`, one API call per 200; a deleted run is simply absent.

    Read as plain JSON: validating Prefect's full FlowRun model costs ~0.3 ms a run, most of a sweep's CPU at
    10,000 unfinished requests (bench/scale.py, scenario c).
    """
    ids = [str(uuid.UUID(str(flow_run_id))) for flow_run_id in flow_run_ids]
    runs: dict[str, FlowRunState] = {}
    if not ids:
        return runs
    with prefect_client(timeout=max(settings.PREFECT_DISPATCH_TIMEOUT_SECONDS, 10)) as client:
        for start in range(0, len(ids), READ_PAGE):
            page = ids[start : start + READ_PAGE]
            response = client.request(
                "POST", "/flow_runs/filter", json={"flow_runs": {"id": {"any_": page}}, "limit": len(page)}
            )
            runs.update((run.id, run) for run in map(FlowRunState.from_json, response.json()))
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
