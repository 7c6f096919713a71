"""What scenario (b) reads once an N's run is over: the ledger (every job's insertion, submission, Slurm end and the
poll that recorded it), RequestProgress (resumes counted by the service), every request's flow-run state history
in Prefect (its "Resuming" states: one per resume Prefect accepted) and serve_flows' JSON log lines (the sweeps
that resumed requests, the slots granted)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import TYPE_CHECKING

from bench._readings import flow_run_states
from bench._report import say
from bench._scale.limit_figures import CpuMark, Job, Readings, Sample

if TYPE_CHECKING:
    from bench._scale.limit_run import LimitStack

_RESUMED = re.compile(r"resumed=\[([^\]]*)\]")
_RESCHEDULED = re.compile(r"rescheduled=\[([^\]]*)\]")
_GRANTED = re.compile(r"^Capacity: granted (\d+) slot")


def _t(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def read_run(
    stack: LimitStack,
    *,
    creation_seconds: float,
    window: tuple[float, float, float],
    released: list[float],
    not_released: int,
    samples: list[Sample],
    flow_cpu: dict[int, float],
    cpu: tuple[CpuMark, CpuMark],
) -> Readings:
    from django.db.models import Sum

    from analyses.models import AssemblyAnalysisRequest
    from prefect_utils.states import TERMINAL_STATES
    from workflows.models import ClusterJob, RequestProgress

    terminal = {state.value for state in TERMINAL_STATES}
    ids = stack.request_ids
    jobs = []
    for row in (
        ClusterJob.objects.filter(request_id__in=ids).exclude(slurm_job_id__isnull=True).order_by("pk")
    ):
        if row.request_id is None:
            continue
        ended = row.state in terminal
        jobs.append(
            Job(
                request_id=row.request_id,
                claimed=row.created.timestamp(),
                submitted=_t(row.submitted_at),
                ended=_t(row.ended_at) if ended else None,
                recorded=_t(row.state_changed_at) if ended else None,
            )
        )
    requests = list(AssemblyAnalysisRequest.objects.filter(pk__in=ids).order_by("pk"))
    finished = {r.pk: r.updated.timestamp() for r in requests if r.is_terminal}
    progress_resumes = (
        RequestProgress.objects.filter(request_id__in=ids).aggregate(n=Sum("resumes"))["n"] or 0
    )
    generations = RequestProgress.objects.filter(request_id__in=ids, flow_run_generation__gt=1).count()
    if generations:
        say(f"  !! {generations} request(s) got a new flow run: their older runs' resumes are not counted")

    resumes: list[tuple[float, int]] = []
    running: list[tuple[float, int]] = []
    for request in requests:
        for state in flow_run_states(request.flow_run_id) if request.flow_run_id else []:
            if state.name == "Resuming":
                resumes.append((state.timestamp.timestamp(), request.pk))
            elif state.type.value == "RUNNING":
                running.append((state.timestamp.timestamp(), request.pk))

    sweep_resumes: list[tuple[float, list[int]]] = []
    rescheduled: list[tuple[float, list[int]]] = []
    grants: list[tuple[float, int]] = []
    for log in stack.serve_flows_logs:
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            message, at = entry.get("message", ""), datetime.fromisoformat(entry["time"]).timestamp()
            if message.startswith("Sweep: "):
                for pattern, found in ((_RESUMED, sweep_resumes), (_RESCHEDULED, rescheduled)):
                    if (listed := pattern.search(message)) and listed.group(1).strip():
                        found.append((at, [int(x) for x in listed.group(1).split(",")]))
            elif granted := _GRANTED.match(message):
                grants.append((at, int(granted.group(1))))

    release_start, release_end, drain_end = window
    settings = stack.service_settings
    return Readings(
        n=stack.n,
        max_active_jobs=int(settings["SLURM_MAX_ACTIVE_JOBS"]),
        max_flow_processes=int(settings["WORKFLOWS_MAX_FLOW_PROCESSES"]),
        poll_max=float(settings["SLURM_POLL_MAX_SECONDS"]),
        release_every=stack.args.release_every,
        requests=ids,
        creation_seconds=creation_seconds,
        release_start=release_start,
        release_end=release_end,
        drain_end=drain_end,
        released=released,
        not_released=not_released,
        jobs=jobs,
        resumes=sorted(resumes),
        running=sorted(running),
        progress_resumes=progress_resumes,
        sweep_resumes=sweep_resumes,
        rescheduled=rescheduled,
        grants=grants,
        samples=samples,
        flow_cpu=flow_cpu,
        cpu=cpu,
        finished=finished,
    )
