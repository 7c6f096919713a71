"""Benchmark: what batched idempotent submission costs over a bare sbatch loop, and what a rerun pass pays.

    .venv/bin/python bench/submit.py [--jobs 200] [--small 10] [--profile] [--history ROWS]

The goals (issue): a pass submits all its ready steps together, their ledger rows committed in one transaction
before any sbatch and the job ids recorded in one transaction after: at most 1.25x a raw sbatch loop for 200
ready steps. A rerun pass over 200 submitted steps reads the plan and the ledger in a constant number of
queries: at most 0.05x a fresh submission, and no sbatch.

Phases, each against the real Slurm and a fresh PostgreSQL database, each starting from an idle queue (the jobs
of the previous phase are cancelled and waited for):
  (a)  raw loop: `sbatch --parsable --no-requeue --wrap true`, N times (argument lists, no shell)
  (a2) SlurmClient.submit alone, N distinct specs: the client's own cost (script file, flags, environment), no DB
  (b)  ONE SlurmJobs.submit() batch of N distinct submissions on a fresh ledger: the whole protocol
  (c)  the same batch again, through a NEW SlurmJobs, SlurmClient and DB connection (a restarted process):
       0 sbatch, the job ids of (b)
  (b1) for comparison, SlurmJobs.submit_once of N other distinct specs one at a time (a batch of one each)
  (d1) reconciler pass (workflows.orchestration.reconciler.reconcile_once) over a new request whose pipeline plans N
       independent one-step runs (`true`): freezes the plan, submits the N steps in one batch
  (d2) the same pass again through a NEW SlurmJobs, SlurmClient and DB connection: must sbatch nothing
Then the SQL statement counts of (b), (c), (d1), (d2) again with `--small` submissions/steps, to show that they do
not grow with N. The throttle is out of reach (ThrottleConfig(max_active_jobs=10**6, submits_per_minute=10**6));
SlurmJobs.submit does not consult it, the reconciler's `capacity()` (two counting queries) does once per pass
that submits. Nothing is sent to Prefect: no service loop runs to dispatch the requests' triggers.
All jobs are cancelled at the end.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import QueryTimer, say, verdict
from bench._setup import (
    add_fresh_database,
    bench_parser,
    fresh_database,
    scancel,
    wait_for_slurm,
    wait_until_idle,
)

RATIO_B_A_GOAL = 1.25
RATIO_RERUN_GOAL = 0.05


class TimedRunner:
    """subprocess.run for SlurmClient that also adds up the wall time of each command."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    def __call__(self, args, **kwargs):
        start = time.perf_counter()
        try:
            return subprocess.run(args, **kwargs)
        finally:
            self.seconds[args[0]] += time.perf_counter() - start


