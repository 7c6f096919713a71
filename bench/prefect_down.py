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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._prefect_down.run import PrefectDown
from bench._setup import bench_parser
from bench._stack import DEMO_ENA, add_stack_options, run_stack


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


if __name__ == "__main__":
    raise SystemExit(main())
