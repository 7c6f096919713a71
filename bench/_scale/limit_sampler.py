"""What scenario (b) samples while it runs: serve_flows' flow processes (and the CPU each has used), the capacity
queue's length, and the CPU of the machine and of the stack's processes between two moments."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from bench._procs import flow_processes, group_members
from bench._scale.limit_figures import CpuMark, Sample

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (with `children`, also of the children it has waited for); 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    # After the command: state is field 3 of stat(5), utime 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat (idle and iowait not busy)."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    return (total - values[3] - values[4]) / _TICK, total / _TICK


def cpu_mark(serve_flows_pid: int, prefect_pid: int) -> CpuMark:
    busy, total = machine_busy()
    prefect = cpu_seconds(prefect_pid, children=True) + sum(
        cpu_seconds(pid) for pid in group_members(prefect_pid) if pid != prefect_pid
    )
    return CpuMark(time.time(), busy, total, cpu_seconds(serve_flows_pid), prefect, os.getloadavg()[0])


class Sampler:
    """A thread that reads serve_flows' flow processes (and their CPU) every `every` s, and the capacity queue's
    length every other time."""

    def __init__(self, server_pid: int, every: float) -> None:
        self.server_pid = server_pid
        self.every = every
        self.samples: list[Sample] = []
        self.flow_cpu: dict[int, float] = {}  # flow process -> its CPU seconds at its last sighting
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def peak(self, since: float) -> int:
        return max((len(s.flow_pids) for s in list(self.samples) if s.at >= since), default=0)

    def last_busy(self) -> float | None:
        """The last sample with a flow process alive (the first sample if none ever was; None before any)."""
        samples = list(self.samples)
        busy = next((s.at for s in reversed(samples) if s.flow_pids), None)
        return busy if busy is not None else (samples[0].at if samples else None)

    def _run(self) -> None:
        from django.db import DatabaseError, connection

        from analyses.models import ACTIVE_REQUEST_STATUSES
        from workflows.models import RequestProgress

        queue = RequestProgress.objects.filter(
            request__status__in=ACTIVE_REQUEST_STATUSES, capacity_wanted__gt=0
        )
        tick = 0
        try:
            while not self._stop.is_set():
                at = time.time()
                pids = frozenset(flow_processes(self.server_pid))
                for pid in pids:
                    self.flow_cpu[pid] = max(self.flow_cpu.get(pid, 0.0), cpu_seconds(pid))
                waiting = None
                if tick % 2 == 0:
                    try:
                        waiting = queue.count()
                    except DatabaseError:  # PostgreSQL restarted under us: a new connection next time
                        connection.close()
                self.samples.append(Sample(at, pids, waiting))
                tick += 1
                self._stop.wait(max(0.0, at + self.every - time.time()))
        finally:
            connection.close()
