"""One step of the service loop measured: a `sweep()`, or `wake_requests(ended)` (what the loop does after a poll
in which jobs ended), with this process's CPU (time.process_time), the wall time, the SQL statements Django ran
(django.test.utils.CaptureQueriesContext: the sweep lock's own connection is raw psycopg and not counted), the
Prefect API calls and the resumes it issued; and a cProfile of one more sweep.

Prefect calls are HTTP requests counted by wrapping httpx.Client.send in this process: every request of Prefect's
sync client (the one workflows.outbox.prefect_api uses), each retry included. Nothing else in this process speaks
HTTP while a step is measured.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from bench._report import say
from bench._scale.rows import Population
from bench._setup import ROOT

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Step:
    """The figures of one measured step."""

    cpu_ms: float
    wall_ms: float
    sql: int
    prefect: int
    prefect_by_call: Counter[str]
    resumes: int  # issued: resume requests sent to Prefect
    accepted: int  # of which Prefect accepted (a run no longer suspended refuses)
    # What a sweep did besides resuming (rescheduled, restarted, cancelled): none is expected here.
    other: dict[str, int] = field(default_factory=dict)


@dataclass
class FreedRound:
    """k slots freed: the requests whose own jobs ended, the wake-up after the poll, and the sweep after it."""

    k: int
    ended: int
    wake: Step
    sweep: Step


@dataclass
class SizeResult:
    n: int
    population: Population
    sweeps: list[Step]  # nothing freed
    freed: list[FreedRound] = field(default_factory=list)


@contextmanager
def counting_http() -> Iterator[Counter[str]]:
    """The HTTP requests this process sends while in the block, by 'METHOD /path' (ids as {id})."""
    import httpx

    calls: Counter[str] = Counter()
    send = httpx.Client.send

    def counted(self: httpx.Client, request: httpx.Request, *args: Any, **kwargs: Any) -> httpx.Response:
        path = _ID.sub("{id}", request.url.path).removeprefix("/api")
        calls[f"{request.method} {path}"] += 1
        return send(self, request, *args, **kwargs)

    with mock.patch.object(httpx.Client, "send", counted):
        yield calls


def measure(step: Callable[[], Any]) -> tuple[Any, Step]:
    """Run `step` once, measured; its result and its figures (`accepted` and `other` are the caller's to fill)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with counting_http() as calls, CaptureQueriesContext(connection) as queries:
        wall = time.perf_counter()
        cpu = time.process_time()
        result = step()
        cpu_ms = 1000 * (time.process_time() - cpu)
        wall_ms = 1000 * (time.perf_counter() - wall)
    resumes = calls["POST /flow_runs/{id}/resume"]
    return result, Step(cpu_ms, wall_ms, len(queries), sum(calls.values()), calls, resumes, 0)


def measure_sweep() -> Step:
    from workflows.orchestration.recovery import sweep

    report, figures = measure(sweep)
    figures.accepted = len(report.resumed)
    figures.other = {
        name: len(getattr(report, name))
        for name in ("rescheduled", "restarted", "cancelled")
        if getattr(report, name)
    }
    return figures


def measure_wake(ended: set[int]) -> Step:
    from workflows.orchestration.recovery import wake_requests

    resumed, figures = measure(lambda: wake_requests(ended))
    figures.accepted = len(resumed)
    return figures


def profile_sweep(n: int, lines: int = 25) -> None:
    """cProfile of one more sweep: the functions by cumulative time, then by own time."""
    from workflows.orchestration.recovery import sweep

    profiler = cProfile.Profile()
    profiler.enable()
    sweep()
    profiler.disable()
    # Stats.stats (function -> its figures) is what print_stats reads; typeshed does not declare it.
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    rows = [
        (cum, own, calls, f"{filename.rsplit('site-packages/', 1)[-1]}:{line}({name})")
        for (filename, line, name), (_, calls, own, cum, _) in stats.items()
    ]
    total = max(cum for cum, *_ in rows)
    say(
        f"cProfile of one more sweep, N={n} ({1000 * total:.0f} ms under the profiler; ms, cumulative / own, calls):"
    )
    for title, key in (("by cumulative time", 0), ("by own time", 1)):
        say(f"  {title}:")
        for cum, own, calls, where in sorted(rows, key=lambda row: row[key], reverse=True)[:lines]:
            say(f"  {1000 * cum:9.1f} {1000 * own:8.1f} {calls:8d}  {where.replace(str(ROOT) + '/', '')}")
    say()
