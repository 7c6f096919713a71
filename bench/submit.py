"""Benchmark: what idempotent submission costs over a bare sbatch loop, and what a restarted process pays.

    .venv/bin/python bench/submit.py [--jobs 200] [--profile]

Phases, each against the real Slurm and a fresh PostgreSQL database, each starting from an idle queue:
  (a)  raw loop: `sbatch --parsable --no-requeue --wrap true`, N times (argument lists, no shell)
  (a2) SlurmClient.submit alone, N distinct specs: the client's own cost (script file, flags, environment), no DB
  (b)  SlurmJobs.submit_once of N distinct specs on a fresh ledger: the whole protocol
  (c)  the same N submit_once again, through a NEW SlurmJobs, SlurmClient and DB connection (a restarted process)
The throttle is set out of reach (max_active_jobs=10**6, submits_per_minute=10**6) so that it never waits; its two
counting queries still run on every submission and are part of (b). All jobs are cancelled at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import (  # noqa: E402
    QueryTimer,
    fresh_database,
    say,
    scancel,
    wait_for_slurm,
    wait_until_idle,
)

RATIO_B_A_GOAL = 1.25
RATIO_C_B_GOAL = 0.05


class TimedRunner:
    """subprocess.run for SlurmClient that also adds up the wall time of each command."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    def __call__(self, args, **kwargs):  # noqa: ANN001 - same signature as subprocess.run
        start = time.perf_counter()
        try:
            return subprocess.run(args, **kwargs)  # noqa: S603 - argument list built by SlurmClient
        finally:
            self.seconds[args[0]] += time.perf_counter() - start