class StepTimer:
    """Wall time of each ledger step of SlurmJobs.submit (through a thin proxy of the ledger) and of each COMMIT."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def add(self, step: str, since: float) -> None:
        self.seconds[step] += time.perf_counter() - since
        self.calls[step] += 1

    def wrap_ledger(self, ledger):
        timer = self

        class TimedLedger:
            def __getattr__(self, name: str):
                attribute = getattr(ledger, name)
                if name == "locked":
                    return timer._timed_locked(attribute)
                if not callable(attribute):
                    return attribute

                def timed(*args, **kwargs):
                    start = time.perf_counter()
                    try:
                        return attribute(*args, **kwargs)
                    finally:
                        timer.add(f"ledger.{name}()", start)

                return timed

        return TimedLedger()

    def _timed_locked(self, locked):
        timer = self

        @contextlib.contextmanager
        def timed_locked(*args, **kwargs):
            manager = locked(*args, **kwargs)
            start = time.perf_counter()
            batch = manager.__enter__()
            timer.add("ledger.locked() enter", start)
            try:
                yield batch
            except BaseException:
                if not manager.__exit__(*sys.exc_info()):
                    raise
            else:
                start = time.perf_counter()
                manager.__exit__(None, None, None)
                timer.add("ledger.locked() exit", start)

        return timed_locked

    @contextlib.contextmanager
    def timing_commits(self, connection):
        commit = connection.commit

        def timed_commit() -> None:
            start = time.perf_counter()
            try:
                commit()
            finally:
                self.add("COMMIT", start)

        connection.commit = timed_commit
        try:
            yield
        finally:
            del connection.commit


@dataclass
class Phase:
    """One measured row of the table."""

    label: str
    seconds: float
    jobs: int
    calls: Counter[str] = field(default_factory=Counter)
    queries: QueryTimer | None = None

    def row(self, n: int) -> str:
        sql = "-" if self.queries is None else str(self.queries.count)
        return (
            f"{self.label:<46} {self.seconds:8.3f} {1000 * self.seconds / n:8.2f} {self.calls['sbatch']:7d} "
            f"{self.calls['squeue']:7d} {self.calls['sacct']:6d} {sql:>5}"
        )


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="submissions per phase (default 200)")
    parser.add_argument(
        "--small",
        type=int,
        default=10,
        help="the smaller batch whose SQL counts are compared with N's (default 10; 0 skips it)",
    )
    add_fresh_database(parser, "emgapi_bench_submit")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="finished jobs put in the ledger first, as after months of service (default 0: an empty ledger)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile a further submit() batch even if (b) meets its goal",
    )
    parser.add_argument(
        "--skip-one-at-a-time", action="store_true", help="leave out the (b1) submit_once comparison row"
    )
    args = parser.parse_args()
    n = args.jobs

    wait_for_slurm()
    where = fresh_database(args.database)

    from django.db import connection, connections

    from prefect_utils.job_spec import JobSpec
    from prefect_utils.keys import job_key
    from prefect_utils.ledger import JobSubmission
    from prefect_utils.slurm_client import SlurmClient
    from prefect_utils.submission import SlurmJobs, ThrottleConfig
    from workflows.models import ClusterJob
    from workflows.orchestration.ledger import DjangoJobLedger

    throttle = ThrottleConfig(max_active_jobs=10**6, submits_per_minute=10**6)
    run_id = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="emgapi-bench-submit-"))
    all_ids: list[str] = []

    def specs(phase: str, count: int = n) -> list[JobSpec]:
        return [
            JobSpec(
                name=f"bench-{phase}-{i}",
                script="true",
                workdir=str(tmp / phase),
                time_limit_minutes=5,
                environment={"BENCH_RUN": run_id, "BENCH_INDEX": str(i)},
            )
            for i in range(count)
        ]

    def submissions(phase: str, count: int = n) -> list[JobSubmission]:
        return [JobSubmission(job_key(spec, {}), 1, spec.canonical()) for spec in specs(phase, count)]

    def new_jobs(ledger=None, runner=None) -> SlurmJobs:
        client = SlurmClient(runner=runner or TimedRunner())
        return SlurmJobs(ledger or DjangoJobLedger(), client, throttle=throttle)

    def settle(ids: list[str], what: str) -> None:
        """Cancel a phase's jobs and wait for an idle queue, so the next phase starts where this one did."""
        all_ids.extend(ids)
        scancel(ids)
        wait_until_idle(ids, what=what)

    def restart() -> None:
        """What a new process starts with: no open database connection (the next query reconnects)."""
        connections.close_all()

    say(f"bench/submit.py: N = {n} per phase; database {where} (fresh); Slurm: the local cluster")
    say(f"ledger before (b): {args.history} finished jobs of earlier months (--history)")
    if args.history:
        fill_history(args.history)
        say(f"  plan of ledger.count_submitted_since() on it: {count_since_plan()}")
    say(
        f"machine baseline: one SELECT 1 round trip through Django {1000 * select_one_seconds(connection):.2f} ms "
        f"(median); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    say(
        f"throttle out of reach: ThrottleConfig(max_active_jobs=10**6, submits_per_minute=10**6); run {run_id}"
    )
    say()
    phases: dict[str, Phase] = {}
    small: dict[str, int] = {}
    try:
        # (a) the floor: a bare sbatch loop.
        (tmp / "a").mkdir()
        start = time.perf_counter()
        raw_ids = []
        for _ in range(n):
            proc = subprocess.run(
                ["sbatch", "--parsable", "--no-requeue", f"--chdir={tmp / 'a'}", "--wrap", "true"],
                capture_output=True,
                text=True,
                check=True,
            )
            raw_ids.append(proc.stdout.strip().split(";", 1)[0])
        phases["a"] = Phase(
            "(a)  raw sbatch --wrap true loop", time.perf_counter() - start, n, Counter(sbatch=n)
        )
        settle(raw_ids, "phase (a) jobs")

        # (a2) the client alone: what submit() must at least pay for its sbatch calls.
        runner_a2 = TimedRunner()
        client_a2 = SlurmClient(runner=runner_a2)
        a2_specs = specs("a2")
        start = time.perf_counter()
        client_ids = [client_a2.submit(spec, f"bench-a2-{run_id}-{i}") for i, spec in enumerate(a2_specs)]
        phases["a2"] = Phase(
            "(a2) SlurmClient.submit only (no ledger)", time.perf_counter() - start, n, client_a2.calls
        )
        settle(client_ids, "phase (a2) jobs")

        # (b) one batch of fresh idempotent submissions through the ledger.
        steps_b = StepTimer()
        runner_b = TimedRunner()
        jobs_b = new_jobs(steps_b.wrap_ledger(DjangoJobLedger()), runner_b)
        batch_b = submissions("b")
        queries_b = QueryTimer()
        with connection.execute_wrapper(queries_b), steps_b.timing_commits(connection):
            start = time.perf_counter()
            records_b = jobs_b.submit(batch_b)
            t_b = time.perf_counter() - start
        phases["b"] = Phase(f"(b)  submit(), one batch of {n}, fresh", t_b, n, jobs_b.client.calls, queries_b)
        b_ids = [r.job_id for r in records_b]
        if None in b_ids:
            raise SystemExit(f"(b) left {b_ids.count(None)} submissions without a job id")
        settle(b_ids, "phase (b) jobs")

        # (c) the same batch from a "restarted process": new objects, new database connection.
        restart()
        steps_c = StepTimer()
        jobs_c = new_jobs(steps_c.wrap_ledger(DjangoJobLedger()))
        queries_c = QueryTimer()
        with connection.execute_wrapper(queries_c), steps_c.timing_commits(connection):
            start = time.perf_counter()
            # What the first query of a restarted process pays, timed on its own.
            connection.ensure_connection()
            steps_c.add("reconnect", start)
            records_c = jobs_c.submit(batch_b)
            t_c = time.perf_counter() - start
        phases["c"] = Phase(
            "(c)  the same batch again, restarted process", t_c, n, jobs_c.client.calls, queries_c
        )
        same = sum(1 for rb, rc in zip(records_b, records_c, strict=True) if rb.job_id == rc.job_id)

        # (b1) the old way, for comparison: one submission per call.
        if not args.skip_one_at_a_time:
            jobs_b1 = new_jobs()
            queries_b1 = QueryTimer()
            b1_specs = specs("b1")
            with connection.execute_wrapper(queries_b1):
                start = time.perf_counter()
                records_b1 = [jobs_b1.submit_once(spec) for spec in b1_specs]
                t_b1 = time.perf_counter() - start
            phases["b1"] = Phase(
                f"(b1) submit_once x {n}, one at a time, fresh", t_b1, n, jobs_b1.client.calls, queries_b1
            )
            settle([r.job_id for r in records_b1 if r.job_id], "phase (b1) jobs")

        # (d1) a reconciler pass that plans and submits N steps; (d2) the rerun pass in a restarted process.
        d1, d2, request_d = reconciler_passes(n, tmp / "d", new_jobs, restart, settle, "d")
        phases["d1"], phases["d2"] = d1, d2

        # The same SQL counts at a smaller size: constant in N, or not.
        if args.small:
            jobs_s = new_jobs()
            batch_s = submissions("small-b", args.small)
            queries = QueryTimer()
            with connection.execute_wrapper(queries):
                records_s = jobs_s.submit(batch_s)
            small["b"] = queries.count
            settle([r.job_id for r in records_s if r.job_id], "small batch jobs")
            restart()
            queries = QueryTimer()
            with connection.execute_wrapper(queries):
                new_jobs().submit(batch_s)
            small["c"] = queries.count
            s1, s2, _ = reconciler_passes(args.small, tmp / "small-d", new_jobs, restart, settle, "sd")
            small["d1"], small["d2"] = s1.queries.count, s2.queries.count

        say(f"{'phase':<46} {'total s':>8} {'ms/job':>8} {'sbatch':>7} {'squeue':>7} {'sacct':>6} {'SQL':>5}")
        for name in ("a", "a2", "b", "c", "b1", "d1", "d2"):
            if name in phases:
                say(phases[name].row(n))
        say()
        c_sbatch = phases["c"].calls["sbatch"]
        d2_sbatch = phases["d2"].calls["sbatch"]
        say(
            f"(c) returned the job id of (b) for {same}/{n} submissions; sbatch calls in (c): {c_sbatch} (must be 0)"
        )
        say(
            f"(c) SQL: {queries_c.count} statements ({queries_c.kinds_text()}), executing {1000 * queries_c.seconds:.1f} ms; "
            f"{steps_c.calls['COMMIT']} COMMIT {1000 * steps_c.seconds['COMMIT']:.1f} ms"
        )
        say(
            "(c) steps, ms: "
            + ", ".join(
                f"{step} {1000 * steps_c.seconds[step]:.1f}"
                for step in (
                    "reconnect",
                    "ledger.insert_missing()",
                    "ledger.locked() enter",
                    "ledger.locked() exit",
                    "ledger.records()",
                )
            )
        )
        say(
            f"(d1) submitted {len(d1.result.submitted)} steps; (d2) submitted {len(d2.result.submitted)}, "
            f"sbatch calls in (d2): {d2_sbatch} (must be 0), waiting={d2.result.waiting}; "
            f"ledger rows of the request: {ClusterJob.objects.filter(request_id=request_d).count()}"
        )
        say(f"(d1) SQL: {d1.queries.count} statements ({d1.queries.kinds_text()})")
        say(
            f"(d2) SQL: {d2.queries.count} statements ({d2.queries.kinds_text()}), executing {1000 * d2.queries.seconds:.1f} ms"
        )
        if small:
            large = {
                "b": queries_b.count,
                "c": queries_c.count,
                "d1": d1.queries.count,
                "d2": d2.queries.count,
            }
            compared = ", ".join(f"({name}) {small[name]} vs {large[name]}" for name in large)
            constant = "constant in N" if small == large else "NOT constant in N"
            say(f"SQL statements with {args.small} instead of {n}: {compared}  -> {constant}")
        say()
        sbatch_b = runner_b.seconds["sbatch"]
        per = lambda seconds: 1000 * seconds / n  # noqa: E731
        say("where (b)'s time goes (ms for the batch, and per job; steps timed around the ledger calls):")
        for step, what in (
            ("ledger.insert_missing()", "INSERT ... ON CONFLICT DO NOTHING, COMMIT"),
            ("ledger.locked() enter", "BEGIN, SELECT FOR UPDATE"),
            ("ledger.locked() exit", "bulk UPDATE of the job ids, COMMIT"),
            ("ledger.records()", "SELECT"),
        ):
            say(
                f"  {step + ': ' + what:<66} {1000 * steps_b.seconds[step]:8.2f} {per(steps_b.seconds[step]):6.2f}"
                f"   ({steps_b.calls[step]} call)"
            )
        say(
            f"  {'SlurmClient.submit: the sbatch subprocesses':<66} {1000 * sbatch_b:8.2f} {per(sbatch_b):6.2f}"
            f"   (in (a2): {per(runner_a2.seconds['sbatch']):.2f}/job)"
        )
        ledger_total = sum(steps_b.seconds[s] for s in steps_b.seconds if s != "COMMIT")
        rest = t_b - ledger_total - sbatch_b
        say(f"  {'rest (key, script files, environment, Python)':<66} {1000 * rest:8.2f} {per(rest):6.2f}")
        commits = steps_b.seconds["COMMIT"]
        say(
            f"  the ledger together: {1000 * ledger_total:.1f} ms = SQL execute {1000 * queries_b.seconds:.1f} "
            f"({queries_b.count} statements: {queries_b.kinds_text()}) + {steps_b.calls['COMMIT']} COMMIT "
            f"{1000 * commits:.1f} + ORM/Python {1000 * (ledger_total - queries_b.seconds - commits):.1f}"
        )
        say()
        t_a = phases["a"].seconds
        ratio_ba = t_b / t_a
        ratio_cb = phases["c"].seconds / t_b
        ratio_d = d2.seconds / d1.seconds
        say(
            f"ratio (b)/(a)   = {ratio_ba:.3f}   goal <= {RATIO_B_A_GOAL}: {verdict(ratio_ba <= RATIO_B_A_GOAL)}"
        )
        say(f"ratio (a2)/(a)  = {phases['a2'].seconds / t_a:.3f}   (the client's own share)")
        say(
            f"ratio (b)/(a2)  = {t_b / phases['a2'].seconds:.3f}   (the ledger's share over the client's sbatch)"
        )
        if "b1" in phases:
            say(f"ratio (b1)/(a)  = {phases['b1'].seconds / t_a:.3f}   (one at a time, for comparison)")
        say(
            f"ratio (d1)/(a)  = {d1.seconds / t_a:.3f}   (a whole first pass: plan frozen, N steps submitted)"
        )
        say(
            f"ratio (c)/(b)   = {ratio_cb:.4f}  goal <= {RATIO_RERUN_GOAL}, 0 sbatch: "
            f"{verdict(ratio_cb <= RATIO_RERUN_GOAL and c_sbatch == 0 and same == n)}"
        )
        say(
            f"ratio (d2)/(d1) = {ratio_d:.4f}  goal <= {RATIO_RERUN_GOAL}, 0 sbatch: "
            f"{verdict(ratio_d <= RATIO_RERUN_GOAL and d2_sbatch == 0 and not d2.result.submitted)}"
        )
        say(f"ratio (d2)/(b)  = {d2.seconds / t_b:.4f}  (the rerun pass against the bare batch)")

        if args.profile or ratio_ba > RATIO_B_A_GOAL:
            say()
            say(f"profiling another fresh batch of {n} (cProfile adds its own overhead) ...")
            batch_p = submissions("profile")
            jobs_p = new_jobs()
            profiler = cProfile.Profile()
            profiler.enable()
            records_p = jobs_p.submit(batch_p)
            profiler.disable()
            print_profile(profiler, n)
            settle([r.job_id for r in records_p if r.job_id], "profiled jobs")
    finally:
        with contextlib.suppress(Exception):
            # Whatever this run submitted, even if it stopped half-way (not the fake ids of --history).
            all_ids.extend(
                ClusterJob.objects.filter(name__startswith="bench-")
                .exclude(slurm_job_id=None)
                .values_list("slurm_job_id", flat=True)
            )
        scancel(all_ids)
        wait_until_idle(all_ids, what="benchmark jobs")
        shutil.rmtree(tmp, ignore_errors=True)
        say()
        say(f"cancelled/cleaned {len(set(all_ids))} jobs; queue idle; removed {tmp}")
    return 0


