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

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._poll.measure import measure
from bench._poll.pools import left_queue_pool, queue_pool, wait_until_purged
from bench._report import say, say_header
from bench._setup import (
    add_fresh_database,
    bench_parser,
    config_value,
    fresh_database,
    parse_sizes,
    scancel,
    seconds_value,
    wait_for_slurm,
    wait_until_idle,
)


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
            finished_ids, arrays = left_queue_pool(max_n, tmp, live_ids)
        sleepers, held = queue_pool(args.sleepers, max_n, tmp, live_ids)
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
        say_header(header)
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


if __name__ == "__main__":
    raise SystemExit(main())
