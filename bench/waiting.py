"""Benchmark: what requests cost while they wait for Slurm, and how soon a job's end wakes its request up.

    .venv/bin/python bench/waiting.py [--sizes 10,100] [--batch 10] [--releases 5] [--cancels 5] [--keep]

The promise (DESIGN.md, "Waiting holds nothing"): a request whose jobs are pending costs a few database rows; its
flow run is suspended, so no process, no thread and no connection is held for it, and the service poller resumes
it when one of its jobs ends. Goals: 0 flow processes and no connection held by waiting requests, the
orchestrator's memory flat in N, a resume within 2 poll intervals of the job's end.

The whole service runs for real, isolated from everything else on the machine:

  * a Prefect server of its own (free port, its own PREFECT_HOME and PostgreSQL database
    `<database>_prefect`), so its deployments never meet the shared server's;
  * Django's database `<database>` (dropped, recreated, migrated);
  * the ENA stub with the demo data (study PRJEB00001: two runs, so two `fetch_reads` jobs per request);
  * `manage.py serve_flows` in its own process group: the served deployments and the service loop (dispatcher,
    poller under the lease, sweep), with the environment printed at start.

Every job the service submits is HELD at submission: serve_flows gets a private copy of slurm.conf (SLURM_CONF,
which the Slurm client passes on to sbatch) that adds a client-side `cli_filter/lua` setting `--hold` on every
sbatch. Holding jobs after they appear (`scontrol hold`) loses the race on an idle node: the controller starts a
job the moment it is submitted. The cluster's own configuration is not touched; other users' jobs run as usual.

For each N of `--sizes` (scaling up: requests are added in `--batch`es and each batch is waited for until all
its flow runs are Suspended, so that no more than a batch of flow processes start at once on this machine):
flow-run processes alive (children of serve_flows, zombies excluded), serve_flows' threads, RSS of serve_flows
and its children, PostgreSQL connections on Django's database (the benchmark closes its own first). Then held
jobs of different requests are ended one at a time, `--settle` seconds apart (so that the poller is back at its
longest interval), alternately `--releases` by `scontrol release` (the job runs for about a second: the poller
may see it RUNNING and shorten its interval before it ends) and `--cancels` by `scancel` (the job ends at once,
at a random moment of the poller's longest interval: the case of a job that ran for days). For each: the job's
end (sacct End, whole seconds), when the poller recorded it (ledger state_changed_at), the flow run's "Resuming"
and then "Running" state (Prefect's state history). The run then passes once (a cancelled job fails its run; the
request goes on with the other), submits what comes next (held too) and suspends again.

At the end every job of the benchmark's ledger is cancelled, serve_flows, the stub and the Prefect server (the
processes it started, by process group) are stopped, and the temporary directory is removed (kept with --keep).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._setup import bench_parser, parse_sizes, wait_for_slurm
from bench._stack import add_stack_options, run_stack
from bench._waiting.run import Waiting


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sizes", default="10,100", help="numbers of waiting requests (default 10,100)")
    parser.add_argument(
        "--batch", type=int, default=10, help="requests created at once when scaling up (default 10)"
    )
    parser.add_argument(
        "--releases", type=int, default=5, help="held jobs released (they run ~1 s) per size (default 5)"
    )
    parser.add_argument(
        "--cancels", type=int, default=5, help="held jobs scancelled (they end at once) per size (default 5)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=12.0,
        help="seconds of quiet before each measurement and release (default 12: the poller is back at its "
        "longest interval)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=10.0,
        help="seconds over which processes, threads and RSS are sampled (every 0.25 s) at each N (default 10)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for a batch to suspend (default 600)"
    )
    add_stack_options(parser, "emgapi_bench_waiting")
    args = parser.parse_args()
    sizes = parse_sizes(parser, args.sizes)

    wait_for_slurm()
    run_stack(
        lambda tmp: Waiting(args, sizes, tmp),
        name="waiting",
        keep=args.keep,
        logs="serve_flows.log, prefect_server.log, ena_stub.log",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
