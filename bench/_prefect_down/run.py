"""The run of bench/prefect_down.py on the isolated stack: a check request, then each phase's burst of POSTs with
Prefect up, stopped or frozen, Prefect back, and the phase's requests waited for until they are dispatched and
have ended. serve_flows is watched throughout (an exit is noted, and it is started again)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench._prefect_down.record import Phase, percentile, request_label
from bench._prefect_down.report import report
from bench._prefect_down.web import ENDPOINT, WEB_SETTINGS, Web
from bench._procs import flow_processes
from bench._readings import flow_run_ids, flow_runs
from bench._report import say
from bench._services import poll_until, tail
from bench._setup import fresh_database, repo_state
from bench._stack import Stack

# The e2e tests' intervals (tests/stack.py), with the sweep every 5 s; the dispatch timeout is the default.
SERVICE_SETTINGS = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "SLURM_POLL_MIN_SECONDS": "0.5",
    "SLURM_POLL_MAX_SECONDS": "2",
    "WORKFLOWS_LINGER_SECONDS": "1",
    "WORKFLOWS_SWEEP_INTERVAL_SECONDS": "5",
    "WORKFLOWS_DISPATCH_INTERVAL_SECONDS": "1",
    "WORKFLOWS_STALL_SECONDS": "15",
    "PREFECT_DISPATCH_TIMEOUT_SECONDS": "3",
}
T = TypeVar("T")


def retry_db(read: Callable[[], T], tries: int = 60) -> T:
    """`read()`, again every 2 s while PostgreSQL is restarting (others restart it while benchmarks run)."""
    from django.db import InterfaceError, OperationalError, connection

    for attempt in range(tries):
        try:
            return read()
        except (OperationalError, InterfaceError) as exc:
            if attempt == tries - 1:
                raise
            say(f"  (PostgreSQL: {str(exc).strip().splitlines()[0][:100]}; reading again in 2 s)")
            connection.close()
            time.sleep(2)
    raise AssertionError("unreachable")


def db_tolerant(check: Callable[[], bool]) -> Callable[[], bool]:
    """A poll check that reads False while PostgreSQL is restarting."""
    return lambda: retry_db(check)


class PrefectDown(Stack):
    """The stack of bench/prefect_down.py, its web server (`web`) and its phases (`phases`)."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        super().__init__(tmp, args.database, SERVICE_SETTINGS)
        self.args = args
        self.serve_flows_args = ["--limit", str(args.runner_limit)] if args.runner_limit > 0 else []
        self.web = Web(args.study, args.concurrency)
        self.frozen = False
        self.phases: list[Phase] = []
        # serve_flows exits noticed by the watcher: (pid, time.monotonic(), exit code)
        self.serve_flows_exits: list[tuple[int, float, int | None]] = []
        self.watching = threading.Event()

    # -- the run --

    def run(self) -> None:
        args = self.args
        say(
            f"bench/prefect_down.py: {args.posts} POSTs per phase from {args.concurrency} threads, study "
            f"{args.study} (unknown to the ENA stub), outages of {args.down:g} s; "
            f"repo at {repo_state()}"
        )
        self.start()
        where = fresh_database(args.database)
        say(f"Django database {where} (fresh)")
        say(
            "serve_flows runner limit: "
            + (
                f"{args.runner_limit} flow processes (serve_flows --limit)"
                if self.serve_flows_args
                else "none"
            )
        )
        self.start_serve_flows()
        self.start_web()
        self.watch_serve_flows()
        say()
        self.check_unknown_study()
        say()

        for phase in (
            Phase("a", "(a) Prefect up", None),
            Phase("b", "(b) Prefect refusing", "refusing"),
            Phase("c", "(c) Prefect hanging", "hanging"),
        ):
            self.phases.append(phase)
            self.run_phase(phase)
        retry_db(lambda: report(self), tries=10)

    def start_web(self) -> None:
        service = self.web.launch({**self.serve_flows_env(), **WEB_SETTINGS}, self.tmp / "runserver.log")
        self.started.append(service)
        self.web.ready(service)

    def watch_serve_flows(self) -> None:
        """Notes every exit of serve_flows (the current one, every 0.2 s) until shutdown."""
        self.watching.set()

        def watch() -> None:
            seen: set[int] = set()
            while self.watching.is_set():
                service = self.serve_flows
                if service is not None and service.pid not in seen and not service.running():
                    seen.add(service.pid)
                    self.serve_flows_exits.append((service.pid, time.monotonic(), service.process.returncode))
                time.sleep(0.2)

        threading.Thread(target=watch, name="serve_flows watcher", daemon=True).start()

    def check_unknown_study(self) -> None:
        """One request for the unknown study, Prefect up: it must end FAILED quickly, with no ledger row."""
        import httpx

        from analyses.models import AssemblyAnalysisRequest
        from workflows.models import ClusterJob

        with httpx.Client(base_url=self.web.url, headers=self.web.headers(), timeout=60) as client:
            start = time.monotonic()
            response = client.post(ENDPOINT, json=self.web.body())
            post_ms = 1000 * (time.monotonic() - start)
        if response.status_code != 201:
            raise SystemExit(f"check POST answered {response.status_code}: {response.text[:500]}")
        request_id = response.json()["id"]
        dispatched: list[float] = []

        def ended() -> bool:
            request = AssemblyAnalysisRequest.objects.get(pk=request_id)
            if request.flow_run_id and not dispatched:
                dispatched.append(time.monotonic() - start)
            return request.is_terminal and not flow_processes(self.flow_server.pid)

        if not poll_until(db_tolerant(ended), 120, f"request {request_id} ({self.args.study}) to end", 0.2):
            raise SystemExit(f"request {request_id} for {self.args.study} did not end within 120 s")
        took = time.monotonic() - start
        request = AssemblyAnalysisRequest.objects.get(pk=request_id)
        rows = ClusterJob.objects.filter(request_id=request_id).count()
        jobs = ClusterJob.objects.filter(request_id=request_id).exclude(slurm_job_id__isnull=True).count()
        run_ = flow_runs([request.flow_run_id]).get(request.flow_run_id) if request.flow_run_id else None
        say(
            f"check: request {request_id} for {self.args.study} (POST {post_ms:.0f} ms) dispatched after "
            f"{dispatched[0] if dispatched else float('nan'):.1f} s, ended {request.status.upper()} after {took:.1f} s "
            f"({request.status_detail[:120]!r}); flow run {run_.state.name if run_ and run_.state else '?'}; "
            f"{rows} ledger rows, {jobs} Slurm jobs"
        )
        if request.status != AssemblyAnalysisRequest.Status.FAILED or rows:
            raise SystemExit(
                f"a request for {self.args.study} should fail at the ENA lookup and run no job: pick another --study"
            )

    # -- a phase --

    def run_phase(self, phase: Phase) -> None:
        args = self.args
        say(f"{phase.title}: {args.posts} POSTs ...")
        if phase.outage == "refusing":
            start = time.monotonic()
            self.prefect_server.stop()
            say(
                f"  Prefect server stopped (SIGTERM to process group {self.prefect_server.pid}) in {time.monotonic() - start:.1f} s"
            )
        elif phase.outage == "hanging":
            os.killpg(self.prefect_server.pid, signal.SIGSTOP)
            self.frozen = True
            say(f"  Prefect server frozen (SIGSTOP to process group {self.prefect_server.pid})")
        phase.down_at = time.monotonic()
        phase.posts = self.web.post_many(args.posts)
        phase.posted_s = max(p.started + p.ms / 1000 for p in phase.posts) - min(
            p.started for p in phase.posts
        )
        if phase.outage is None:
            phase.back_at = phase.down_at
        else:
            time.sleep(max(0.0, phase.down_at + args.down - time.monotonic()))
            phase.attempts_down, phase.pending_down = retry_db(lambda: self.attempts(phase.request_ids))
            phase.serve_flows_alive = self.flow_server.running()
            if phase.outage == "refusing":
                phase.restart_s = self.restart_prefect()
            else:
                os.killpg(self.prefect_server.pid, signal.SIGCONT)
                self.frozen = False
                self.wait_prefect()
            phase.back_at = time.monotonic()
            say(
                f"  Prefect back after {phase.back_at - phase.down_at:.1f} s down"
                + (f" (restart {phase.restart_s:.1f} s)" if phase.restart_s is not None else " (SIGCONT)")
                + f"; the phase's triggers: {phase.pending_down} pending, attempts {phase.attempts_down[0]} "
                f"(max {phase.attempts_down[1]}); serve_flows {'running' if phase.serve_flows_alive else 'EXITED'}"
            )
            if not self.flow_server.running():
                exits = [e for e in self.serve_flows_exits if e[0] == self.flow_server.pid]
                when = (
                    f" {exits[0][1] - phase.down_at:.1f} s into the outage, exit code {exits[0][2]}"
                    if exits
                    else ""
                )
                say(f"  serve_flows (pid {self.flow_server.pid}) exited{when}: starting it again")
                phase.serve_flows_restarted = True
                self.launch_serve_flows()
        self.wait_phase(phase)
        say(
            f"  {Counter(p.status for p in phase.posts)}; p50 {percentile(phase.latencies(), 0.5):.0f} ms, "
            f"p99 {percentile(phase.latencies(), 0.99):.0f} ms; dispatched "
            + (f"{phase.dispatched_s:.1f} s" if phase.dispatched_s is not None else "NOT ALL")
            + " and ended "
            + (f"{phase.settled_s:.1f} s" if phase.settled_s is not None else "NOT ALL")
            + f" after Prefect was back; {dict(phase.statuses)}"
        )

    def attempts(self, request_ids: list[int]) -> tuple[tuple[int, int], int]:
        """The triggers of these requests: (attempts sum, max), and how many are still pending."""
        from django.db.models import Max, Sum

        from workflows.models import Trigger

        triggers = Trigger.objects.filter(source__in=[request_label(i) for i in request_ids])
        totals = triggers.aggregate(total=Sum("attempts"), most=Max("attempts"))
        pending = triggers.filter(status=Trigger.Status.PENDING).count()
        return (totals["total"] or 0, totals["most"] or 0), pending

    def wait_phase(self, phase: Phase) -> None:
        """Until every request of the phase has its flow run id, then until every one has ended and no flow
        process is left (each up to --deadline s)."""
        from analyses.models import AssemblyAnalysisRequest

        ids = phase.request_ids
        rows = AssemblyAnalysisRequest.objects.filter(pk__in=ids)

        def dispatched() -> bool:
            self.revive_check()
            return all(i for i in flow_run_ids(ids).values())

        if poll_until(
            db_tolerant(dispatched), self.args.deadline, f"the dispatch of {phase.title}'s requests", 0.2
        ):
            phase.dispatched_s = time.monotonic() - phase.back_at

        def ended() -> bool:
            self.revive_check()
            return not rows.exclude(status__in=AssemblyAnalysisRequest.TERMINAL_STATUSES).exists() and not (
                flow_processes(self.flow_server.pid)
            )

        if poll_until(db_tolerant(ended), self.args.deadline, f"the end of {phase.title}'s requests", 0.5):
            phase.settled_s = time.monotonic() - phase.back_at
        phase.statuses = retry_db(lambda: Counter(rows.values_list("status", flat=True)))

    def revive_check(self) -> None:
        """serve_flows exiting while Prefect is up is a finding, not an outage to wait out: say so, and go on."""
        if not self.flow_server.running():
            say(f"  !! serve_flows exited with Prefect up:\n{tail(self.flow_server.log, 15)}")
            self.launch_serve_flows()

    # -- cleanup --

    def shutdown(self) -> None:
        self.watching.clear()
        if self.frozen and self.prefect is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.prefect.pid, signal.SIGCONT)
            self.frozen = False
        super().shutdown()
