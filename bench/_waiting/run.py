"""The run of bench/waiting.py on the isolated stack: requests added in batches until N wait (their flow runs
Suspended, their jobs held), what they hold measured at each N, and held jobs ended one at a time to time how
soon each one's end resumes its request."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench._procs import flow_processes
from bench._readings import flow_run_ids, flow_run_states, ledger_jobs, log_findings, run_states
from bench._report import fmt, say
from bench._setup import fresh_database, repo_state, run, scancel
from bench._stack import Stack
from bench._waiting.holdings import pg_connections, process_snapshot
from bench._waiting.report import report
from bench._waiting.slurm import held_job_works, hold_everything_conf, sacct_end, squeue_reasons

STUDY = "PRJEB00001"
# What serve_flows runs with (besides the addresses of the isolated stack): short intervals, stated in the output.
SERVICE_SETTINGS = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "SLURM_POLL_MIN_SECONDS": "1",
    "SLURM_POLL_MAX_SECONDS": "5",
    "WORKFLOWS_LINGER_SECONDS": "1",
    "WORKFLOWS_SWEEP_INTERVAL_SECONDS": "5",
    # The default. The service loop wakes at least this often and polls at every wake-up, so it also caps the poll
    # interval: with a shorter one, SLURM_POLL_MAX_SECONDS would never be reached.
    "WORKFLOWS_DISPATCH_INTERVAL_SECONDS": "5",
    "WORKFLOWS_STALL_SECONDS": "60",
    # Two jobs per request: the default (100 active jobs) would leave half of N=100 waiting for capacity.
    "SLURM_MAX_ACTIVE_JOBS": "1000",
}
T = TypeVar("T")


class Waiting(Stack):
    """The stack of bench/waiting.py and its waiting requests (`request_ids`)."""

    def __init__(self, args: argparse.Namespace, sizes: list[int], tmp: Path) -> None:
        super().__init__(tmp, args.database, SERVICE_SETTINGS)
        self.args = args
        self.sizes = sizes
        self.request_ids: list[int] = []

    def all_suspended(self, request_ids: list[int]) -> bool:
        states = run_states(request_ids)
        return states.get("Suspended", 0) == len(request_ids) and not flow_processes(self.flow_server.pid)

    def measure(self, n: int) -> dict:
        from django.db import connections

        connections.close_all()  # the benchmark's own connection is not the service's
        snapshot = process_snapshot(self.flow_server.pid, self.args.window)
        snapshot["pg"] = pg_connections(self.args.database)
        snapshot["pg_prefect"] = pg_connections(self.prefect_db)["total"]
        snapshot["n"] = n
        jobs = ledger_jobs()
        snapshot["ledger"] = Counter(job.state for job in jobs)
        snapshot["squeue"] = squeue_reasons(job.slurm_job_id for job in jobs if job.state == "PENDING")
        snapshot["runs"] = run_states(self.request_ids) if self.request_ids else Counter()
        return snapshot

    def show(self, s: dict) -> None:
        pg = s["pg"]
        say(
            f"  N={s['n']}, over {s['samples']} samples in {self.args.window:g} s: flow processes "
            f"{s['flow_processes']} (zombies {s['zombies']}), other children {', '.join(s['other_children']) or 'none'}; "
            f"serve_flows threads {s['threads_min']}-{s['threads']}, RSS {s['rss_main_mb']:.0f} MB "
            f"+ children {s['rss_children_mb']:.0f} MB (max)"
        )
        say(
            f"        PG connections on {self.args.database}: {pg['total']} {dict(pg['by_state'])}, advisory locks "
            f"held {pg['advisory_locks']}; on {self.prefect_db} (Prefect server): {s['pg_prefect']}"
        )
        say(f"        flow runs {dict(s['runs'])}; ledger {dict(s['ledger'])}; squeue {dict(s['squeue'])}")

    # -- scaling up --

    def add_requests(self, n: int) -> None:
        from analyses.services import create_assembly_analysis_request

        while len(self.request_ids) < n:
            count = min(self.args.batch, n - len(self.request_ids))
            start = time.monotonic()
            batch = [
                create_assembly_analysis_request(study_accession=STUDY, requester=None).pk
                for _ in range(count)
            ]
            self.request_ids += batch
            done, peak = self.wait_suspended(batch)
            say(
                f"  requests {batch[0]}..{batch[-1]}: "
                + ("all suspended" if done else f"NOT all suspended: {dict(run_states(batch))}")
                + f" after {time.monotonic() - start:.0f} s (peak {peak} flow processes at once)"
            )

    def wait_suspended(self, request_ids: list[int]) -> tuple[bool, int]:
        """Whether every flow run of `request_ids` got to Suspended with no flow process left; the peak count."""
        deadline = time.monotonic() + self.args.timeout
        peak = 0
        while time.monotonic() < deadline:
            peak = max(peak, len(flow_processes(self.flow_server.pid)))
            if self.all_suspended(request_ids):
                return True, peak
            time.sleep(1)
        return False, peak

    # -- resume delay --

    def end_jobs_and_time(self) -> list[dict]:
        """End held jobs of different requests one at a time, alternately by release and by scancel."""
        pending = {}
        for job in ledger_jobs(self.request_ids):
            if job.state == "PENDING" and job.request_id not in pending:
                pending[job.request_id] = job
        candidates = [pending[r] for r in sorted(pending)]
        hows = []
        for i in range(max(self.args.releases, self.args.cancels)):
            hows += ["release"] if i < self.args.releases else []
            hows += ["scancel"] if i < self.args.cancels else []
        count = min(len(hows), len(candidates))
        if count == 0:
            say("  no held job to end")
            return []
        step = len(candidates) / count
        results = []
        for i in range(count):
            time.sleep(self.args.settle)
            results.append(self.end_one(candidates[int(i * step)], hows[i]))
        return results

    def end_one(self, job, how: str) -> dict:
        """End one held job (`scontrol release`: it runs; `scancel`: it ends at once); once its flow run has
        resumed and suspended again, the times."""
        from workflows.models import ClusterJob

        flow_run_id = flow_run_ids([job.request_id])[job.request_id]
        ended_at = datetime.now(UTC)
        if how == "release":
            run(["scontrol", "release", job.slurm_job_id])
        else:
            scancel([job.slurm_job_id])
        state, end, states = "", None, []
        deadline = time.monotonic() + 180
        settled = False
        while time.monotonic() < deadline:
            state, end = sacct_end(job.slurm_job_id, ended_at)
            states = flow_run_states(flow_run_id, ended_at) if end and flow_run_id else []
            resuming = _first(states, lambda s: s.name == "Resuming")
            if resuming is not None:
                latest = states[-1]
                back = latest.timestamp > resuming.timestamp and (
                    latest.name == "Suspended" or latest.is_final()
                )
                if back and not flow_processes(self.flow_server.pid):
                    settled = True
                    break
            time.sleep(1)
        resuming = _first(states, lambda s: s.name == "Resuming")
        running = _first(
            states, lambda s: s.type.value == "RUNNING" and resuming and s.timestamp > resuming.timestamp
        )
        seen = ClusterJob.objects.get(pk=job.pk).state_changed_at
        outcome: dict[str, Any] = {
            "how": how,
            "delay": _seconds(end, resuming.timestamp if resuming else None),
            "detect": _seconds(end, seen),
            "to_running": _seconds(
                resuming.timestamp if resuming else None, running.timestamp if running else None
            ),
        }
        ended = f"ended {state or '?'} at {end:%H:%M:%S}" if end else "no end in sacct"
        say(
            f"  {how} job {job.slurm_job_id} ({job.name}, request {job.request_id}): {ended}; "
            f"end -> poller saw it {fmt(outcome['detect'])} s, end -> Resuming {fmt(outcome['delay'])} s, "
            f"Resuming -> Running {fmt(outcome['to_running'])} s"
            + ("" if settled else "  (TIMED OUT: not resumed and suspended again within 180 s)")
        )
        return outcome

    # -- the whole run --

    def run(self) -> None:
        say(
            f"bench/waiting.py: sizes {self.sizes} (batches of {self.args.batch}), {self.args.releases} releases "
            f"and {self.args.cancels} cancels per size, settle {self.args.settle:g} s; repo at {repo_state()}"
        )
        self.start()
        where = fresh_database(self.args.database)
        say(f"Django database {where} (fresh); study {STUDY} (2 runs: 2 held fetch_reads jobs per request)")
        conf = hold_everything_conf(self.tmp / "slurm")
        held_job_works(conf, self.tmp)
        say(f"hold filter: {conf} (cli_filter/lua sets --hold on every sbatch; checked: JobHeldUser)")
        self.start_serve_flows({"SLURM_CONF": str(conf)})
        say()

        time.sleep(self.args.settle)
        baseline = self.measure(0)
        self.show(baseline)
        rows: list[tuple[dict, list[dict]]] = [(baseline, [])]
        for n in self.sizes:
            say(f"scaling up to N={n} in batches of {self.args.batch}")
            self.add_requests(n)
            time.sleep(self.args.settle)
            snapshot = self.measure(n)
            self.show(snapshot)
            say(
                f"ending held jobs of different requests one at a time, {self.args.settle:g} s apart: "
                f"{self.args.releases} by scontrol release, {self.args.cancels} by scancel, alternately"
            )
            rows.append((snapshot, self.end_jobs_and_time()))
        report(rows, window=self.args.window, service_settings=self.service_settings)
        log_findings(self.serve_flows_logs)


def _first(items: list[T], test: Callable[[T], object]) -> T | None:
    return next((item for item in items if test(item)), None)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None
