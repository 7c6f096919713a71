"""The figures of scenario (c) for every N, their ratios to the smallest N, and the goals of issue 19 (item 2)
that apply to the service loop alone."""

from __future__ import annotations

import math
import statistics

from bench._report import say, say_goal, say_header
from bench._scale.measure import SizeResult, Step


def sweep_cpu_goal_ms(n: int) -> float | None:
    """Service-loop CPU per sweep: ≤ 200 ms at 2,000 unfinished requests (so at fewer too), ≤ 1 s at 10,000."""
    if n <= 2000:
        return 200.0
    if n <= 10000:
        return 1000.0
    return None


def prefect_calls_allowed(n: int, resumes: int) -> int:
    """≤ N/200 + resumes: one read per page of 200 flow runs (Prefect's largest page), so a part page counts one."""
    return math.ceil(n / 200) + resumes


def _median(steps: list[Step], figure: str) -> float:
    return statistics.median(getattr(step, figure) for step in steps)


def report(results: list[SizeResult]) -> None:
    say()
    say(
        "Sweep with nothing freed (the cluster full, every other request waiting for a slot); median of the rounds"
    )
    header = (
        f"{'N':>6} {'waiting':>7} {'running':>7} {'jobs':>5} {'create s':>8} {'CPU ms':>8} {'(max)':>8} "
        f"{'wall ms':>8} {'SQL':>4} {'Prefect':>7} {'resumes':>7}"
    )
    say_header(header)
    for r in results:
        p = r.population
        say(
            f"{r.n:6d} {p.waiting:7d} {p.running:7d} {p.jobs:5d} {p.prefect_seconds:8.1f} "
            f"{_median(r.sweeps, 'cpu_ms'):8.1f} {max(s.cpu_ms for s in r.sweeps):8.1f} "
            f"{_median(r.sweeps, 'wall_ms'):8.1f} {_median(r.sweeps, 'sql'):4.0f} "
            f"{_median(r.sweeps, 'prefect'):7.0f} {max(s.resumes for s in r.sweeps):7d}"
        )

    say()
    say(
        "k slots freed (k RUNNING jobs recorded COMPLETED, as a poll would): wake_requests(ended), then one sweep; "
        "resumes issued (accepted by Prefect)"
    )
    header = (
        f"{'N':>6} {'k':>3} {'ended':>5}  {'step':<6} {'CPU ms':>8} {'wall ms':>8} {'SQL':>4} {'Prefect':>7} "
        f"{'resumes':>7} (accepted)"
    )
    say_header(header)
    for r in results:
        for f in r.freed:
            for name, step in (("wake", f.wake), ("sweep", f.sweep)):
                say(
                    f"{r.n:6d} {f.k:3d} {f.ended:5d}  {name:<6} {step.cpu_ms:8.1f} {step.wall_ms:8.1f} "
                    f"{step.sql:4d} {step.prefect:7d} {step.resumes:7d} ({step.accepted})"
                )

    base = results[0]
    say()
    say(f"Ratios to N={base.n} (nothing-freed sweep medians; wake: the first k)")
    header = (
        f"{'N':>6} {'N ratio':>8} {'CPU':>8} {'wall':>8} {'SQL':>6} {'Prefect':>8} {'wake CPU':>9} "
        f"{'wake SQL':>9}"
    )
    say_header(header)
    for r in results:
        wake_cpu = wake_sql = "-"
        if r.freed and base.freed:
            wake_cpu = f"{r.freed[0].wake.cpu_ms / base.freed[0].wake.cpu_ms:.2f}"
            wake_sql = f"{r.freed[0].wake.sql / base.freed[0].wake.sql:.2f}"
        say(
            f"{r.n:6d} {r.n / base.n:8.0f} "
            + " ".join(
                f"{_median(r.sweeps, figure) / _median(base.sweeps, figure):{width}.2f}"
                for figure, width in (("cpu_ms", 8), ("wall_ms", 8), ("sql", 6), ("prefect", 8))
            )
            + f" {wake_cpu:>9} {wake_sql:>9}"
        )

    say()
    say("The poll is not measured here: Poller.poll_once needs real Slurm jobs (bench/poll.py measures it).")
    say()
    for r in results:
        goal = sweep_cpu_goal_ms(r.n)
        cpu = _median(r.sweeps, "cpu_ms")
        if goal is None:
            say(f"-       no goal stated for the sweep's CPU at N={r.n} (median {cpu:.1f} ms)")
        else:
            say_goal(
                cpu <= goal, f"service-loop CPU per sweep <= {goal:.0f} ms at N={r.n}: {cpu:.1f} ms (median)"
            )
        sweeps = r.sweeps + [f.sweep for f in r.freed]
        worst = max(sweeps, key=lambda s: s.prefect - prefect_calls_allowed(r.n, s.resumes))
        say_goal(
            all(s.prefect <= prefect_calls_allowed(r.n, s.resumes) for s in sweeps),
            f"Prefect calls per sweep <= N/200 + resumes at N={r.n}: {worst.prefect} with {worst.resumes} resumes "
            f"(allowed {prefect_calls_allowed(r.n, worst.resumes)}; the most over {len(sweeps)} sweeps)",
        )
        say_goal(
            all(s.resumes == 0 for s in r.sweeps),
            f"resumes per sweep <= slots freed + requests whose own jobs ended, nothing freed, N={r.n}: "
            f"{max(s.resumes for s in r.sweeps)} (allowed 0)",
        )
        for f in r.freed:
            resumes = f.wake.resumes + f.sweep.resumes
            say_goal(
                resumes <= f.k + f.ended,
                f"resumes per sweep <= slots freed + requests whose own jobs ended, k={f.k}, N={r.n}: {resumes} "
                f"(wake {f.wake.resumes} + sweep {f.sweep.resumes}; allowed {f.k} + {f.ended})",
            )
