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

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import say
from bench._setup import add_fresh_database, bench_parser, fresh_database, wait_for_slurm
from bench._submit.baseline import count_since_plan, fill_history, select_one_seconds
from bench._submit.phases import SubmitRun, measure
from bench._submit.profile import profile_batch
from bench._submit.report import RATIO_B_A_GOAL, report


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

    from django.db import connection

    run = SubmitRun(n)
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
        f"throttle out of reach: ThrottleConfig(max_active_jobs=10**6, submits_per_minute=10**6); run {run.run_id}"
    )
    say()
    try:
        measured = measure(run, small_size=args.small, one_at_a_time=not args.skip_one_at_a_time)
        ratio_ba = report(measured, n, args.small)
        if args.profile or ratio_ba > RATIO_B_A_GOAL:
            profile_batch(run)
    finally:
        run.clean_up()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