@dataclass
class PassPhase(Phase):
    result: object = None


def reconciler_passes(n: int, workdir: Path, new_jobs, restart, settle, tag: str):
    """A request whose pipeline plans `n` independent one-step runs; a first pass and a rerun pass over it."""
    from django.db import connection

    from analyses.models import AssemblyAnalysisRequest
    from prefect_utils.job_spec import JobSpec
    from workflows.models import ClusterJob
    from workflows.orchestration.plans import PlannedStep, PlanProposal
    from workflows.orchestration.reconciler import reconcile_once

    class BenchPipeline:
        """n runs of one `true` step each, all ready at once; nothing to ingest."""

        name = "bench"
        version = "1"

        def propose_plan(self, request, plan_uid: str) -> PlanProposal:
            return PlanProposal(
                steps=[
                    PlannedStep(
                        run_id=None,
                        run_accession=f"BENCH{i:06d}",
                        step="true",
                        spec=JobSpec(
                            name=f"bench-{tag}-{i}",
                            script="true",
                            workdir=str(workdir / plan_uid),
                            time_limit_minutes=5,
                            environment={"BENCH_INDEX": str(i)},
                        ),
                    )
                    for i in range(n)
                ],
                rejected={},
            )

        def ingested_runs(self, request) -> set[str]:
            return set()

        def ingest(self, request, steps) -> dict:
            return {}

    pipeline = BenchPipeline()
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    passes = []
    for label in (
        f"(d1) reconciler pass: plan + submit {n} steps",
        "(d2) reconciler rerun pass, restarted process",
    ):
        jobs = new_jobs()
        queries = QueryTimer()
        with connection.execute_wrapper(queries):
            start = time.perf_counter()
            result = reconcile_once(request.pk, pipeline=pipeline, jobs=jobs)
            seconds = time.perf_counter() - start
        passes.append(PassPhase(label, seconds, n, jobs.client.calls, queries, result))
        ids = list(
            ClusterJob.objects.filter(request=request)
            .exclude(slurm_job_id=None)
            .values_list("slurm_job_id", flat=True)
        )
        settle(ids, "reconciler pass jobs")
        restart()
    return passes[0], passes[1], request.pk


