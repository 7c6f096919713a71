"""What waiting requests hold in bench/waiting.py: serve_flows' flow processes, threads and memory (over a window
of samples) and the PostgreSQL connections and advisory locks on a database."""

from __future__ import annotations

import time

from bench._procs import children, cmdline, descendants, is_flow_process, proc_state, status_field
from bench._setup import admin_url


def process_sample(server_pid: int) -> dict:
    direct = children(server_pid)
    live = [pid for pid in descendants(server_pid) if proc_state(pid) not in (None, "Z")]
    return {
        "flow_processes": len([pid for pid in direct if pid in live and is_flow_process(pid)]),
        "zombies": len([pid for pid in direct if proc_state(pid) == "Z"]),
        "other_children": {
            cmdline(pid).split(" ", 1)[0].rsplit("/", 1)[-1]
            for pid in direct
            if pid in live and not is_flow_process(pid)
        },
        "threads": status_field(server_pid, "Threads"),
        "rss_main_mb": status_field(server_pid, "VmRSS") / 1024,
        "rss_children_mb": sum(status_field(pid, "VmRSS") for pid in live) / 1024,
    }


def process_snapshot(server_pid: int, seconds: float, every: float = 0.25) -> dict:
    """serve_flows over a window: its threads come and go (the runner's and anyio's worker threads end after a
    few idle seconds), and a child can be a poll's squeue; so the extremes over `seconds`, not one reading."""
    samples = [process_sample(server_pid)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(every)
        samples.append(process_sample(server_pid))
    return {
        "samples": len(samples),
        "flow_processes": max(x["flow_processes"] for x in samples),
        "zombies": max(x["zombies"] for x in samples),
        "other_children": sorted(set().union(*(x["other_children"] for x in samples))),
        "threads_min": min(x["threads"] for x in samples),
        "threads": max(x["threads"] for x in samples),
        "rss_main_mb": max(x["rss_main_mb"] for x in samples),
        "rss_children_mb": max(x["rss_children_mb"] for x in samples),
    }


def pg_connections(database: str) -> dict:
    """Client connections on `database`, read from another database so that the reading one is not counted."""
    import psycopg

    with psycopg.connect(admin_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend' GROUP BY 1",
            [database],
        ).fetchall()
        advisory = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = %s)",
            [database],
        ).fetchone()
    by_state: dict[str, int] = dict(rows)
    return {
        "total": sum(by_state.values()),
        "by_state": by_state,
        "advisory_locks": advisory[0] if advisory else 0,
    }
