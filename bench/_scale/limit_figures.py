"""The figures of scenario (b), computed from what a run read (`Readings`): plain functions over plain data, every
time a float of seconds since the epoch (one clock: Prefect, PostgreSQL and this process run on one machine).

- **Rounds.** A round starts at a poll that recorded job ends (the ledger stamps every row a poll changed with one
  `state_changed_at`) and lasts until the next such poll: the wake-up after that poll and any sweep before the
  next one. Its resumes are the flow runs' "Resuming" states in Prefect (one per accepted resume, whoever asked)
  with a timestamp in it; it may resume as many requests as the slots it freed plus the requests whose own jobs
  ended in it.
- **Flow processes.** Sampled children of serve_flows: alive at once (the most of any sample), and started (a pid
  seen for the first time) per minute.
- **Slots.** Jobs ended (slots freed) and jobs submitted in the window; the most jobs active at once (a ledger row
  holds its slot from its insertion to the poll that recorded its end).
- **Freed slot to next job.** The ends recorded while requests waited in the capacity queue (the last sample of
  the queue before the end), in order, each paired with the first job submitted after it that no earlier end took.
- **Fairness.** The order in which requests got their first job against their creation order, and the jobs that
  were a request's third (or later) while another request had none yet.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    """One ledger row that reached Slurm."""

    request_id: int
    claimed: float  # the row's insertion: its slot is taken from then on
    submitted: float | None
    ended: float | None  # Slurm's End (whole seconds), as the poller copied it
    recorded: float | None  # for an ended job: the poll that recorded the end (its state_changed_at)


@dataclass(frozen=True)
class Sample:
    at: float
    flow_pids: frozenset[int]
    queue: int | None  # requests in the capacity queue; None when not read at this sample


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds used so far: the machine's (busy, total), serve_flows' own (its flow processes apart), the
    Prefect server's process group's; and the load average then."""

    at: float
    busy: float
    total: float
    serve_flows: float
    prefect: float
    load: float


@dataclass
class Readings:
    """What one N's run read at its end, and the settings it ran with."""

    n: int
    max_active_jobs: int
    max_flow_processes: int
    poll_max: float
    release_every: float
    requests: list[int]  # in creation order
    creation_seconds: float
    release_start: float
    release_end: float
    drain_end: float
    released: list[float]  # when each held job was released
    not_released: int  # release ticks that found no held job
    jobs: list[Job]
    resumes: list[tuple[float, int]]  # (Resuming state's timestamp, request)
    running: list[tuple[float, int]]  # (Running state's timestamp, request): a flow process got going
    progress_resumes: (
        int  # the sum of RequestProgress.resumes (resumes Prefect accepted, by the service's count)
    )
    sweep_resumes: list[tuple[float, list[int]]]  # the "Sweep: ..." log lines that resumed requests
    rescheduled: list[tuple[float, list[int]]]  # the "Sweep: ..." log lines that rescheduled flow runs
    grants: list[tuple[float, int]]  # the "Capacity: granted N slot(s)" log lines
    samples: list[Sample]
    flow_cpu: dict[int, float]  # flow process -> its CPU seconds when last seen
    cpu: tuple[CpuMark, CpuMark]  # at the first release and at the end of the drain
    finished: dict[int, float] = field(default_factory=dict)  # request -> when it reached a final status

    def in_window(self, t: float | None) -> bool:
        return t is not None and self.release_start <= t <= self.drain_end


@dataclass(frozen=True)
class Round:
    at: float
    freed: int
    ended_requests: int
    resumes: int

    @property
    def allowed(self) -> int:
        return self.freed + self.ended_requests


