"""--profile of bench/submit.py (or when (b) misses its goal): one more fresh batch under cProfile, and the
functions of the protocol and the calls that wait, per job."""

from __future__ import annotations

import cProfile
import io
import pstats

from bench._report import say
from bench._submit.phases import SubmitRun


def profile_batch(run: SubmitRun) -> None:
    """A further fresh batch of N submissions, profiled; its jobs settled like a phase's."""
    n = run.n
    say()
    say(f"profiling another fresh batch of {n} (cProfile adds its own overhead) ...")
    batch_p = run.submissions("profile")
    jobs_p = run.new_jobs()
    profiler = cProfile.Profile()
    profiler.enable()
    records_p = jobs_p.submit(batch_p)
    profiler.disable()
    print_profile(profiler, n)
    run.settle([r.job_id for r in records_p if r.job_id], "profiled jobs")


def print_profile(profiler: cProfile.Profile, n: int) -> None:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    # Stats.stats (function -> its figures) is what print_stats reads; typeshed does not declare it.
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((cumtime, tottime, ncalls, f"{_short(filename)}:{line}({name})"))
    interesting = (
        "prefect_utils/",
        "workflows/",
        "subprocess.py:506",
        "psycopg/connection.py",
        "transaction.py",
        "query.py",
        "poll'",
    )
    say("cProfile, our code and the calls that wait (ms per job, cumulative / own):")
    say(f"  {'cum':>7} {'own':>7} {'calls/job':>9}  function")
    for cumtime, tottime, ncalls, where in sorted(rows, reverse=True):
        if any(marker in where for marker in interesting) and cumtime / n > 0.1e-3:
            say(f"  {1000 * cumtime / n:7.2f} {1000 * tottime / n:7.2f} {ncalls / n:9.2f}  {where}")
    say("cProfile, top own time (ms per job):")
    for cumtime, tottime, ncalls, where in sorted(rows, key=lambda r: r[1], reverse=True)[:8]:
        say(f"  {1000 * cumtime / n:7.2f} {1000 * tottime / n:7.2f} {ncalls / n:9.2f}  {where}")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
