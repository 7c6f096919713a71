"""Benchmark: what a POST of a new request costs while Prefect is down, and whether every request still gets
exactly one flow run once Prefect is back.

    .venv/bin/python bench/prefect_down.py [--posts 100] [--concurrency 4] [--down 30] [--runner-limit 4]
                                           [--study PRJEB99999] [--deadline 600] [--keep]

The promise (workflows/outbox/wakeup.py, workflows/outbox/dispatch.py): the HTTP request thread never calls Prefect. A POST to
/api/assembly-analysis-requests/ writes the request and its trigger (the outbox) in one transaction and sends a
NOTIFY; serve_flows' service loop is woken and dispatches the trigger (`create_flow_run` with the trigger's
idempotency key, tag = the request's label), retrying with backoff (2^attempts s, at most 5 min) while Prefect is
down. Measured before that design: a POST took 1.6 s with Prefect refusing connections and 3.1 s with it
hanging. Goals: POST p99 <= 200 ms with Prefect down either way; once it is back, exactly one flow run per request.

The whole service runs for real and isolated (bench/_stack.py: its own Prefect server and database, the ENA stub,
serve_flows in its own process group, a fresh Django database), and the Django web server runs as a real HTTP
server: `manage.py runserver 127.0.0.1:<free port> --noreload` (threaded) in its own process group, with the same
environment as serve_flows (the bench's DATABASE_URL and PREFECT_API_URL) and DEBUG off. A user and a DRF token
are created in the bench's database.

Every request is for a study the ENA stub does not know (--study, PRJEB99999 by default): its flow run fails
fast at the ENA lookup and submits no Slurm job, so what is measured is the request path and the dispatch, not
the pipeline. One request is checked first (it must end FAILED, with no ledger row). So the cluster is not
needed (the script does not wait for it); the shared PostgreSQL is.

Phases, each --posts POSTs from --concurrency threads (httpx, one client per thread, latency taken client side):

  (a) Prefect up: the baseline (the flow runs start while the POSTs go on, on the same machine);
  (b) Prefect refusing: the stack's Prefect server is stopped (SIGTERM to its process group), the POSTs are sent,
      and it is started again on the same port and database --down s after it went down;
  (c) Prefect hanging: SIGSTOP to the Prefect server's process group (the kernel accepts connections, nobody
      answers them), the POSTs, SIGCONT --down s after the freeze.

After each phase: the time from Prefect back (answering /health) to every request of the phase having its
flow_run_id, and to every one of them ended (FAILED) with no flow process left, so that the phases do not overlap;
serve_flows' runner is limited to --runner-limit flow processes at once (`serve_flows --limit`; 0: none) so that
100 flow processes do not start at once on this machine. If serve_flows exits during an outage (Prefect's runner
gives up after a few failed polls) it is started again once Prefect answers, and that is reported.

At the end: every flow run of the assembly deployment read from Prefect and counted per request tag (requests
with 0 / 1 / >1 flow runs; total vs requests), the triggers' attempts (sum, max), whether serve_flows lived
through the outages, and the ERROR/WARNING lines of its logs. Everything the benchmark started is stopped (by
process group) and its temporary directory removed (kept with --keep).
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import re
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib
import itertools

from bench._report import fmt, say, say_goal
from bench._setup import bench_parser, fresh_database, repo_state
from bench._stack import (
    DEMO_ENA,
    Service,
    Stack,
    add_stack_options,
    flow_processes,
    free_port,
    poll_until,
    run_stack,
    tail,
)

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
# The web server: DEBUG off as in production, plain HTTP on the loopback.
# The bench POSTs hundreds of requests for one study as one user: each is forced, and the creation throttle is
# lifted (it is measured separately, not here).
WEB_SETTINGS = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "127.0.0.1",
    "SECURE_SSL_REDIRECT": "0",
    "API_REQUEST_CREATE_THROTTLE": "100000/hour",
}
ENDPOINT = "/api/assembly-analysis-requests/"
P99_GOAL_MS = 200.0
T = TypeVar("T")


@dataclass
class Post:
    started: float  # time.monotonic()
    ms: float
    status: str  # "201", "500", or the name of the client-side exception
    request_id: int | None


@dataclass
class Phase:
    key: str
    title: str
    outage: str | None  # None, "refusing" or "hanging"
    posts: list[Post] = field(default_factory=list)
    down_at: float = 0.0  # the outage began (or the first POST, for the baseline)
    posted_s: float = 0.0  # the burst of POSTs, first sent to last answered
    back_at: float = 0.0  # Prefect answers again (or the first POST, for the baseline)
    restart_s: float | None = None  # Prefect's restart, until it answered
    attempts_down: tuple[int, int] = (0, 0)  # the phase's triggers' attempts when Prefect came back: sum, max
    pending_down: int = 0  # ... and how many were still pending then
    serve_flows_alive: bool = True  # at the end of the outage
    serve_flows_restarted: bool = False
    dispatched_s: float | None = None  # back_at -> every request of the phase has its flow run id
    settled_s: float | None = None  # back_at -> every one ended, no flow process left
    statuses: Counter = field(default_factory=Counter)  # the requests' statuses once settled

    @property
    def request_ids(self) -> list[int]:
        return [p.request_id for p in self.posts if p.request_id is not None]

    def latencies(self) -> list[float]:
        return sorted(p.ms for p in self.posts)


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


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--posts", type=int, default=100, help="POSTs per phase (default 100)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads (default 4)")
    parser.add_argument(
        "--down",
        type=float,
        default=30.0,
        help="seconds Prefect stays down (stopped, or frozen) in each outage, from its start (default 30)",
    )
    parser.add_argument(
        "--runner-limit",
        type=int,
        default=4,
        help="serve_flows --limit: flow processes at once (default 4; 0 for no limit)",
    )
    parser.add_argument(
        "--study", default="PRJEB99999", help="a study the ENA stub does not know (default PRJEB99999)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=600.0,
        help="seconds to wait for the dispatch, and then the end, of each phase's requests (default 600)",
    )
    add_stack_options(parser, "emgapi_bench_prefect_down", kept="logs, Prefect home")
    args = parser.parse_args()
    if args.posts < 1 or args.concurrency < 1 or args.down < 0:
        parser.error("--posts and --concurrency must be positive, --down not negative")
    if (DEMO_ENA / f"{args.study}.study.json").exists():
        parser.error(f"the ENA stub knows {args.study} (demo/ena): pick a study it does not know")

    run_stack(
        lambda tmp: PrefectDown(args, tmp),
        name="prefect-down",
        keep=args.keep,
        logs="serve_flows*.log, prefect_server*.log, runserver.log, ena_stub.log",
    )
    return 0


class PrefectDown(Stack):
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        super().__init__(tmp, args.database, SERVICE_SETTINGS)
        self.args = args
        self.serve_flows_args = ["--limit", str(args.runner_limit)] if args.runner_limit > 0 else []
        self.web: Service | None = None
        self.web_url = ""
        self.token = ""
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
        retry_db(self.report, tries=10)

    def start_web(self) -> None:
        import httpx
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        port = free_port()
        self.web_url = f"http://127.0.0.1:{port}"
        env = {**self.serve_flows_env(), **WEB_SETTINGS}
        self.web = Service(
            "runserver",
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            env,
            self.tmp / "runserver.log",
        )
        self.started.append(self.web)
        from django.contrib.auth.models import Permission

        user = get_user_model().objects.create_user(username="bench", email="bench@example.org")
        user.user_permissions.add(Permission.objects.get(codename="add_assemblyanalysisrequest"))
        self.token = Token.objects.create(user=user).key

        def answers() -> bool:
            if not self.web.running():
                raise SystemExit(f"runserver exited:\n{tail(self.web.log)}")
            try:
                return httpx.get(f"{self.web_url}{ENDPOINT}", timeout=2).status_code in (200, 401, 403)
            except httpx.HTTPError:
                return False

        start = time.monotonic()
        if not poll_until(answers, 60, "runserver", 0.2):
            raise SystemExit(f"runserver did not answer:\n{tail(self.web.log)}")
        say(
            f"runserver (pid {self.web.pid}, threaded, {', '.join(f'{k}={v}' for k, v in WEB_SETTINGS.items())}) "
            f"answering at {self.web_url} after {time.monotonic() - start:.1f} s; user 'bench' with a DRF token"
        )

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

        with httpx.Client(base_url=self.web_url, headers=self.headers(), timeout=60) as client:
            start = time.monotonic()
            response = client.post(ENDPOINT, json={"study_accession": self.args.study, "force": True})
            post_ms = 1000 * (time.monotonic() - start)
        if response.status_code != 201:
            raise SystemExit(f"check POST answered {response.status_code}: {response.text[:500]}")
        request_id = response.json()["id"]
        dispatched: list[float] = []

        def ended() -> bool:
            request = AssemblyAnalysisRequest.objects.get(pk=request_id)
            if request.flow_run_id and not dispatched:
                dispatched.append(time.monotonic() - start)
            return request.is_terminal and not flow_processes(self.serve_flows.pid)

        if not poll_until(db_tolerant(ended), 120, f"request {request_id} ({self.args.study}) to end", 0.2):
            raise SystemExit(f"request {request_id} for {self.args.study} did not end within 120 s")
        took = time.monotonic() - start
        request = AssemblyAnalysisRequest.objects.get(pk=request_id)
        rows = ClusterJob.objects.filter(request_id=request_id).count()
        jobs = ClusterJob.objects.filter(request_id=request_id).exclude(slurm_job_id__isnull=True).count()
        run_ = self.flow_runs([request.flow_run_id]).get(request.flow_run_id)
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

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    # -- a phase --

    def run_phase(self, phase: Phase) -> None:
        args = self.args
        say(f"{phase.title}: {args.posts} POSTs ...")
        if phase.outage == "refusing":
            start = time.monotonic()
            self.prefect.stop()
            say(
                f"  Prefect server stopped (SIGTERM to process group {self.prefect.pid}) in {time.monotonic() - start:.1f} s"
            )
        elif phase.outage == "hanging":
            os.killpg(self.prefect.pid, signal.SIGSTOP)
            self.frozen = True
            say(f"  Prefect server frozen (SIGSTOP to process group {self.prefect.pid})")
        phase.down_at = time.monotonic()
        phase.posts = self.post_many(args.posts)
        phase.posted_s = max(p.started + p.ms / 1000 for p in phase.posts) - min(
            p.started for p in phase.posts
        )
        if phase.outage is None:
            phase.back_at = phase.down_at
        else:
            time.sleep(max(0.0, phase.down_at + args.down - time.monotonic()))
            phase.attempts_down, phase.pending_down = retry_db(lambda: self.attempts(phase.request_ids))
            phase.serve_flows_alive = self.serve_flows.running()
            if phase.outage == "refusing":
                phase.restart_s = self.restart_prefect()
            else:
                os.killpg(self.prefect.pid, signal.SIGCONT)
                self.frozen = False
                self.wait_prefect()
            phase.back_at = time.monotonic()
            say(
                f"  Prefect back after {phase.back_at - phase.down_at:.1f} s down"
                + (f" (restart {phase.restart_s:.1f} s)" if phase.restart_s is not None else " (SIGCONT)")
                + f"; the phase's triggers: {phase.pending_down} pending, attempts {phase.attempts_down[0]} "
                f"(max {phase.attempts_down[1]}); serve_flows {'running' if phase.serve_flows_alive else 'EXITED'}"
            )
            if not self.serve_flows.running():
                exits = [e for e in self.serve_flows_exits if e[0] == self.serve_flows.pid]
                when = (
                    f" {exits[0][1] - phase.down_at:.1f} s into the outage, exit code {exits[0][2]}"
                    if exits
                    else ""
                )
                say(f"  serve_flows (pid {self.serve_flows.pid}) exited{when}: starting it again")
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

    def post_many(self, n: int) -> list[Post]:
        import httpx

        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(n):
            todo.put(index)
        done: list[Post] = []
        lock = threading.Lock()

        def worker() -> None:
            with httpx.Client(base_url=self.web_url, headers=self.headers(), timeout=60) as client:
                while True:
                    try:
                        todo.get_nowait()
                    except queue.Empty:
                        return
                    start = time.monotonic()
                    request_id = None
                    try:
                        response = client.post(
                            ENDPOINT, json={"study_accession": self.args.study, "force": True}
                        )
                        status = str(response.status_code)
                        if response.status_code == 201:
                            request_id = response.json()["id"]
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    post = Post(start, 1000 * (time.monotonic() - start), status, request_id)
                    with lock:
                        done.append(post)

        threads = [threading.Thread(target=worker) for _ in range(self.args.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(done, key=lambda p: p.started)

    def attempts(self, request_ids: list[int]) -> tuple[tuple[int, int], int]:
        """The triggers of these requests: (attempts sum, max), and how many are still pending."""
        from django.db.models import Max, Sum

        from workflows.models import Trigger

        triggers = Trigger.objects.filter(source__in=[self.label(i) for i in request_ids])
        totals = triggers.aggregate(total=Sum("attempts"), most=Max("attempts"))
        pending = triggers.filter(status=Trigger.Status.PENDING).count()
        return (totals["total"] or 0, totals["most"] or 0), pending

    @staticmethod
    def label(request_id: int) -> str:
        return f"analyses.assemblyanalysisrequest:{request_id}"

    def wait_phase(self, phase: Phase) -> None:
        """Until every request of the phase has its flow run id, then until every one has ended and no flow
        process is left (each up to --deadline s)."""
        from analyses.models import AssemblyAnalysisRequest

        ids = phase.request_ids
        rows = AssemblyAnalysisRequest.objects.filter(pk__in=ids)

        def dispatched() -> bool:
            self.revive_check()
            return all(i for i in self.flow_run_ids(ids).values())

        if poll_until(
            db_tolerant(dispatched), self.args.deadline, f"the dispatch of {phase.title}'s requests", 0.2
        ):
            phase.dispatched_s = time.monotonic() - phase.back_at

        def ended() -> bool:
            self.revive_check()
            return not rows.exclude(status__in=AssemblyAnalysisRequest.TERMINAL_STATUSES).exists() and not (
                flow_processes(self.serve_flows.pid)
            )

        if poll_until(db_tolerant(ended), self.args.deadline, f"the end of {phase.title}'s requests", 0.5):
            phase.settled_s = time.monotonic() - phase.back_at
        phase.statuses = retry_db(lambda: Counter(rows.values_list("status", flat=True)))

    def revive_check(self) -> None:
        """serve_flows exiting while Prefect is up is a finding, not an outage to wait out: say so, and go on."""
        if not self.serve_flows.running():
            say(f"  !! serve_flows exited with Prefect up:\n{tail(self.serve_flows.log, 15)}")
            self.launch_serve_flows()

    # -- the figures --

    def prefect_flow_runs(self) -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        from workflows.outbox import deployments

        runs: list = []
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(
                deployments.in_this_environment(deployments.ASSEMBLY_ANALYSIS)
            )
            while True:
                page = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                    limit=200,
                    offset=len(runs),
                )
                runs += page
                if len(page) < 200:
                    return runs

    def report(self) -> None:
        from django.db.models import Max, Sum

        from analyses.models import AssemblyAnalysisRequest
        from workflows.models import ClusterJob, Trigger
        from workflows.outbox import deployments

        args = self.args
        say()
        header = (
            f"{'phase':<22} {'POSTs':>5} {'201':>4} {'other':>12} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'burst s':>7} {'down s':>6} {'attempts down':>13} {'serve_flows':>11} {'back->dispatched s':>18} "
            f"{'back->ended s':>13}"
        )
        say(header)
        say("-" * len(header))
        for phase in self.phases:
            statuses = Counter(p.status for p in phase.posts)
            other = ", ".join(f"{s} {n}" for s, n in statuses.items() if s != "201") or "-"
            lat = phase.latencies()
            down = "-" if phase.outage is None else f"{phase.back_at - phase.down_at:.1f}"
            attempts = (
                "-" if phase.outage is None else f"{phase.attempts_down[0]} (max {phase.attempts_down[1]})"
            )
            alive = "-" if phase.outage is None else ("survived" if phase.serve_flows_alive else "EXITED")
            say(
                f"{phase.title:<22} {len(phase.posts):>5} {statuses['201']:>4} {other:>12} "
                f"{percentile(lat, 0.5):>7.1f} {percentile(lat, 0.99):>7.1f} {max(lat):>7.1f} "
                f"{phase.posted_s:>7.2f} {down:>6} {attempts:>13} {alive:>11} {fmt(phase.dispatched_s):>18} "
                f"{fmt(phase.settled_s):>13}"
            )
        say()

        requests = list(AssemblyAnalysisRequest.objects.values_list("pk", flat=True))
        runs = self.prefect_flow_runs()
        per_tag: Counter[str] = Counter()
        untagged = 0
        for run_ in runs:
            tags = [t for t in run_.tags if t.startswith("analyses.assemblyanalysisrequest:")]
            per_tag.update(tags)
            untagged += not tags
        counts = Counter(per_tag.get(self.label(pk), 0) for pk in requests)
        strangers = [t for t in per_tag if int(t.rsplit(":", 1)[1]) not in set(requests)]
        run_states = Counter(r.state.name if r.state else "?" for r in runs)
        triggers = Trigger.objects.filter(deployment_name=deployments.ASSEMBLY_ANALYSIS)
        totals = triggers.aggregate(total=Sum("attempts"), most=Max("attempts"))
        by_attempts = Counter(triggers.values_list("attempts", flat=True))
        undispatched = sum(1 for i in self.flow_run_ids(requests).values() if not i)
        exits = self.serve_flows_exits
        ledger = ClusterJob.objects.count()
        slurm = ClusterJob.objects.exclude(slurm_job_id__isnull=True).count()
        statuses = Counter(AssemblyAnalysisRequest.objects.values_list("status", flat=True))
        outages = [p for p in self.phases if p.outage]
        observer = [
            line[:8]
            for log in self.serve_flows_logs
            if log.exists()
            for line in log.read_text(errors="replace").splitlines()
            if "Cancellation polling task failed" in line
        ]
        figures = [
            ("requests", f"{len(requests)} (1 check + {len(self.phases)} x {args.posts}); {dict(statuses)}"),
            ("requests without flow_run_id", f"{undispatched}"),
            (
                "flow runs of the deployment",
                f"{len(runs)} for {len(requests)} requests; {dict(run_states)}"
                + (f"; {untagged} without a request tag" if untagged else "")
                + (f"; {len(strangers)} tags of no request" if strangers else ""),
            ),
            (
                "requests by flow runs",
                f"0: {counts[0]}, 1: {counts[1]}, >1: {sum(n for k, n in counts.items() if k > 1)}"
                + "".join(f" ({k}: {n})" for k, n in sorted(counts.items()) if k > 1),
            ),
            (
                "trigger attempts",
                f"sum {totals['total'] or 0}, max {totals['most'] or 0} over {triggers.count()} triggers; "
                + ", ".join(f"{n} with {k}" for k, n in sorted(by_attempts.items())),
            ),
            (
                "serve_flows",
                f"{len(exits)} exit(s)"
                + "".join(f"; pid {pid} exited (code {code})" for pid, _, code in exits)
                + f"; restarted by the benchmark after {sum(p.serve_flows_restarted for p in outages)} of "
                f"{len(outages)} outages",
            ),
            (
                "runner's cancellation observer",
                (
                    f"gave up {len(observer)} time(s), at {', '.join(observer)} (Prefect's 'Cancellation polling task "
                    "failed ... flow run cancellation will fail': not restarted while serve_flows lives)"
                )
                if observer
                else "alive",
            ),
            ("ledger rows, Slurm jobs", f"{ledger}, {slurm}"),
        ]
        sweeps, failures = self.log_events()
        phase_of = {i: p.key for p in self.phases for i in p.request_ids}
        for kind in ("new flow run", "rescheduled"):
            found = [(when, i) for when, k, i, _ in sweeps if k == kind]
            by_phase = Counter(phase_of.get(i, "check") for _, i in found)
            figures.append(
                (
                    f"sweep: {kind}",
                    f"{len(found)}"
                    + (f" ({', '.join(f'{k} {n}' for k, n in sorted(by_phase.items()))})" if found else "")
                    + "".join(
                        f"; {reason}: {n}"
                        for reason, n in Counter(r for _, k, _, r in sweeps if k == kind).most_common(3)
                    ),
                )
            )
        for error, stamps in sorted(failures.items()):
            gaps = [b - a for a, b in itertools.pairwise(stamps) if 0 < b - a < 10]
            figures.append(
                (
                    f"failed dispatches: {error}",
                    f"{len(stamps)}"
                    + (
                        f", one every {statistics.median(gaps):.2f} s in a round (median gap, {len(gaps)} gaps)"
                        if gaps
                        else ""
                    ),
                )
            )
        width = max(len(name) for name, _ in figures)
        for name, value in figures:
            say(f"{name:<{width}}  {value}")
        say()
        goals = []
        for phase in outages:
            p99 = percentile(phase.latencies(), 0.99)
            goals.append(
                (f"POST p99 <= {P99_GOAL_MS:.0f} ms, {phase.title}: {p99:.1f} ms", p99 <= P99_GOAL_MS)
            )
        for phase in outages:
            ok = sum(1 for p in phase.posts if p.status == "201")
            goals.append(
                (f"every POST 201, {phase.title}: {ok} / {len(phase.posts)}", ok == len(phase.posts))
            )
        goals.append(
            (
                f"exactly one flow run per request: {counts[1]} / {len(requests)}, {len(runs)} flow runs in all",
                counts[1] == len(requests) and len(runs) == len(requests),
            )
        )
        goals.append(
            (
                f"serve_flows lives through the outages: {sum(p.serve_flows_alive for p in outages)} / {len(outages)}",
                all(p.serve_flows_alive for p in outages) and not exits,
            )
        )
        for text, ok in goals:
            say_goal(ok, text)
        self.log_findings()

    def log_events(self) -> tuple[list[tuple[float, str, int, str]], dict[str, list[float]]]:
        """From serve_flows' logs: the sweep's new flow runs and reschedules (seconds of the day, kind, request,
        reason), and the times of failed dispatch attempts by error."""
        sweeps: list[tuple[float, str, int, str]] = []
        failures: dict[str, list[float]] = {}
        for log in self.serve_flows_logs:
            if not log.exists():
                continue
            for line in log.read_text(errors="replace").splitlines():
                stamp = _seconds(line[:12])
                if stamp is None:
                    continue
                if match := SWEEP_LINE.search(line):
                    kind = "new flow run" if match["kind"].startswith("new flow run") else "rescheduled"
                    sweeps.append((stamp, kind, int(match["request"]), match["reason"].strip()[:80]))
                elif match := DISPATCH_FAILED.search(line):
                    failures.setdefault(match["error"], []).append(stamp)
        return sweeps, {k: sorted(v) for k, v in failures.items()}

    # -- cleanup --

    def shutdown(self) -> None:
        self.watching.clear()
        if self.frozen and self.prefect is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.prefect.pid, signal.SIGCONT)
            self.frozen = False
        super().shutdown()


SWEEP_LINE = re.compile(
    r"workflows\.recovery - Request (?P<request>\d+): (?P<kind>new flow run \(generation \d+\)|rescheduled flow "
    r"run \S+) ?[:(](?P<reason>[^)]*)"
)
DISPATCH_FAILED = re.compile(r"workflows\.dispatch - Dispatch of .* failed \(attempt \d+\): (?P<error>\w+)")


def _seconds(stamp: str) -> float | None:
    """'10:02:06.380' -> seconds of the day."""
    try:
        hours, minutes, seconds = stamp.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
