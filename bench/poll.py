"""Benchmark: the shared poller's scheduler calls and CPU per poll interval, as the number of waiting jobs grows.

    .venv/bin/python bench/poll.py [--sizes 1,100,1000] [--rounds 5] [--sleepers 1]

The poller's promise (DESIGN.md): one squeue call, plus at most one sacct call for the jobs that left the queue,
per poll interval for the whole service, however many jobs wait. Every ledger row here carries the id of a REAL
Slurm job, so both commands answer about real records; two scenarios per N cover the two paths:

  queue       every job is in the controller's queue, so squeue answers for all and sacct must not run:
              `--sleepers` real `sleep` jobs RUNNING on the node, the rest real jobs submitted with `--hold`
              (PENDING until cancelled, no CPU used), one sbatch each.
  left-queue  the jobs have left the queue: squeue no longer knows them (they ended more than MinJobAge ago), so
              the one sacct call must answer for all of them. The ids are real finished jobs taken from
              accounting (the cluster's own history: earlier benchmark and test jobs); if accounting holds too
              few, the shortfall is run first as a `true` array at most one task at a time (so a core stays
              free for other users) and the benchmark waits until the controller has purged it. The rows are put
              back to RUNNING before each round (outside the timing), as if the poller had last seen them
              running: otherwise the first poll records them finished and the next has nothing to ask. The
              sleepers stay in these rounds so squeue still has real work (N=1: one finished job, no sleeper).

N real running jobs do not fit on this machine's two cores; held jobs are the honest stand-in for a long queue,
and finished jobs for the ones sacct must settle. Never-issued ("unknown") ids were not used: sacct would answer
with nothing, which measures neither its output nor the ledger updates. Array task ids (A_i) are not used in the
queue scenario: squeue prints an array task under its own job id, so SlurmClient would not match it.

Per round, around `Poller(jobs, holder).poll_once()` only: scheduler calls (SlurmClient.calls), wall time,
`time.process_time()` (the poller's CPU), the CPU of the squeue/sacct child processes, SQL statements.
poll_once writes only while `holder` holds the poller lease, so the benchmark takes the lease once per scenario
(`ledger.try_acquire_lease`, outside the timing) for longer than its rounds last; the lease check inside
`apply_states` (a SELECT FOR UPDATE of the lease row) is part of every round. One warm-up round per scenario
and N is not counted.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import QueryTimer, say
from bench._setup import (
    ROOT,
    add_fresh_database,
    bench_parser,
    chunks,
    config_value,
    fresh_database,
    parse_sizes,
    run,
    sbatch,
    scancel,
    seconds_value,
    wait_for_slurm,
    wait_until_idle,
)

MAX_ARRAY = 1000  # Slurm's default MaxArraySize is 1001: indices up to 1000.
HOLDER = "bench-poll"  # the poller lease's holder in the benchmark's own database


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sizes", default="1,100,1000", help="numbers of waiting jobs (default 1,100,1000)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="measured polls per scenario and size (default 5)"
    )
    parser.add_argument(
        "--sleepers",
        type=int,
        default=1,
        help="real running `sleep` jobs (default 1: leaves a core to others)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one more queue-scenario poll at the largest N"
    )
    add_fresh_database(parser, "emgapi_bench_poll")
    parser.add_argument(
        "--skip-left-queue",
        action="store_true",
        help="only the queue scenario (the other may wait MinJobAge)",
    )
    args = parser.parse_args()
    sizes = parse_sizes(parser, args.sizes)
    max_n = sizes[-1]

    wait_for_slurm()
    where = fresh_database(args.database)
    min_job_age = seconds_value(config_value("MinJobAge"), 300)
    tmp = Path(tempfile.mkdtemp(prefix="emgapi-bench-poll-"))
    live_ids: list[str] = []
    say(f"bench/poll.py: sizes {sizes}, {args.rounds} measured rounds each; database {where} (fresh)")
    say(f"Slurm: the local cluster, MinJobAge {min_job_age} s")
    try:
        finished_ids: list[str] = []
        arrays: list[str] = []
        if not args.skip_left_queue:
            finished_ids = finished_in_accounting(max_n)
            say(f"left-queue pool: {len(finished_ids)} finished jobs from accounting, no longer in squeue")
            shortfall = max_n - len(finished_ids)
            start = time.monotonic()
            for part in range(0, shortfall, MAX_ARRAY):
                count = min(MAX_ARRAY, shortfall - part)
                array = sbatch(
                    [
                        f"--array=1-{count}%1",
                        f"--chdir={tmp}",
                        "--output=/dev/null",
                        "--time=1",
                        "--wrap",
                        "true",
                    ]
                )
                arrays.append(array)
                live_ids.append(array)
                finished_ids += [f"{array}_{i}" for i in range(1, count + 1)]
            if arrays:
                wait_until_idle(arrays, timeout=3600, what="finished-job arrays")
                say(
                    f"  + {shortfall} array tasks of `true` run for the shortfall in {time.monotonic() - start:.0f} s"
                )

        sleepers = [
            sbatch(
                [
                    f"--chdir={tmp}",
                    f"--output={tmp}/sleep-%j.out",
                    "--time=120",
                    "--wrap",
                    "echo started; sleep 7200",
                ]
            )
            for _ in range(min(args.sleepers, max_n))
        ]
        live_ids += sleepers
        wait_for_state(sleepers, "RUNNING")
        held_count = max_n - len(sleepers)
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            held = list(
                pool.map(
                    lambda _: sbatch(
                        ["--hold", f"--chdir={tmp}", "--output=/dev/null", "--time=1", "--wrap", "true"]
                    ),
                    range(held_count),
                )
            )
        live_ids += held
        say(
            f"queue pool: {len(sleepers)} running sleep jobs, {len(held)} held jobs (sbatch in {time.monotonic() - start:.0f} s)"
        )
        say()

        results = []
        for n in sizes:
            s = min(len(sleepers), n)
            rows = [(job_id, "RUNNING") for job_id in sleepers[:s]] + [
                (job_id, "PENDING") for job_id in held[: n - s]
            ]
            profile = args.profile and n == max_n
            results.append(("queue", n, measure(rows, reset=[], rounds=args.rounds, profile=profile)))

        if not args.skip_left_queue:
            if arrays:
                waited = wait_until_purged(arrays, timeout=min_job_age + 300)
                say(
                    f"waited {waited:.0f} s more for the controller to purge the shortfall arrays (MinJobAge)"
                )
            for n in sizes:
                s = min(len(sleepers), n - 1)
                gone = finished_ids[: n - s]
                rows = [(job_id, "RUNNING") for job_id in sleepers[:s]] + [
                    (job_id, "RUNNING") for job_id in gone
                ]
                results.append(("left-queue", n, measure(rows, reset=gone, rounds=args.rounds)))

        say()
        header = (
            f"{'scenario':<11} {'N':>5} {'squeue/poll':>11} {'sacct/poll':>10} {'wall ms/poll':>12} {'(max)':>7} "
            f"{'CPU ms/poll':>11} {'= read':>7} {'+ record':>8} {'child CPU ms':>12} {'SQL/poll':>8}  "
            "ledger states after the poll"
        )
        say(header)
        say("-" * len(header))
        for scenario, n, r in results:
            say(
                f"{scenario:<11} {n:5d} {r['squeue']:11.2f} {r['sacct']:10.2f} {r['wall']:12.1f} {r['wall_max']:7.1f} "
                f"{r['cpu']:11.1f} {r['cpu_read']:7.1f} {r['cpu_record']:8.1f} {r['child']:12.1f} {r['sql']:8.1f}  "
                f"{r['states']}"
            )
        say()
        say(
            "wall: around poll_once, mean (max) of the measured rounds; it includes slurmctld's and slurmdbd's time."
        )
        say(
            "CPU ms/poll: time.process_time() of the polling process around poll_once; of which read = inside"
        )
        say(
            "  SlurmClient.job_states (running squeue/sacct, parsing), record = inside ledger.apply_states (ORM)."
        )
        say("child CPU ms: the squeue/sacct processes themselves (os.times children).")
    finally:
        scancel(live_ids)
        wait_until_idle(live_ids, what="benchmark jobs")
        shutil.rmtree(tmp, ignore_errors=True)
        say(f"cancelled {len(live_ids)} live benchmark jobs; queue idle; removed {tmp}")
    return 0


def measure(rows: list[tuple[str, str]], *, reset: list[str], rounds: int, profile: bool = False) -> dict:
    from django.db import connection
    from django.utils import timezone

    from prefect_utils.job_spec import JobSpec
    from prefect_utils.poller import POLLER_LEASE, Poller
    from prefect_utils.slurm_client import SlurmClient
    from prefect_utils.submission import SlurmJobs
    from workflows.models import ClusterJob
    from workflows.orchestration.ledger import DjangoJobLedger

    ClusterJob.objects.all().delete()
    now = timezone.now()
    ClusterJob.objects.bulk_create(
        [
            ClusterJob(
                key=f"bench-poll-{i}",
                attempt=1,
                name=f"bench-poll-{i}",
                spec=JobSpec(
                    name=f"bench-poll-{i}", script="true", workdir=tempfile.gettempdir()
                ).canonical(),
                slurm_job_id=job_id,
                state=state,
                submitted_at=now,
            )
            for i, (job_id, state) in enumerate(rows)
        ],
        batch_size=1000,
    )
    # The poller's CPU split between reading Slurm (job_states: run, parse) and recording it (apply_states).
    parts: Counter[str] = Counter()

    class TimedClient(SlurmClient):
        def job_states(self, job_ids):
            start = time.process_time()
            try:
                return super().job_states(job_ids)
            finally:
                parts["job_states"] += time.process_time() - start

    class TimedLedger(DjangoJobLedger):
        def apply_states(self, infos, log_tails, checked_at, *, lease):
            start = time.process_time()
            try:
                return super().apply_states(infos, log_tails, checked_at, lease=lease)
            finally:
                parts["apply_states"] += time.process_time() - start

    client = TimedClient()
    jobs = SlurmJobs(TimedLedger(), client)
    poller = Poller(jobs, HOLDER)
    # poll_once writes only while its holder has the poller lease: take it once, for longer than the rounds
    # last (Poller.tick would renew it every round, one more UPDATE, outside what is measured here).
    if not jobs.ledger.try_acquire_lease(POLLER_LEASE, HOLDER, ttl_seconds=3600):
        raise SystemExit(f"the poller lease {POLLER_LEASE!r} of the fresh database is held by someone else")

    def poll() -> None:
        if poller.poll_once() is None:
            raise SystemExit("poll_once lost the poller lease: nothing was recorded")

    def put_back() -> None:
        for part in chunks(reset, 1000):
            ClusterJob.objects.filter(slurm_job_id__in=list(part)).update(
                state="RUNNING", slurm_state="RUNNING", exit_code=None, ended_at=None
            )

    put_back()
    poll()  # warm-up: first queries, first parse
    parts.clear()
    calls, walls, cpus, childs, sqls, states = Counter(), [], [], [], [], Counter()
    for _ in range(rounds):
        put_back()
        before = client.calls.copy()
        queries = QueryTimer()
        t0 = os.times()
        with connection.execute_wrapper(queries):
            wall = time.perf_counter()
            cpu = time.process_time()
            poll()
            cpus.append(1000 * (time.process_time() - cpu))
            walls.append(1000 * (time.perf_counter() - wall))
        t1 = os.times()
        childs.append(
            1000 * ((t1.children_user - t0.children_user) + (t1.children_system - t0.children_system))
        )
        sqls.append(queries.count)
        calls.update(client.calls - before)
        states = Counter(ClusterJob.objects.values_list("state", flat=True))
    result = {
        "squeue": calls["squeue"] / rounds,
        "sacct": calls["sacct"] / rounds,
        "wall": statistics.mean(walls),
        "wall_max": max(walls),
        "cpu": statistics.mean(cpus),
        "child": statistics.mean(childs),
        "cpu_read": 1000 * parts["job_states"] / rounds,
        "cpu_record": 1000 * parts["apply_states"] / rounds,
        "sql": statistics.mean(sqls),
        "states": ", ".join(f"{count} {state}" for state, count in sorted(states.items())),
    }
    if profile:
        print_poll_profile(poll, len(rows))
    return result


def print_poll_profile(poll, n: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    poll()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats
    rows = sorted(
        (
            (cum, own, calls, f"{filename.rsplit('site-packages/', 1)[-1]}:{line}({name})")
            for (filename, line, name), (_, calls, own, cum, _) in stats.items()
        ),
        reverse=True,
    )
    say(f"cProfile of one more poll_once, queue scenario, N={n} (ms, cumulative / own, calls):")
    for cum, own, calls, where in rows[:16]:
        say(f"  {1000 * cum:9.1f} {1000 * own:8.1f} {calls:8d}  {where.replace(str(ROOT) + '/', '')}")
    say()


def finished_in_accounting(wanted: int) -> list[str]:
    """Up to ``wanted`` ids of jobs accounting has recorded as ended and squeue no longer lists, newest first.

    Plain job ids only: array tasks would do for sacct too, but one kind of id keeps the figures comparable.
    """
    from prefect_utils.states import map_state

    in_squeue = set(run(["squeue", "--noheader", "--states=all", "--array", "--format=%i"]).stdout.split())
    accounting = run(
        [
            "sacct",
            "--noheader",
            "--allocations",
            "--parsable2",
            "--starttime=now-7days",
            "--format=JobID,State",
        ]
    ).stdout
    ids = []
    for line in reversed(accounting.splitlines()):
        job_id, _, state = line.partition("|")
        if job_id.isdigit() and job_id not in in_squeue and map_state(state).is_terminal:
            ids.append(job_id)
    return ids[:wanted]


def wait_for_state(job_ids: list[str], state: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = run(["squeue", "--noheader", f"--jobs={','.join(job_ids)}", "--format=%T"], check=False)
        if proc.stdout.split().count(state) == len(job_ids):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs {job_ids} not {state} after {timeout:.0f} s: {proc.stdout.split()}")
        time.sleep(0.5)


def wait_until_purged(job_ids: list[str], timeout: float) -> float:
    """Wait until squeue no longer lists the jobs at all (not even as COMPLETED)."""
    start = time.monotonic()
    while True:
        proc = run(
            ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%i"],
            check=False,
        )
        if not proc.stdout.strip():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise SystemExit(f"jobs {job_ids} still listed by squeue after {timeout:.0f} s")
        time.sleep(5)


if __name__ == "__main__":
    raise SystemExit(main())
