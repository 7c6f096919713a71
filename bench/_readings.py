"""What a benchmark on the isolated stack (bench/_stack.py) reads of the service's state: the requests' flow runs
in Prefect and their state histories, the ledger's jobs, and what serve_flows' logs say went wrong. Each reads
through this process's Django and Prefect settings, which `Stack.start` and `fresh_database` point at the stack.
Importing this module changes nothing."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._report import say
from bench._setup import chunks


def flow_run_ids(request_ids: Iterable[int]) -> dict[int, str | None]:
    from analyses.models import AssemblyAnalysisRequest

    rows = AssemblyAnalysisRequest.objects.filter(pk__in=list(request_ids))
    return {row.pk: row.flow_run_id for row in rows}


def flow_runs(ids: Iterable[str]) -> dict[str, Any]:
    """Flow run id -> the flow run Prefect has (ids it does not know are left out)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    uuids = [uuid.UUID(i) for i in ids]
    found = {}
    with get_client(sync_client=True) as client:
        for part in chunks(uuids, 100):
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(part))), limit=len(part)
            )
            found.update({str(r.id): r for r in runs})
    return found


def run_states(request_ids: Iterable[int]) -> Counter[str]:
    """'Suspended', 'Running', ... per request; 'undispatched' while the request has no flow run yet."""
    ids = flow_run_ids(request_ids)
    runs = flow_runs(i for i in ids.values() if i)
    states: Counter[str] = Counter()
    for flow_run_id in ids.values():
        run_ = runs.get(flow_run_id) if flow_run_id else None
        if flow_run_id is None:
            states["undispatched"] += 1
        elif run_ is None or run_.state is None:
            states["missing in Prefect"] += 1
        else:
            states[run_.state.name or run_.state.type.value] += 1
    return states


def flow_run_states(flow_run_id: str, since: datetime | None = None) -> list:
    """The flow run's state history, oldest first (from `since`)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(uuid.UUID(flow_run_id))
    return sorted((s for s in states if since is None or s.timestamp >= since), key=lambda s: s.timestamp)


def ledger_jobs(request_ids: Iterable[int] | None = None) -> list:
    """The ledger's rows that have a Slurm job id (of these requests), oldest first."""
    from workflows.models import ClusterJob

    jobs = ClusterJob.objects.exclude(slurm_job_id__isnull=True)
    if request_ids is not None:
        jobs = jobs.filter(request_id__in=list(request_ids))
    return list(jobs.order_by("pk"))


def log_findings(logs: list[Path]) -> None:
    """The ERROR, WARNING and Traceback lines of serve_flows' logs (all its starts)."""
    if not logs:
        return
    lines = [line for log in logs if log.exists() for line in log.read_text(errors="replace").splitlines()]
    kinds: Counter[str] = Counter()
    errors: list[str] = []
    warnings: list[str] = []
    for line in lines:
        kind = next((k for k in ("Traceback", "CRITICAL", "ERROR", "WARNING") if k in line), None)
        if kind is None:
            continue
        kinds[kind] += 1
        (warnings if kind == "WARNING" else errors).append(line[:240])
    notable = list(dict.fromkeys(errors))[:15] + list(dict.fromkeys(warnings))[:5]
    say()
    say(
        f"serve_flows log{'s' if len(logs) > 1 else ''}: {len(lines)} lines"
        + (f" in {len(logs)} files" if len(logs) > 1 else "")
        + "; "
        + (", ".join(f"{k} {v}" for k, v in kinds.items()) or "no errors")
    )
    for line in notable:
        say(f"  | {line}")