def rounds(r: Readings) -> tuple[list[Round], int]:
    """The rounds of the window, and the resumes in the window before its first round (none are allowed)."""
    by_stamp: dict[float, list[Job]] = defaultdict(list)
    for job in r.jobs:
        if job.recorded is not None and r.in_window(job.recorded):
            by_stamp[job.recorded].append(job)
    stamps = sorted(by_stamp)
    resumes = sorted(t for t, _ in r.resumes if r.in_window(t))
    edges = [*stamps, math.inf]
    found = []
    for i, stamp in enumerate(stamps):
        jobs = by_stamp[stamp]
        count = bisect.bisect_left(resumes, edges[i + 1]) - bisect.bisect_left(resumes, stamp)
        found.append(Round(stamp, len(jobs), len({job.request_id for job in jobs}), count))
    before = bisect.bisect_left(resumes, stamps[0]) if stamps else len(resumes)
    return found, before


def window_samples(r: Readings) -> list[Sample]:
    return [s for s in r.samples if r.in_window(s.at)]


def process_starts(samples: list[Sample]) -> list[float]:
    """When each flow process was first seen."""
    seen: set[int] = set()
    starts = []
    for sample in samples:
        for pid in sample.flow_pids - seen:
            starts.append(sample.at)
            seen.add(pid)
    return starts


