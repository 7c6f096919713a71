"""What a run of bench/prefect_down.py records of its phases: each POST (when, how long, what status) and what
happened to Prefect, serve_flows and the phase's requests around the outage."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Post:
    started: float  # time.monotonic()
    ms: float
    status: str  # "201", "500", or the name of the client-side exception
    request_id: int | None


@dataclass
class Phase:
    key: str
    title: str
    outage: str | None  # None, "refusing" or "hanging"
    posts: list[Post] = field(default_factory=list)
    down_at: float = 0.0  # the outage began (or the first POST, for the baseline)
    posted_s: float = 0.0  # the burst of POSTs, first sent to last answered
    back_at: float = 0.0  # Prefect answers again (or the first POST, for the baseline)
    restart_s: float | None = None  # Prefect's restart, until it answered
    attempts_down: tuple[int, int] = (0, 0)  # the phase's triggers' attempts when Prefect came back: sum, max
    pending_down: int = 0  # ... and how many were still pending then
    serve_flows_alive: bool = True  # at the end of the outage
    serve_flows_restarted: bool = False
    dispatched_s: float | None = None  # back_at -> every request of the phase has its flow run id
    settled_s: float | None = None  # back_at -> every one ended, no flow process left
    statuses: Counter = field(default_factory=Counter)  # the requests' statuses once settled

    @property
    def request_ids(self) -> list[int]:
        return [p.request_id for p in self.posts if p.request_id is not None]

    def latencies(self) -> list[float]:
        return sorted(p.ms for p in self.posts)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def request_label(request_id: int) -> str:
    """The request's trigger source, and its flow runs' tag."""
    return f"analyses.assemblyanalysisrequest:{request_id}"
