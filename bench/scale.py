"""Benchmark: archive scale (issue 19), three scenarios.

    .venv/bin/python bench/scale.py [--scenario c] [--sizes 20,2000,10000] [--freed 1,10] [--rounds 3] [--profile]
    .venv/bin/python bench/scale.py --scenario a [--runs 50,500,5000] [--study-parts 1,2]   # see bench/_scale/study.py
    .venv/bin/python bench/scale.py --scenario b [--requests 20,200] [--release-every 15]   # see bench/_scale/limit.py

(a) One request over a generated study of R runs (20,000 planned steps at R = 5,000): bench/_scale/study.py.
(b) End to end at the job limit, 200 requests of two runs with SLURM_MAX_ACTIVE_JOBS=20: bench/_scale/limit.py.
(c) The service loop alone at 2,000 and 10,000 unfinished requests: here, below.

(c) The capacity queue (workflows/orchestration/capacity.py) at scale: with the cluster full and thousands of
requests waiting for a slot, a sweep must resume only the requests granted a slot, not every waiting one, and
must cost the service loop little. For each N of `--sizes`, on a Prefect server of its own (free port, database
`<database>_n<N>_prefect`; no serve_flows, no ENA stub, no Slurm job) and a Django database of its own
(`<database>_n<N>`, dropped and recreated, migrated):

  * N requests `running`, each with a flow run of a deployment nobody serves, created and forced to Suspended
    (PAUSED, no timeout) through Prefect's API, `--concurrency` at a time: no flow process ever runs;
  * a tenth of them (at least 1) with jobs RUNNING: `--max-active-jobs` (SLURM_MAX_ACTIVE_JOBS) ledger rows with
    fake job ids, so the cluster is full; the others wait for capacity (capacity_wanted 2, never served).

Then, measured in this process (CPU by time.process_time, wall, SQL statements by CaptureQueriesContext,
Prefect API calls as HTTP requests counted around httpx.Client.send, resumes issued):

  * one sweep() not counted (the process's first imports Prefect's client), then `--rounds` sweeps with nothing
    freed: each must resume nobody;
  * for each k of `--freed`, cumulatively: k RUNNING jobs recorded COMPLETED now (what a poll records), then
    wake_requests(the requests whose jobs ended) as the service loop calls it after a poll, then one sweep. The
    resumes of both must not exceed k plus the requests whose own jobs ended.

The poll itself is not measured: Poller.poll_once needs real Slurm jobs (bench/poll.py measures it).

Prints each step's figures as it goes, then the tables, the ratios to the smallest N (20 by default) and the goals
of issue 19 that apply: service-loop CPU per sweep <= 200 ms at 2,000 unfinished requests and <= 1 s at 10,000,
Prefect calls per sweep <= N/200 + resumes, resumes per sweep <= slots freed + requests whose own jobs ended;
"meets" or "MISSES" for each. `--profile` (or a sweep's CPU missing its goal) adds a cProfile of one more sweep.
Each N's Prefect server is stopped and its two databases dropped when it is done (kept with --keep, with the
temporary directory and the server's log).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import say
from bench._scale import limit, study
from bench._scale.report import report
from bench._scale.run import ScaleStack, prefect_home
from bench._setup import bench_parser, parse_sizes, repo_state


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument(
        "--scenario", choices=["a", "b", "c"], default="c", help="the scenario of issue 19 (only c is built)"
    )
    parser.add_argument(
        "--sizes", default="20,2000,10000", help="numbers of unfinished requests (default 20,2000,10000)"
    )
    parser.add_argument(
        "--freed", default="1,10", help="slots freed, one round each, cumulatively (default 1,10)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="measured sweeps with nothing freed, per N (default 3)"
    )
    parser.add_argument(
        "--max-active-jobs",
        type=int,
        default=100,
        help="SLURM_MAX_ACTIVE_JOBS: the cluster's slots, all taken by RUNNING jobs (default 100)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="flow runs created at once in Prefect (default 8)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one more sweep at the largest N")
    parser.add_argument(
        "--database",
        default="emgapi_bench_scale",
        help="prefix of each N's databases: <database>_n<N> (Django) and <database>_n<N>_prefect (Prefect's)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep each N's databases, and the temporary directory (server logs)",
    )
    study.add_options(parser)
    limit.add_options(parser)
    args = parser.parse_args()
    if args.scenario == "a":
        return study.run(args)
    if args.scenario == "b":
        return limit.run(args)
    sizes = parse_sizes(parser, args.sizes)
    args.freed = parse_sizes(parser, args.freed)
    args.profile_n = sizes[-1] if args.profile else None

    say(
        f"bench/scale.py scenario (c) at {repo_state()}: sizes {sizes}, SLURM_MAX_ACTIVE_JOBS "
        f"{args.max_active_jobs}, slots freed {args.freed}, {args.rounds} measured sweeps"
    )
    tmp = Path(tempfile.mkdtemp(prefix="emgapi-bench-scale-"))
    prefect_home(tmp)
    results = []
    try:
        for n in sizes:
            stack = ScaleStack(args, n, tmp / f"n{n}")
            stack.tmp.mkdir()
            try:
                stack.run()
            finally:
                stack.shutdown()
            if stack.result is not None:
                results.append(stack.result)
    finally:
        if args.keep:
            say(f"kept {tmp} (each N's prefect_server.log) and the databases {args.database}_n<N>[_prefect]")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