def per_minute(times: list[float], start: float, end: float) -> list[int]:
    """Counts of `times` in each whole minute from `start` (a last part minute only if it is half a minute)."""
    minutes = max(1, int((end - start) / 60 + 0.5))
    counts = [0] * minutes
    for t in times:
        if start <= t < start + 60 * minutes:
            counts[int((t - start) // 60)] += 1
    return counts


def most_active_jobs(r: Readings) -> int:
    """The most ledger rows holding a slot at once in the window (checked at every insertion)."""
    events = sorted(
        [(job.claimed, 1) for job in r.jobs]
        + [(job.recorded, -1) for job in r.jobs if job.recorded is not None]
    )
    active = most = 0
    for t, change in events:
        active += change
        if r.in_window(t):
            most = max(most, active)
    return most


@dataclass(frozen=True)
class SlotUse:
    ended: float | None  # Slurm's End
    recorded: float
    used: float | None  # the job submitted in the slot, None if none was before the window closed
    request_id: int | None  # the request of that job

    @property
    def from_end(self) -> float | None:
        base = self.ended if self.ended is not None else self.recorded
        return None if self.used is None else self.used - base

    @property
    def from_record(self) -> float | None:
        return None if self.used is None else self.used - self.recorded


def queue_at(samples: list[Sample], t: float) -> int | None:
    """The capacity queue's length at the last reading before `t`."""
    read = [s for s in samples if s.queue is not None]
    i = bisect.bisect_right([s.at for s in read], t)
    return read[i - 1].queue if i else None


def slot_uses(r: Readings) -> tuple[list[SlotUse], int]:
    """The slots freed while requests waited, each with the job that used it; and the ends when nothing waited."""
    ends = sorted(
        (job for job in r.jobs if job.recorded is not None and r.in_window(job.recorded)),
        key=lambda job: (job.recorded, job.ended or 0.0),
    )
    submitted = sorted(
        (job.submitted, job.request_id)
        for job in r.jobs
        if job.submitted is not None and r.in_window(job.submitted)
    )
    times = [t for t, _ in submitted]
    uses = []
    idle = 0
    next_free = 0
    for job in ends:
        assert job.recorded is not None
        if not queue_at(r.samples, job.recorded):
            idle += 1
            continue
        next_free = max(next_free, bisect.bisect_right(times, job.recorded))
        used, request = submitted[next_free] if next_free < len(submitted) else (None, None)
        next_free += 1
        uses.append(SlotUse(job.ended, job.recorded, used, request))
    return uses, idle


@dataclass(frozen=True)
class Legs:
    """Where the time from a recorded end to the job in its slot went: to the resume of the request that used it,
    from there to its flow process running (the runner's queue, the process's start and imports), and from there
    to the submission (the pass)."""

    to_resume: list[float]
    to_running: list[float]
    to_submit: list[float]


def legs(r: Readings, uses: list[SlotUse]) -> Legs:
    by_request: dict[int, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for t, request in r.resumes:
        by_request[request][0].append(t)
    for t, request in r.running:
        by_request[request][1].append(t)
    found = Legs([], [], [])
    for use in uses:
        if use.used is None or use.request_id is None:
            continue
        resumes, running = by_request[use.request_id]
        resumed = _last_between(resumes, use.recorded, use.used)
        started = _last_between(running, resumed if resumed is not None else use.recorded, use.used)
        if resumed is None or started is None:
            continue  # its slot went to a pass already running (a linger), not to a resume
        found.to_resume.append(resumed - use.recorded)
        found.to_running.append(started - resumed)
        found.to_submit.append(use.used - started)
    return found


def _last_between(times: list[float], start: float, end: float) -> float | None:
    inside = [t for t in times if start <= t <= end]
    return max(inside) if inside else None


def flow_process_lives(r: Readings) -> list[float]:
    """How long each flow process seen in the window was seen alive (to the sampling interval)."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for sample in window_samples(r):
        for pid in sample.flow_pids:
            first.setdefault(pid, sample.at)
            last[pid] = sample.at
    return [last[pid] - first[pid] for pid in first]


def flow_process_cpu(r: Readings) -> list[float]:
    """CPU seconds of each flow process seen in the window (when last seen: up to a sampling interval short)."""
    seen = {pid for sample in window_samples(r) for pid in sample.flow_pids}
    return [cpu for pid, cpu in r.flow_cpu.items() if pid in seen]


@dataclass(frozen=True)
class Fairness:
    in_order: float  # the share of pairs of requests that got their first jobs in creation order
    largest_shift: int  # places between a request's creation rank and its first-job rank, the most
    never_served: int  # requests with no job by the end of the window
    violations: int  # jobs that were a request's third or later while another unfinished request had none
    first_violation: tuple[float, int, int] | None  # (when, the request served, a request with none)
    jobs_per_request: tuple[int, float, int]  # least, median, most jobs by the end of the window
    first_job_by_tenth: list[
        float | None
    ]  # median first job (s from the window's start) per tenth by creation


def fairness(r: Readings) -> Fairness:
    times: dict[int, list[float]] = defaultdict(list)
    for job in r.jobs:
        if job.submitted is not None and job.submitted <= r.drain_end:
            times[job.request_id].append(job.submitted)
    for request_times in times.values():
        request_times.sort()
    first = {request: request_times[0] for request, request_times in times.items()}
    served = [request for request in r.requests if request in first]
    by_first = sorted(served, key=lambda request: (first[request], r.requests.index(request)))
    rank = {request: i for i, request in enumerate(by_first)}
    pairs = in_order = 0
    for i, a in enumerate(served):
        for b in served[i + 1 :]:
            pairs += 1
            in_order += rank[a] < rank[b]
    shift = max((abs(i - rank[request]) for i, request in enumerate(served)), default=0)

    # A request's third (or later) job while another unfinished request had not had one.
    violations = 0
    first_violation = None
    for request, request_times in times.items():
        for t in request_times[2:]:
            if not r.in_window(t):
                continue
            without = [
                other
                for other in r.requests
                if other != request
                and (other not in first or first[other] > t)
                and (other not in r.finished or r.finished[other] > t)
            ]
            if without:
                violations += 1
                if first_violation is None or t < first_violation[0]:
                    first_violation = (t, request, without[0])

    counts = [len(times.get(request, [])) for request in r.requests]
    tenths: list[float | None] = []
    size = max(1, len(r.requests) // 10)
    for start in range(0, len(r.requests), size):
        part = [first[q] - r.release_start for q in r.requests[start : start + size] if q in first]
        tenths.append(statistics.median(part) if part else None)
    return Fairness(
        in_order=in_order / pairs if pairs else 1.0,
        largest_shift=shift,
        never_served=len(r.requests) - len(served),
        violations=violations,
        first_violation=first_violation,
        jobs_per_request=(min(counts), statistics.median(counts), max(counts)) if counts else (0, 0.0, 0),
        first_job_by_tenth=tenths,
    )
