"""How the benchmarks take and print their figures: lines as they go, the SQL statements a step runs, percentiles,
and goals met or missed. Importing this module changes nothing."""

from __future__ import annotations

import statistics
import time
from collections import Counter


def say(message: str = "") -> None:
    print(message, flush=True)


def say_header(header: str) -> None:
    """A table's header line and a rule as long as it."""
    say(header)
    say("-" * len(header))


def fmt(value: float | None) -> str:
    """One decimal, or '-' for a figure that was not taken."""
    return "-" if value is None else f"{value:.1f}"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def say_goal(ok: bool, text: str) -> None:
    """A line of the goals: `meets  <text>` or `MISSES  <text>`."""
    say(f"{verdict(ok):<6}  {text}")


def percentiles_ms(timings: list[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 of `timings` (statistics.quantiles in 100 parts)."""
    q = statistics.quantiles(timings, n=100)
    return q[49], q[94], q[98]


class QueryTimer:
    """Counts the SQL statements Django runs, and the wall time spent executing them (connection.execute_wrapper).

    COMMIT is not a statement Django executes through a cursor, so it is not counted here.
    """

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.kinds: Counter[str] = Counter()

    def __call__(self, execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - start
            self.count += 1
            self.kinds[statement_kind(sql)] += 1

    def kinds_text(self) -> str:
        """The statements by kind, the most frequent first: '3 SELECT, 1 INSERT'."""
        return ", ".join(f"{count} {kind}" for kind, count in self.kinds.most_common())


def statement_kind(sql: str) -> str:
    words = sql.split()
    kind = words[0].upper() if words else "?"
    if kind == "SELECT" and words[1:2] == ["COUNT(*)"]:
        kind = "SELECT COUNT"
    if kind == "SELECT" and "FOR UPDATE" in sql:
        kind = "SELECT FOR UPDATE"
    return kind
