"""Latency of /healthz (liveness) and /readyz (deep checks, cached) under gunicorn, as a load balancer sees it.

    .venv/bin/python bench/health.py [--requests 500]

Builds its own database (emgapi_bench_health), starts gunicorn (2 workers) on a free port, sends the requests one
at a time from one client, and prints p50/p95/p99/max per endpoint. The Prefect server and Slurm are used as they
are: /readyz asks them at most once per HEALTH_CACHE_SECONDS per worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _setup import ROOT, free_port, fresh_database, say


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    fresh_database("emgapi_bench_health")
    import httpx

    port = free_port()
    env = {**os.environ, "DEBUG": "0", "SECURE_SSL_REDIRECT": "0", "ALLOWED_HOSTS": "127.0.0.1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "emgapi.wsgi",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("gunicorn did not answer in 60 s") from None
                    time.sleep(0.2)
            say(f"{'endpoint':10} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}  statuses")
            for path in ("/healthz", "/readyz"):
                timings, statuses = [], set()
                for _ in range(args.requests):
                    started = time.perf_counter()
                    statuses.add(client.get(path).status_code)
                    timings.append((time.perf_counter() - started) * 1000)
                q = statistics.quantiles(timings, n=100)
                say(
                    f"{path:10} {q[49]:7.1f} {q[94]:7.1f} {q[98]:7.1f} {max(timings):7.1f}  {sorted(statuses)}"
                )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