def fill_history(rows: int) -> None:
    """Finished ledger rows submitted long ago: what every query of the submit path runs against in production."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from workflows.models import ClusterJob

    long_ago = timezone.now() - timedelta(days=90)
    for start in range(0, rows, 10_000):
        ClusterJob.objects.bulk_create(
            [
                ClusterJob(
                    key=f"history-{i}",
                    attempt=1,
                    name=f"history-{i}",
                    spec={"name": f"history-{i}"},
                    slurm_job_id=str(1_000_000 + i),
                    state="COMPLETED",
                    submitted_at=long_ago,
                )
                for i in range(start, min(start + 10_000, rows))
            ]
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflows_clusterjob")


def count_since_plan() -> str:
    from datetime import timedelta

    from django.utils import timezone

    from workflows.models import ClusterJob

    plan = ClusterJob.objects.filter(submitted_at__gte=timezone.now() - timedelta(minutes=1)).explain()
    scans = [line.strip(" ->") for line in plan.splitlines() if "Scan" in line]
    return "; ".join(scans) or plan.splitlines()[0]


def select_one_seconds(connection, samples: int = 200) -> float:
    times = []
    with connection.cursor() as cursor:
        for _ in range(samples):
            start = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_profile(profiler: cProfile.Profile, n: int) -> None:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        rows.append((cumtime, tottime, ncalls, f"{_short(filename)}:{line}({name})"))
    interesting = (
        "prefect_utils/",
        "workflows/",
        "subprocess.py:506",
        "psycopg/connection.py",
        "transaction.py",
        "query.py",
        "poll'",
    )
    say("cProfile, our code and the calls that wait (ms per job, cumulative / own):")
    say(f"  {'cum':>7} {'own':>7} {'calls/job':>9}  function")
    for cumtime, tottime, ncalls, where in sorted(rows, reverse=True):
        if any(marker in where for marker in interesting) and cumtime / n > 0.1e-3:
            say(f"  {1000 * cumtime / n:7.2f} {1000 * tottime / n:7.2f} {ncalls / n:9.2f}  {where}")
    say("cProfile, top own time (ms per job):")
    for cumtime, tottime, ncalls, where in sorted(rows, key=lambda r: r[1], reverse=True)[:8]:
        say(f"  {1000 * cumtime / n:7.2f} {1000 * tottime / n:7.2f} {ncalls / n:9.2f}  {where}")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


if __name__ == "__main__":
    raise SystemExit(main())
