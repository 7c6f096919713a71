"""Where each request of bench/chaos.py is when a kill comes: its flow run's state in Prefect and, for a running
one, what the plan and the ledger say it is doing."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from bench._readings import flow_runs

PHASES = (
    "undispatched",
    "scheduled",
    "pending",
    "planning",
    "submission",
    "pass",
    "lingering",
    "ingest",
    "suspended",
    "resuming",
    "finishing",
)


def request_phases(request_ids: list[int]) -> dict[int, str]:
    """Where each request is: its flow run's state, and for a running one the plan and ledger. A finished
    request whose flow run is not final yet (its process was writing the end of the run) is "finishing"."""
    from prefect.client.schemas.objects import StateType

    from analyses.models import Analysis, AssemblyAnalysisRequest
    from workflows.models import ClusterJob, PlanStep

    requests = list(AssemblyAnalysisRequest.objects.filter(pk__in=request_ids))
    runs = flow_runs(r.flow_run_id for r in requests if r.flow_run_id)
    finished = [r for r in requests if r.is_terminal]
    requests = [r for r in requests if not r.is_terminal]
    phases = {
        r.pk: "finishing"
        for r in finished
        if r.flow_run_id
        and (run_ := runs.get(r.flow_run_id)) is not None
        and run_.state is not None
        and not run_.state.is_final()
    }
    if not requests:
        return phases
    steps = defaultdict(list)
    for step in PlanStep.objects.filter(plan__request__in=requests).values(
        "plan__request_id", "key", "run_id"
    ):
        steps[step["plan__request_id"]].append(step)
    jobs = defaultdict(list)
    for job in (
        ClusterJob.objects.filter(request__in=requests)
        .order_by("pk")
        .values("request_id", "key", "slurm_job_id", "state")
    ):
        jobs[job["request_id"]].append(job)
    analysed = set(
        Analysis.objects.filter(request__in=requests, status="completed").values_list("request_id", "run_id")
    )
    for request in requests:
        flow_run = runs.get(request.flow_run_id) if request.flow_run_id else None
        if flow_run is None or flow_run.state is None:
            phases[request.pk] = "undispatched"
            continue
        state = flow_run.state
        if state.type == StateType.PAUSED:
            phase = "suspended"
        elif state.type == StateType.SCHEDULED:
            phase = "resuming" if state.name == "Resuming" else "scheduled"
        elif state.type == StateType.PENDING:
            phase = "pending"
        elif state.type == StateType.RUNNING:
            phase = _running_phase(request.pk, steps[request.pk], jobs[request.pk], analysed)
        else:
            phase = (state.name or state.type.value).lower()
        phases[request.pk] = phase
    return phases


def _running_phase(
    request_id: int, steps: Sequence[Mapping[str, Any]], jobs: Sequence[Mapping[str, Any]], analysed: set
) -> str:
    """What a running flow run of the request is doing, from the plan and the ledger."""
    if not steps:
        return "planning"
    if any(job["slurm_job_id"] is None and job["state"] == "NEW" for job in jobs):
        return "submission"
    last = {}
    for job in jobs:
        last[job["key"]] = job["state"]  # rows come in insertion order: the latest attempt last
    runs = defaultdict(list)
    for step in steps:
        runs[step["run_id"]].append(last.get(step["key"]))
    if any(
        states and all(s == "COMPLETED" for s in states) and (request_id, run_id) not in analysed
        for run_id, states in runs.items()
    ):
        return "ingest"
    if any(job["slurm_job_id"] and job["state"] in ("PENDING", "RUNNING") for job in jobs):
        return "lingering"
    return "pass"


def phase_order(counts: Counter) -> list[str]:
    """The phases that have a count, in the order of a request's life (any other after them)."""
    return [p for p in PHASES if counts[p]] + sorted(p for p in counts if p not in PHASES)
