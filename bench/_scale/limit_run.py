"""One N of scenario (b) on the isolated stack (bench._stack.Stack: its own Prefect server, the ENA stub,
serve_flows with every sbatch held): the requests created in batches until the cluster is full and the rest wait
for capacity, then held jobs released at a fixed rate while serve_flows' flow processes and the capacity queue are
sampled, then a drain, and what the run read (bench._scale.limit_read)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from bench._procs import flow_processes
from bench._readings import log_findings, run_states
from bench._report import say
from bench._scale.limit_figures import Readings
from bench._scale.limit_read import read_run
from bench._scale.limit_sampler import Sampler, cpu_mark
from bench._scale.run import drop_databases, use_fresh_database
from bench._setup import admin_url, database_url, repo_state, run
from bench._stack import Stack
from bench._waiting.run import SERVICE_SETTINGS
from bench._waiting.slurm import held_job_works, hold_everything_conf

STUDY = "PRJEB00001"  # two runs: two fetch_reads jobs first, eight jobs in all per request
T = TypeVar("T")


def service_settings(args: argparse.Namespace) -> dict[str, str]:
    """What serve_flows runs with besides the stack's addresses (bench/waiting.py's short intervals)."""
    return {
        **SERVICE_SETTINGS,
        "SLURM_MAX_ACTIVE_JOBS": str(args.max_active_jobs_b),
        "WORKFLOWS_MAX_FLOW_PROCESSES": str(args.max_flow_processes_b),
    }


def postgres_started() -> datetime:
    """When the PostgreSQL server started: a restart during a run (other sessions' tests do that) shows."""
    import psycopg

    with psycopg.connect(admin_url(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


def retrying(read: Callable[[], T], seconds: float = 120.0) -> T:
    """`read()`, again on a new connection while PostgreSQL restarts (at most `seconds`)."""
    from django.db import DatabaseError, connections

    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except DatabaseError:
            connections.close_all()
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


class LimitStack(Stack):
    """The stack of one N: its requests (`request_ids`, in creation order) and, once done, `readings`."""

    def __init__(self, args: argparse.Namespace, n: int, tmp: Path) -> None:
        super().__init__(tmp, f"{args.database_b}_n{n}", service_settings(args))
        self.args = args
        self.n = n
        self.request_ids: list[int] = []
        self.readings: Readings | None = None
        self.postgres_started: datetime | None = None

    def run(self) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        say(f"N={self.n}: repo at {repo_state()}")
        self.start()
        # Prefect's settings were read when it was imported: a second N's server needs them changed here.
        with temporary_settings({PREFECT_API_URL: self.api_url}):
            self._run()

    def _run(self) -> None:
        from django.conf import settings

        args = self.args
        self.postgres_started = postgres_started()
        where = use_fresh_database(self.database)
        settings.PREFECT_API_URL = self.api_url
        # serve_flows inherits this process's environment: a second N's must not connect to the first N's database
        # (use_fresh_database renames only this process's connection).
        os.environ["DATABASE_URL"] = database_url(self.database)
        say(f"Django database {where} (fresh); study {STUDY} (2 runs, 4 steps each: 8 jobs per request)")
        conf = hold_everything_conf(self.tmp / "slurm")
        held_job_works(conf, self.tmp)
        say(f"hold filter: {conf} (cli_filter/lua sets --hold on every sbatch; checked: JobHeldUser)")
        # JSON log lines: the sweep's and the grants' lines are read back with their times (limit_read).
        self.start_serve_flows({"SLURM_CONF": str(conf), "LOG_FORMAT": "json"})
        sampler = Sampler(self.flow_server.pid, args.sample_every_b).start()
        try:
            start = time.time()
            self.add_requests(sampler)
            creation_seconds = time.time() - start
            self.show_queue("after creation")
            cpu_start = cpu_mark(self.flow_server.pid, self.prefect_server.pid)
            released, not_released = self.release_held_jobs()
            release_end = time.time()
            self.drain(sampler, released)
            cpu_end = cpu_mark(self.flow_server.pid, self.prefect_server.pid)
            retrying(lambda: self.show_queue("after the drain"))
        finally:
            sampler.stop()
        self.readings = retrying(
            lambda: read_run(
                self,
                creation_seconds=creation_seconds,
                window=(cpu_start.at, release_end, cpu_end.at),
                released=list(released.values()),
                not_released=not_released,
                samples=sampler.samples,
                flow_cpu=sampler.flow_cpu,
                cpu=(cpu_start, cpu_end),
            )
        )
        restarted = postgres_started()
        if restarted != self.postgres_started:
            say(
                f"  !! PostgreSQL restarted during the run (up since {restarted:%H:%M:%S}; someone else's doing): "
                "the figures include the service's recovery from it"
            )
        log_findings(self.serve_flows_logs)

    # -- creation --

    def add_requests(self, sampler: Sampler) -> None:
        """N requests, `--batch-b` at a time, each batch waited for until its flow runs are all Suspended."""
        from analyses.services import create_assembly_analysis_request

        say(f"creating {self.n} requests of {STUDY} in batches of {self.args.batch_b}")
        while len(self.request_ids) < self.n:
            count = min(self.args.batch_b, self.n - len(self.request_ids))
            start = time.time()
            batch = [
                retrying(lambda: create_assembly_analysis_request(study_accession=STUDY, requester=None).pk)
                for _ in range(count)
            ]
            self.request_ids += batch
            done = self.wait_suspended(batch)
            say(
                f"  requests {batch[0]}..{batch[-1]}: "
                + ("all suspended" if done else f"NOT all suspended: {dict(run_states(batch))}")
                + f" after {time.time() - start:.0f} s (at most {sampler.peak(start)} flow processes at once)"
            )
            if not done:
                raise SystemExit(f"requests {batch[0]}..{batch[-1]} did not all suspend")

    def wait_suspended(self, request_ids: list[int]) -> bool:
        deadline = time.monotonic() + self.args.timeout_b
        while time.monotonic() < deadline:
            states = retrying(lambda: run_states(request_ids))
            if states.get("Suspended", 0) == len(request_ids) and not flow_processes(self.flow_server.pid):
                return True
            time.sleep(1)
        return False

    def show_queue(self, when: str) -> None:
        from collections import Counter

        from analyses.models import AssemblyAnalysisRequest
        from workflows.models import ClusterJob, RequestProgress

        jobs = Counter(
            ClusterJob.objects.filter(request_id__in=self.request_ids).values_list("state", flat=True)
        )
        waiting = RequestProgress.objects.filter(
            request_id__in=self.request_ids, capacity_wanted__gt=0
        ).count()
        statuses = Counter(
            AssemblyAnalysisRequest.objects.filter(pk__in=self.request_ids).values_list("status", flat=True)
        )
        say(f"  {when}: requests {dict(statuses)}, {waiting} in the capacity queue; ledger {dict(jobs)}")

    # -- releases --

    def release_held_jobs(self) -> tuple[dict[str, float], int]:
        """Every `--release-every` s for `--release-seconds`, the oldest held job released (it runs about a
        second). Returns job id -> when released, and the ticks that found no held job. Slurm alone says which
        jobs are held, so a database outage does not stop the releases."""
        every, seconds = self.args.release_every, self.args.release_seconds
        say(f"releasing the oldest held job every {every:g} s for {seconds:g} s")
        released: dict[str, float] = {}
        not_released = refused = 0
        start = time.time()
        tick = 0
        while tick * every < seconds:
            time.sleep(max(0.0, start + tick * every - time.time()))
            tick += 1
            held = [job_id for job_id in self.our_jobs(held_only=True) if job_id not in released]
            if not held:
                not_released += 1
                continue
            if run(["scontrol", "release", held[0]], check=False).returncode != 0:
                refused += 1
            released[held[0]] = time.time()
            if tick % max(1, int(60 / every)) == 0:
                say(
                    f"  {time.time() - start:4.0f} s: {len(released)} released ({not_released} ticks found none)"
                )
        if refused:
            say(f"  scontrol release refused {refused} job(s)")
        return released, not_released

    def our_jobs(self, *, held_only: bool = False) -> list[str]:
        """The ids of this stack's jobs in squeue (their work directory is under its JOBS_ROOT), oldest first."""
        out = run(["squeue", "-h", "-o", "%i|%T|%r|%Z"], check=False).stdout
        root = f"{self.jobs_root}/"
        ids = []
        for line in out.splitlines():
            job_id, state, reason, workdir = [*line.split("|"), "", "", ""][:4]
            if workdir.startswith(root) and (not held_only or (state, reason) == ("PENDING", "JobHeldUser")):
                ids.append(job_id.strip())
        return sorted(ids, key=int)

    def drain(self, sampler: Sampler, released: dict[str, float]) -> None:
        """Until every released job has left the queue and no flow process has run for 2 poll intervals (at
        most `--drain-b` s): the last releases' resumes and submissions belong to the window."""
        quiet_for = 2 * float(self.service_settings["SLURM_POLL_MAX_SECONDS"]) + 2
        start = time.time()
        while time.time() - start < self.args.drain_b:
            running = set(released) & set(self.our_jobs())
            quiet = sampler.last_busy()
            if not running and quiet is not None and time.time() - quiet >= quiet_for:
                say(f"drained after {time.time() - start:.0f} s")
                return
            time.sleep(1)
        say(
            f"  !! not drained after {self.args.drain_b:g} s (released jobs not ended, or flow processes alive)"
        )

    def job_ids(self) -> list[str]:
        """The ledger's job ids, and whatever squeue lists under this stack's JOBS_ROOT (the ledger may be out of
        reach: PostgreSQL restarted by someone else, say)."""
        from django.apps import apps

        if apps.ready:
            from django.db import connections

            connections.close_all()  # a broken connection would make the ledger unreadable
        return sorted(set(super().job_ids()) | set(self.our_jobs()))

    def shutdown(self) -> None:
        from django.apps import apps

        super().shutdown()
        if apps.ready:
            from django.db import connections

            connections.close_all()
        if not self.args.keep:
            drop_databases([self.database, self.prefect_db])
            say(f"dropped the databases {self.database} and {self.prefect_db}")
