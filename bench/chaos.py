"""Benchmark: kill -9 anywhere. The flow server dies at random moments of the requests' lives and comes back;
what does that cost, and does anything get lost or done twice?

    .venv/bin/python bench/chaos.py [--kills 50] [--requests 8] [--seed S] [--min-gap 1] [--max-gap 8]
                                    [--max-down 10] [--post-window 3] [--orphan-kills 1] [--deadline 600] [--keep]

The promise (DESIGN.md, "Idempotent, crash-safe submission", "Flows are reconcilers", "Recovery is a sweep over
requests"): a kill -9 of the orchestrator at any line never submits a job twice, never makes a domain row twice
and never loses a request. Goal: >= 50 kills, 0 duplicates, 0 stuck requests.

The whole service runs for real and isolated (bench/_stack.py: its own Prefect server and database, the ENA stub,
a fresh Django database) and the demo's jobs really run on the cluster (each is over in about a second).
`--requests` requests are created with `create_assembly_analysis_request` (the API's service: the request and its
trigger commit together, and the commit wakes serve_flows' dispatcher), cycling over the demo studies PRJEB00001 (2 runs,
4 analyses: each run by the assembly and the analysis chained) and PRJEB00002 (data QA rejects one of its 2
runs: 2 analyses), spread over the kills: the next
request comes as soon as no request is unfinished (then the next kill comes right after it), or once the last one
has lived through its share of the kills left. So, until the last request has ended, every kill lands in a
request's life, in every phase of it: Scheduled and Pending in the runner (its PENDING window), planning,
submission, a pass lingering on short jobs, Suspended, Resuming, ingest, and "finishing" (the request is done,
its flow run not final yet). Undisturbed, a demo request is done in about 20 s; every kill stretches its life.

A killer sends SIGKILL to serve_flows' whole process group (os.killpg on the pid of the serve_flows it started:
the runner, every flow-run process, the service loop's squeue/sacct) and starts a new one after a random delay
(uniform 0..--max-down s). The next kill comes uniform(--min-gap, --max-gap) s after the restart, or, right after
a request was created, uniform(0, --post-window) s after it. All random draws are made up front from --seed
(always printed): a run can be replayed, up to what the timing of the machine changes.

`--orphan-kills` kills (default 1, at random positions in the middle of the run) are aimed instead: the killer
watches the ledger for rows without a Slurm job id (a batch between its first commit and the commit of its job
ids), then serve_flows' processes for an sbatch, and kills the moment that sbatch has exited: the job is on the
cluster, the ledger does not know its id (squeue, read after the kill, must list a job with such a row's key). serve_flows then stays down until that job has ended and left squeue (MinJobAge, 300 s on
the development cluster), so the next pass must find it through sacct and adopt it. If no window is caught within
--orphan-wait s, that kill falls back to a random one.

Right after each kill (nothing moves while serve_flows is down) the phase of every request is read: its flow
run's state in Prefect and, for a running one, the plan and the ledger. After the last kill, requests have --deadline s to finish; one that has not is
stuck. Then:

  * duplicate keys in Slurm: `sacct -a -X -P -S <start> -o JobID,Comment,WorkDir` plus squeue for live jobs,
    restricted to the benchmark's jobs (work directory under its JOBS_ROOT); a comment on two jobs is a
    submission key submitted twice. Jobs of the benchmark the ledger does not know are counted too;
  * duplicate domain rows: Assembly rows per (request, run), Analysis rows per (request, run, pipeline);
  * time to recover: from serve_flows' restart after the last kill that found a request unfinished to every
    request finished, and per request from the restart after the last kill of its life to its end (the outage
    itself is not counted);
  * flow runs left not final in Prefect (a finished request whose flow run stays Running forever);
  * per request: kills lived through, life time, reconciler passes, resumes, recoveries by the sweep, flow-run
    generations, analyses.

For a stuck request, a failed one, a flow run left not final or a duplicate the evidence (request, RequestProgress
and ClusterJob rows, the flow runs' state histories, the serve_flows log lines that name it) is written to
evidence.txt and the temporary directory is kept. At the end every job of the benchmark is cancelled and what it started is stopped by pid.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._chaos.run import Chaos
from bench._report import say
from bench._setup import bench_parser, wait_for_slurm
from bench._stack import add_stack_options, run_stack


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--kills", type=int, default=50, help="kills of serve_flows (default 50)")
    parser.add_argument(
        "--requests", type=int, default=8, help="requests, cycling over PRJEB00001, PRJEB00002 (default 8)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of every random draw (default: new one)")
    parser.add_argument(
        "--min-gap", type=float, default=1.0, help="least seconds from a restart to the next kill (default 1)"
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        default=8.0,
        help="most seconds from a restart to the next kill (default 8)",
    )
    parser.add_argument(
        "--max-down", type=float, default=10.0, help="most seconds serve_flows stays dead (default 10)"
    )
    parser.add_argument(
        "--post-window",
        type=float,
        default=3.0,
        help="a kill comes uniform(0, this) s after each new request (default 3: its PENDING window)",
    )
    parser.add_argument(
        "--orphan-kills",
        type=int,
        default=1,
        help="kills aimed between a job's sbatch and the ledger's commit of its id, each followed by an "
        "outage until the job has left squeue (MinJobAge) (default 1)",
    )
    parser.add_argument(
        "--orphan-wait",
        type=float,
        default=180.0,
        help="seconds an aimed kill waits for a submission window before it falls back to a random kill",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=600.0,
        help="seconds after the last kill within which every request must finish (default 600)",
    )
    add_stack_options(parser, "emgapi_bench_chaos")
    args = parser.parse_args()
    if args.kills < 1 or args.requests < 1 or not 0 <= args.min_gap <= args.max_gap:
        parser.error("--kills and --requests must be positive, 0 <= --min-gap <= --max-gap")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big") % 1_000_000

    wait_for_slurm()
    try:
        run_stack(
            lambda tmp: Chaos(args, tmp),
            name="chaos",
            keep=args.keep,
            logs="serve_flows*.log, prefect_server.log, ena_stub.log; evidence.txt if any",
        )
    finally:
        say(f"seed {args.seed} (replay with --seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
