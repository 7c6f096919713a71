"""Part 2 of scenario (a): the whole service with one request over R runs, and what each job end costs it.

The stack is bench/_stack.py's, isolated as bench/waiting.py runs it: a Prefect server of its own (free port,
database `<study-database>_r<R>_service_prefect`), Django's database `<study-database>_r<R>_service`, the
scenario's ENA stub (its generated study of R runs) and `manage.py serve_flows` in its own process group,
every sbatch of which is held by the client-side filter of a private slurm.conf (bench/_waiting/slurm.py).
serve_flows runs with SERVICE_SETTINGS (stated in the output) and every other setting at its default.

  1. One request over the study (created as the API does; the service dispatches its flow run, which freezes
     the plan, submits the first steps, all held, lingers and suspends). Waited for until its flow run is
     Suspended with no flow process left (`--study-timeout`).
  2. Then, for `--study-release-seconds` (`--study-small-release-seconds` at every R but the largest), one
     held job of the request released (`scontrol release`, the oldest held first) every
     `--study-release-interval` seconds. Released jobs run: a fetch_reads downloads the stub's files in about
     a second, a read_qc runs fastp on them; each end lets the request submit its next step (held too).
  3. Over that window: the CPU of serve_flows and every process under it (utime + stime from /proc of
     serve_flows, of the children it reaped, cutime + cstime, and of those alive at either end: the flow
     processes and the sbatch, squeue and sacct they and the service loop run), read at the window's start and
     end; the job ends the poller recorded in the ledger (state_changed_at in the window); the request's
     passes (RequestProgress.passes); the flow run's Resuming and Running states (Prefect's history); flow
     processes sampled every 0.25 s (alive, distinct pids, their peak RSS: VmHWM). The Prefect server's CPU
     over the window is given apart (it is not the orchestrator's).
  4. What the request's passes left in Prefect: its markdown artifact's versions (one a pass) and their bytes,
     read from the Prefect server's database.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench._procs import descendants, flow_processes, status_field
from bench._readings import flow_run_ids, flow_run_states, log_findings, run_states
from bench._report import say
from bench._setup import database_url, run
from bench._stack import Stack
from bench._waiting.slurm import held_job_works, hold_everything_conf

_TICKS = os.sysconf("SC_CLK_TCK")


def service_settings(args: argparse.Namespace) -> dict[str, str]:
    """What serve_flows runs with besides the stack's addresses; everything else is the settings' default."""
    return {
        "SLURM_MAX_ACTIVE_JOBS": str(args.study_max_active_jobs),
        # Prefect's default, as docker-compose runs serve_flows (scripts/env.sh's 1 would add nine polls a
        # ten seconds to the service's CPU).
        "PREFECT_RUNNER_POLL_FREQUENCY": "10",
    }


@dataclass
class TreeCpu:
    """CPU seconds of a process itself, and of everything under it (reaped or alive)."""

    own: float
    children: float

    @property
    def total(self) -> float:
        return self.own + self.children

    def __sub__(self, other: TreeCpu) -> TreeCpu:
        return TreeCpu(self.own - other.own, self.children - other.children)


def _stat_times(pid: int) -> tuple[float, float]:
    """(utime + stime, cutime + cstime) of `pid` in seconds; zeros once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0, 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS, (int(fields[13]) + int(fields[14])) / _TICKS


def tree_cpu(pid: int) -> TreeCpu:
    """A process's CPU and its descendants': the reaped ones through its cutime/cstime (a reaped child's own
    reaped children included), the live ones (zombies too: not yet reaped) read one by one."""
    own, reaped = _stat_times(pid)
    live = sum(sum(_stat_times(child)) for child in descendants(pid))
    return TreeCpu(own, reaped + live)


@dataclass
class FlowProcesses:
    """serve_flows' flow processes over samples: how many at once, which, and their peak RSS."""

    alive_max: int = 0
    pids: set[int] = field(default_factory=set)
    peak_rss_kb: int = 0

    def sample(self, server_pid: int) -> int:
        alive = flow_processes(server_pid)
        self.alive_max = max(self.alive_max, len(alive))
        self.pids.update(alive)
        for pid in alive:
            self.peak_rss_kb = max(self.peak_rss_kb, status_field(pid, "VmHWM"))
        return len(alive)