class StepTimer:
    """Wall time of each ledger step of submit_once (through a thin proxy of the ledger) and of each COMMIT."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def add(self, step: str, since: float) -> None:
        self.seconds[step] += time.perf_counter() - since
        self.calls[step] += 1

    def wrap_ledger(self, ledger):  # noqa: ANN001, ANN201 - any JobLedger in, the same interface out
        timer = self

        class TimedLedger:
            def __getattr__(self, name: str):  # noqa: ANN204
                attribute = getattr(ledger, name)
                if name == "locked":
                    return timer._timed_locked(attribute)
                if not callable(attribute):
                    return attribute

                def timed(*args, **kwargs):  # noqa: ANN202
                    start = time.perf_counter()
                    try:
                        return attribute(*args, **kwargs)
                    finally:
                        timer.add(f"ledger.{name}()", start)

                return timed

        return TimedLedger()

    def _timed_locked(self, locked):  # noqa: ANN001, ANN202
        timer = self

        @contextlib.contextmanager
        def timed_locked(*args, **kwargs):  # noqa: ANN202
            manager = locked(*args, **kwargs)
            start = time.perf_counter()
            row = manager.__enter__()
            timer.add("ledger.locked() enter: BEGIN, SELECT FOR UPDATE", start)
            set_job_id = row.set_job_id

            def timed_set_job_id(job_id: str) -> None:
                begin = time.perf_counter()
                set_job_id(job_id)
                timer.add("locked row .set_job_id(): UPDATE", begin)

            row.set_job_id = timed_set_job_id
            try:
                yield row
            except BaseException:
                if not manager.__exit__(*sys.exc_info()):
                    raise
            else:
                start = time.perf_counter()
                manager.__exit__(None, None, None)
                timer.add("ledger.locked() exit: COMMIT", start)

        return timed_locked

    @contextlib.contextmanager
    def timing_commits(self, connection):  # noqa: ANN001, ANN201
        commit = connection.commit

        def timed_commit() -> None:
            start = time.perf_counter()
            try:
                commit()
            finally:
                self.add("COMMIT (of either transaction)", start)

        connection.commit = timed_commit
        try:
            yield
        finally:
            del connection.commit


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200, help="submissions per phase (default 200)")
    parser.add_argument("--database", default="emgapi_bench_submit", help="dropped and recreated at start")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="finished jobs put in the ledger first, as after months of service (default 0: an empty ledger)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile a further submit_once batch even if (b) meets its goal",
    )
    args = parser.parse_args()
    n = args.jobs

    wait_for_slurm()
    where = fresh_database(args.database)

    from django.db import connection, connections

    from prefect_utils.jobs import SlurmJobs, ThrottleConfig
    from prefect_utils.scheduler import JobSpec, SlurmClient
    from workflows.ledger import DjangoJobLedger

    throttle = ThrottleConfig(max_active_jobs=10**6, submits_per_minute=10**6)
    run_id = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="emgapi-bench-submit-"))
    all_ids: list[str] = []

    def specs(phase: str) -> list[JobSpec]:
        workdir = tmp / phase
        return [
            JobSpec(
                name=f"bench-{phase}-{i}",
                script="true",
                workdir=str(workdir),
                time_limit_minutes=5,
                environment={"BENCH_RUN": run_id, "BENCH_INDEX": str(i)},
            )
            for i in range(n)
        ]

    def settle(ids: list[str], what: str) -> None:
        """Cancel a phase's jobs and wait for an idle queue, so the next phase starts where this one did."""
        scancel(ids)
        wait_until_idle(ids, what=what)

    say(f"bench/submit.py: {n} jobs per phase; database {where} (fresh); Slurm: the local cluster")
    say(f"ledger before (b): {args.history} finished jobs of earlier months (--history)")
    if args.history:
        fill_history(args.history)
        say(f"  plan of ledger.count_submitted_since() on it: {count_since_plan()}")
    say(
        f"machine baseline: one SELECT 1 round trip through Django {1000 * select_one_seconds(connection):.2f} ms (median)"
    )
    say(
        f"throttle out of reach: ThrottleConfig(max_active_jobs=10**6, submits_per_minute=10**6); run {run_id}"
    )
    say()
    try:
        # (a) the floor: a bare sbatch loop.
        (tmp / "a").mkdir()
        start = time.perf_counter()
        raw_ids = []
        for _ in range(n):
            proc = subprocess.run(  # noqa: S603
                ["sbatch", "--parsable", "--no-requeue", f"--chdir={tmp / 'a'}", "--wrap", "true"],
                capture_output=True,
                text=True,
                check=True,
            )
            raw_ids.append(proc.stdout.strip().split(";", 1)[0])
        t_a = time.perf_counter() - start
        all_ids += raw_ids
        settle(raw_ids, "phase (a) jobs")

        # (a2) the client alone: what submit_once must at least pay for its sbatch.
        runner_a2 = TimedRunner()
        client_a2 = SlurmClient(runner=runner_a2)
        a2_specs = specs("a2")
        start = time.perf_counter()
        client_ids = [client_a2.submit(spec, f"bench-a2-{run_id}-{i}") for i, spec in enumerate(a2_specs)]
        t_a2 = time.perf_counter() - start
        all_ids += client_ids
        settle(client_ids, "phase (a2) jobs")

        # (b) fresh idempotent submissions through the ledger.
        runner_b = TimedRunner()
        client_b = SlurmClient(runner=runner_b)
        steps_b = StepTimer()
        jobs_b = SlurmJobs(steps_b.wrap_ledger(DjangoJobLedger()), client_b, throttle=throttle)
        b_specs = specs("b")
        queries_b = QueryTimer()
        with connection.execute_wrapper(queries_b), steps_b.timing_commits(connection):
            start = time.perf_counter()
            records_b = [jobs_b.submit_once(spec) for spec in b_specs]
            t_b = time.perf_counter() - start
        b_ids = [r.job_id for r in records_b]
        all_ids += b_ids
        settle(b_ids, "phase (b) jobs")

        # (c) the same submissions from a "restarted process": new objects, new database connection.
        connections.close_all()
        client_c = SlurmClient(runner=TimedRunner())
        jobs_c = SlurmJobs(DjangoJobLedger(), client_c, throttle=throttle)
        queries_c = QueryTimer()
        start = time.perf_counter()
        with connection.execute_wrapper(queries_c):
            records_c = [jobs_c.submit_once(spec) for spec in b_specs]
        t_c = time.perf_counter() - start
        same = sum(1 for rb, rc in zip(records_b, records_c, strict=True) if rb.job_id == rc.job_id)

        ratio_ba = t_b / t_a
        ratio_cb = t_c / t_b
        per = lambda seconds: 1000 * seconds / n  # noqa: E731
        say(
            f"{'phase':<44} {'total s':>8} {'ms/job':>8} {'sbatch':>7} {'squeue':>7} {'sacct':>6} {'SQL/job':>8}"
        )
        say(
            f"{'(a)  raw sbatch --wrap true loop':<44} {t_a:8.2f} {per(t_a):8.1f} {n:7d} {0:7d} {0:6d} {'-':>8}"
        )
        say(
            f"{'(a2) SlurmClient.submit only (no ledger)':<44} {t_a2:8.2f} {per(t_a2):8.1f} "
            f"{client_a2.calls['sbatch']:7d} {client_a2.calls['squeue']:7d} {client_a2.calls['sacct']:6d} {'-':>8}"
        )
        say(
            f"{'(b)  submit_once, fresh':<44} {t_b:8.2f} {per(t_b):8.1f} {client_b.calls['sbatch']:7d} "
            f"{client_b.calls['squeue']:7d} {client_b.calls['sacct']:6d} {queries_b.count / n:8.1f}"
        )
        say(
            f"{'(c)  submit_once again, restarted process':<44} {t_c:8.2f} {per(t_c):8.1f} "
            f"{client_c.calls['sbatch']:7d} {client_c.calls['squeue']:7d} {client_c.calls['sacct']:6d} "
            f"{queries_c.count / n:8.1f}"
        )
        say()
        say(
            f"(c) returned the job id of (b) for {same}/{n} specs; sbatch calls in (c): {client_c.calls['sbatch']} (must be 0)"
        )
        say(
            f"(c) per job: SQL execute {per(queries_c.seconds):.2f} ms ({queries_c.kinds_per(n)}), "
            f"ORM/Python and the one reconnect {per(t_c - queries_c.seconds):.2f} ms"
        )
        say()
        sbatch_b = runner_b.seconds["sbatch"]
        say(
            "where (b)'s time goes (ms per job; steps measured around the ledger calls, COMMITs inside them):"
        )
        for step in (
            "ledger.get_or_create()",
            "ledger.count_active()",
            "ledger.count_submitted_since()",
            "ledger.locked() enter: BEGIN, SELECT FOR UPDATE",
            "locked row .set_job_id(): UPDATE",
            "ledger.locked() exit: COMMIT",
        ):
            say(f"  {step:<50} {per(steps_b.seconds[step]):6.2f}   ({steps_b.calls[step] / n:.0f} call/job)")
        say(
            f"  {'SlurmClient.submit: sbatch subprocess':<50} {per(sbatch_b):6.2f}   (in (a2): {per(runner_a2.seconds['sbatch']):.2f})"
        )
        ledger_total = sum(steps_b.seconds[s] for s in steps_b.seconds if not s.startswith("COMMIT"))
        rest = t_b - ledger_total - sbatch_b
        say(f"  {'rest (key hash, script file, environment, Python)':<50} {per(rest):6.2f}")
        commits = steps_b.seconds["COMMIT (of either transaction)"]
        say(
            f"  the ledger steps together: {per(ledger_total):.2f} ms = SQL execute {per(queries_b.seconds):.2f} "
            f"({queries_b.count / n:.0f} statements: {queries_b.kinds_per(n)})"
        )
        say(
            f"    + COMMIT {per(commits):.2f} ({steps_b.calls['COMMIT (of either transaction)'] / n:.0f}/job) "
            f"+ ORM/Python {per(ledger_total - queries_b.seconds - commits):.2f}"
        )
        say()
        verdict_ba = "meets" if ratio_ba <= RATIO_B_A_GOAL else "MISSES"
        verdict_cb = "meets" if ratio_cb <= RATIO_C_B_GOAL else "MISSES"
        say(f"ratio (b)/(a)  = {ratio_ba:.3f}   goal <= {RATIO_B_A_GOAL}: {verdict_ba}")
        say(f"ratio (a2)/(a) = {t_a2 / t_a:.3f}   (the client's own share)")
        say(f"ratio (c)/(b)  = {ratio_cb:.4f}  goal <= {RATIO_C_B_GOAL}: {verdict_cb}")

        if args.profile or ratio_ba > RATIO_B_A_GOAL:
            say()
            say(f"profiling another {n} fresh submit_once calls (cProfile adds its own overhead) ...")
            p_specs = specs("profile")
            jobs_p = SlurmJobs(DjangoJobLedger(), SlurmClient(), throttle=throttle)
            profiler = cProfile.Profile()
            profiler.enable()
            records_p = [jobs_p.submit_once(spec) for spec in p_specs]
            profiler.disable()
            p_ids = [r.job_id for r in records_p]
            all_ids += p_ids
            print_profile(profiler, n)
            settle(p_ids, "profiled jobs")
    finally:
        scancel(all_ids)
        wait_until_idle(all_ids, what="benchmark jobs")
        shutil.rmtree(tmp, ignore_errors=True)
        say()
        say(f"cancelled/cleaned {len(all_ids)} jobs; queue idle; removed {tmp}")
    return 0


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


def select_one_seconds(connection, samples: int = 200) -> float:  # noqa: ANN001
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
        "compiler.py:1593",
        "query.py:611",
        "query.py:938",
        "base.py:830",
        "poll'",
    )
    say("cProfile, our code and the calls that wait (ms per job, cumulative / own):")
    say(f"  {'cum':>7} {'own':>7} {'calls/job':>9}  function")
    for cumtime, tottime, ncalls, where in sorted(rows, reverse=True):
        if any(marker in where for marker in interesting) and cumtime / n > 0.1e-3:
            say(f"  {1000 * cumtime / n:7.2f} {1000 * tottime / n:7.2f} {ncalls / n:9.1f}  {where}")
    say("cProfile, top own time (ms per job):")
    for cumtime, tottime, ncalls, where in sorted(rows, key=lambda r: r[1], reverse=True)[:8]:
        say(f"  {1000 * cumtime / n:7.2f} {1000 * tottime / n:7.2f} {ncalls / n:9.1f}  {where}")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


if __name__ == "__main__":
    raise SystemExit(main())
