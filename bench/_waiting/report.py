"""The figures of bench/waiting.py: a row per N (what the waiting requests held, and how soon ended jobs resumed
their requests) and the goals."""

from __future__ import annotations

import statistics

from bench._report import fmt, say, say_goal, say_header


def report(rows: list[tuple[dict, list[dict]]], *, window: float, service_settings: dict[str, str]) -> None:
    """`rows`: the measurement at N = 0 and at each size, each with the job ends timed at that size; `window`:
    the seconds each was sampled over; `service_settings`: serve_flows' (its poll intervals)."""
    poll_min = float(service_settings["SLURM_POLL_MIN_SECONDS"])
    poll_max = float(service_settings["SLURM_POLL_MAX_SECONDS"])
    say()
    header = (
        f"{'N':>4} {'suspended':>9} {'flow procs':>10} {'threads':>7} {'RSS MB main + children':>22} "
        f"{'PG conns':>8} {'resume delay s, release':>23} {'scancel':>15} {'detect s':>8} {'to Running s':>12}"
    )
    say_header(header)
    for snapshot, ends in rows:
        suspended = snapshot["runs"].get("Suspended", 0)
        say(
            f"{snapshot['n']:>4} {suspended:>9} {snapshot['flow_processes']:>10} "
            f"{str(snapshot['threads_min']) + '-' + str(snapshot['threads']):>7} "
            f"{snapshot['rss_main_mb']:>12.0f} + {snapshot['rss_children_mb']:<7.0f} "
            f"{snapshot['pg']['total']:>8} {_spread(ends, 'delay', 'release'):>23} "
            f"{_spread(ends, 'delay', 'scancel'):>15} {_median(ends, 'detect'):>8} "
            f"{_median(ends, 'to_running'):>12}"
        )
    say(
        f"(flow procs, RSS: the most over {window:g} s; threads: least-most; resume delay: job end -> "
        "flow run Resuming, median / max (count); detect: job end -> the poller recorded it; to Running: "
        "Resuming -> the new flow process runs; medians)"
    )
    say()
    base = rows[0][0]
    waiting = [s for s, _ in rows[1:]]
    first = waiting[0] if len(waiting) > 1 else base
    all_delays = [r["delay"] for _, ends in rows for r in ends if r["delay"] is not None]
    missed = sum(1 for _, ends in rows for r in ends if r["delay"] is None)
    goals = [
        (
            "0 flow processes while requests wait",
            all(s["flow_processes"] == 0 for s in waiting),
            ", ".join(f"N={s['n']}: {s['flow_processes']}" for s in waiting),
        ),
        (
            "no PG connection held by waiting requests (same count as with 0 requests)",
            all(s["pg"]["total"] <= base["pg"]["total"] for s in waiting),
            f"N=0: {base['pg']['total']}, " + ", ".join(f"N={s['n']}: {s['pg']['total']}" for s in waiting),
        ),
        (
            f"orchestrator memory flat in N (RSS at N={waiting[-1]['n']} within 10 % of N={first['n']})",
            _rss(waiting[-1]) <= 1.10 * _rss(first),
            f"N=0: {_rss(base):.0f} MB, "
            + ", ".join(f"N={s['n']}: {_rss(s):.0f} MB" for s in waiting)
            + f"; {(_rss(waiting[-1]) - _rss(first)) * 1024 / max(1, waiting[-1]['n'] - first['n']):+.0f} "
            f"kB per added request",
        ),
        (
            f"serve_flows threads flat in N (least at N={waiting[-1]['n']} <= most at N={first['n']})",
            waiting[-1]["threads_min"] <= first["threads"],
            ", ".join(f"N={s['n']}: {s['threads_min']}-{s['threads']}" for s in [base, *waiting]),
        ),
        (
            f"resume delay <= 2 poll intervals (2 x SLURM_POLL_MAX_SECONDS = {2 * poll_max:g} s; "
            f"2 x MIN = {2 * poll_min:g} s)",
            bool(all_delays) and not missed and max(all_delays) <= 2 * poll_max,
            (
                f"median {statistics.median(all_delays):.1f} s, max {max(all_delays):.1f} s over "
                f"{len(all_delays)} jobs"
                if all_delays
                else "no job end measured"
            )
            + (f", {missed} never resumed" if missed else ""),
        ),
    ]
    for text, ok, detail in goals:
        say_goal(ok, f"{text}: {detail}")
    say("(sacct's End is whole seconds: each delay may read up to 1 s long)")


def _rss(snapshot: dict) -> float:
    return snapshot["rss_main_mb"] + snapshot["rss_children_mb"]


def _spread(ends: list[dict], key: str, how: str) -> str:
    values = [r[key] for r in ends if r["how"] == how and r[key] is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f} ({len(values)})"


def _median(ends: list[dict], key: str) -> str:
    values = [r[key] for r in ends if r[key] is not None]
    return fmt(statistics.median(values)) if values else "-"
