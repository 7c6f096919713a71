"""Latency of /healthz (liveness) and /readyz (deep checks, cached) under gunicorn, as a load balancer sees it.

    .venv/bin/python bench/health.py [--requests 500]

Builds its own database (emgapi_bench_health), starts gunicorn (2 workers) on a free port, sends the requests one
at a time from one client, and prints p50/p95/p99/max per endpoint. The Prefect server and Slurm are used as they
are: /readyz asks them at most once per HEALTH_CACHE_SECONDS per worker.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import percentiles_ms, say
from bench._services import gunicorn
from bench._setup import bench_parser, fresh_database


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    fresh_database("emgapi_bench_health")
    env = {**os.environ, "DEBUG": "0", "SECURE_SSL_REDIRECT": "0", "ALLOWED_HOSTS": "127.0.0.1"}
    with gunicorn(env, timeout=10) as client:
        say(f"{'endpoint':10} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}  statuses")
        for path in ("/healthz", "/readyz"):
            timings, statuses = [], set()
            for _ in range(args.requests):
                started = time.perf_counter()
                statuses.add(client.get(path).status_code)
                timings.append((time.perf_counter() - started) * 1000)
            p50, p95, p99 = percentiles_ms(timings)
            say(f"{path:10} {p50:7.1f} {p95:7.1f} {p99:7.1f} {max(timings):7.1f}  {sorted(statuses)}")


if __name__ == "__main__":
    main()