@dataclass
class ServiceResult:
    runs: int
    settings: dict[str, str]
    max_flow_processes: int
    suspended_after: float | None  # request created -> flow run Suspended, no flow process
    first_cpu: TreeCpu  # serve_flows and its tree over that
    first_flows: FlowProcesses
    held: int  # held jobs of the request when the window starts
    window: float = 0.0
    released: int = 0
    missed: int = 0  # ticks with no held job to release
    ends: Counter[str] = field(default_factory=Counter)  # recorded in the window, by state
    passes: int = 0
    resuming: int = 0
    running: int = 0
    flows: FlowProcesses = field(default_factory=FlowProcesses)
    cpu: TreeCpu = field(default_factory=lambda: TreeCpu(0.0, 0.0))
    prefect_cpu: float = 0.0
    state_after: str = ""
    artifact_versions: int = 0
    artifact_bytes: int = 0
    artifact_max_bytes: int = 0

    @property
    def ended(self) -> int:
        return sum(self.ends.values())

    @property
    def cpu_per_end(self) -> float | None:
        return self.cpu.total / self.ended if self.ended else None


class StudyService(Stack):
    """The stack of part 2 at one R; `result` once it ran."""

    def __init__(
        self, args: argparse.Namespace, runs: int, accession: str, ena_url: str, window: float, tmp: Path
    ) -> None:
        super().__init__(tmp, f"{args.study_database}_r{runs}_service", service_settings(args))
        self.args = args
        self.runs = runs
        self.accession = accession
        self.ena_url = ena_url
        self.window = window
        self.result: ServiceResult | None = None

    def start(self) -> None:
        """The Prefect server only: the ENA stub is the scenario's, shared by its parts."""
        self.launch_own_prefect()
        self.wait_prefect()

    def run(self) -> bool | None:
        # This process imported Prefect (part 1) before the server existed: its reads go there explicitly.
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self.start()
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            self._run()
        return None

    def _run(self) -> None:
        from bench._scale.run import use_fresh_database

        where = use_fresh_database(self.database)  # sets Django up, the first time
        from django.conf import settings

        from analyses.services import create_assembly_analysis_request

        settings.PREFECT_API_URL = self.api_url  # workflows.outbox.prefect_api, in this process
        say(f"  Prefect server at {self.api_url}; Django database {where}")
        say(f"  serve_flows settings: {describe_settings(self.args)}")
        conf = hold_everything_conf(self.tmp / "slurm")
        held_job_works(conf, self.tmp)
        self.start_serve_flows({"SLURM_CONF": str(conf), "DATABASE_URL": database_url(self.database)})
        server = self.flow_server.pid

        cpu_start = tree_cpu(server)
        created = time.monotonic()
        request_id = create_assembly_analysis_request(study_accession=self.accession, requester=None).pk
        first_flows = FlowProcesses()
        suspended_after = self._wait_suspended(request_id, server, first_flows, created)
        first_cpu = tree_cpu(server) - cpu_start
        held = self._held(request_id)
        result = ServiceResult(
            self.runs,
            dict(self.service_settings),
            settings.WORKFLOWS_MAX_FLOW_PROCESSES,
            suspended_after,
            first_cpu,
            first_flows,
            len(held),
        )
        self.result = result
        say(
            f"  request {request_id}: "
            + (
                f"Suspended {suspended_after:.0f} s after it was created"
                if suspended_after is not None
                else f"NOT Suspended within {self.args.study_timeout:.0f} s ({dict(run_states([request_id]))})"
            )
            + f"; serve_flows CPU meanwhile {first_cpu.total:.1f} s (own {first_cpu.own:.1f}); flow processes "
            f"{len(first_flows.pids)}, peak RSS {first_flows.peak_rss_kb / 1024:.0f} MB; {len(held)} held jobs"
        )
        self._release_window(request_id, server, result)
        self._read_artifacts(request_id, result)
        log_findings(self.serve_flows_logs)

    def _held(self, request_id: int) -> list[str]:
        """The request's held jobs (PENDING in the ledger), oldest first."""
        from workflows.models import ClusterJob

        held = ClusterJob.objects.filter(request_id=request_id, state="PENDING", slurm_job_id__isnull=False)
        return [job_id for job_id in held.order_by("pk").values_list("slurm_job_id", flat=True) if job_id]

    def _wait_suspended(
        self, request_id: int, server: int, flows: FlowProcesses, created: float
    ) -> float | None:
        deadline = created + self.args.study_timeout
        next_look = 0.0
        while time.monotonic() < deadline:
            alive = flows.sample(server)
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + 2
                if not alive and run_states([request_id]).get("Suspended") == 1:
                    return time.monotonic() - created
            time.sleep(0.25)
        return None

    def _release_window(self, request_id: int, server: int, result: ServiceResult) -> None:
        """One held job released every --study-release-interval seconds for the window; the figures over
        it."""
        from django.db import connections

        from prefect_utils.states import TERMINAL_STATES
        from workflows.models import ClusterJob, RequestProgress

        interval = self.args.study_release_interval
        released: set[str] = set()
        passes_before = RequestProgress.objects.get(pk=request_id).passes
        wall_start = datetime.now(UTC)
        cpu_start, prefect_start = tree_cpu(server), tree_cpu(self.prefect_server.pid)
        start = time.monotonic()
        ticks = int(self.window / interval)
        for tick in range(ticks):
            job_id = next((j for j in self._held(request_id) if j not in released), None)
            if job_id is None:
                result.missed += 1
            else:
                run(["scontrol", "release", job_id], check=False)
                released.add(job_id)
            next_at = start + (tick + 1) * interval
            while (left := next_at - time.monotonic()) > 0:
                result.flows.sample(server)
                time.sleep(min(0.25, left))
        result.cpu = tree_cpu(server) - cpu_start
        result.prefect_cpu = (tree_cpu(self.prefect_server.pid) - prefect_start).total
        result.window = time.monotonic() - start
        wall_end = datetime.now(UTC)
        result.released = len(released)
        result.ends = Counter(
            ClusterJob.objects.filter(
                request_id=request_id,
                state__in=[str(state) for state in TERMINAL_STATES],
                state_changed_at__gte=wall_start,
                state_changed_at__lt=wall_end,
            ).values_list("state", flat=True)
        )
        result.passes = RequestProgress.objects.get(pk=request_id).passes - passes_before
        flow_run_id = flow_run_ids([request_id])[request_id]
        states = flow_run_states(flow_run_id, wall_start) if flow_run_id else []
        in_window = [s for s in states if s.timestamp < wall_end]
        result.resuming = sum(1 for s in in_window if s.name == "Resuming")
        result.running = sum(1 for s in in_window if s.type.value == "RUNNING")
        result.state_after = (
            f"{states[-1].name}, {len(flow_processes(server))} flow process(es) alive" if states else "?"
        )
        connections.close_all()
        say(
            f"  {result.window:.0f} s window: {result.released} released ({result.missed} ticks without a held "
            f"job), {result.ended} job ends recorded ({dict(result.ends)}), {result.passes} passes, "
            f"{result.resuming} Resuming / {result.running} Running states; flow processes {len(result.flows.pids)} "
            f"started, at most {result.flows.alive_max} alive, peak RSS {result.flows.peak_rss_kb / 1024:.0f} MB"
        )
        per_end = result.cpu_per_end
        say(
            f"  CPU of serve_flows and its processes: {result.cpu.total:.1f} s (serve_flows itself "
            f"{result.cpu.own:.1f} s, processes under it {result.cpu.children:.1f} s) = "
            + (f"{per_end:.3f} s per job end" if per_end is not None else "no job end")
            + f"; Prefect server {result.prefect_cpu:.1f} s; at the end: {result.state_after}"
        )

    def _read_artifacts(self, request_id: int, result: ServiceResult) -> None:
        """The request's markdown artifact in the Prefect server's database: its versions and their bytes."""
        import psycopg

        from workflows.pipelines.analysis.flow import artifact_key

        key = artifact_key(request_id, "cluster-jobs")
        with psycopg.connect(database_url(self.prefect_db, "postgresql")) as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(octet_length(data::text)), 0), "
                "coalesce(max(octet_length(data::text)), 0) FROM artifact WHERE key = %s",
                [key],
            ).fetchone()
        assert row is not None
        result.artifact_versions, result.artifact_bytes, result.artifact_max_bytes = row
        say(
            f"  artifact {key}: {result.artifact_versions} versions, {result.artifact_bytes:,} bytes in all, "
            f"the largest {result.artifact_max_bytes:,}"
        )

    def shutdown(self) -> None:
        from django.apps import apps

        from bench._scale.run import drop_databases

        if apps.ready:
            from django.db import connections

            super().shutdown()
            connections.close_all()
        else:  # stopped before Django was set up: nothing was submitted
            for service in reversed(self.started):
                service.stop()
        if not self.args.keep:
            drop_databases([self.database, self.prefect_db])


def describe_settings(args: argparse.Namespace) -> str:
    """The settings the figures depend on, as serve_flows gets them (SERVICE_SETTINGS, else the environment or
    the default)."""
    from django.conf import settings

    explicit = service_settings(args)
    names = [
        "WORKFLOWS_LINGER_SECONDS",
        "WORKFLOWS_LINGER_MAX_SECONDS",
        "WORKFLOWS_MAX_FLOW_PROCESSES",
        "SLURM_POLL_MIN_SECONDS",
        "SLURM_POLL_MAX_SECONDS",
        "WORKFLOWS_SWEEP_INTERVAL_SECONDS",
        "WORKFLOWS_DISPATCH_INTERVAL_SECONDS",
    ]
    shown = {
        **explicit,
        **{name: str(getattr(settings, name, "?")) for name in names if name not in explicit},
    }
    return ", ".join(f"{name}={value}" for name, value in shown.items())
