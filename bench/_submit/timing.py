"""How bench/submit.py times a phase: the sbatch/squeue/sacct subprocesses (TimedRunner), each ledger step of
SlurmJobs.submit and each COMMIT (StepTimer), and the measured row of a phase (Phase)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench._report import QueryTimer


class TimedRunner:
    """subprocess.run for SlurmClient that also adds up the wall time of each command."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def __call__(self, args, **kwargs):
        start = time.perf_counter()
        try:
            return subprocess.run(args, **kwargs)
        finally:
            self.seconds[args[0]] += time.perf_counter() - start


class StepTimer:
    """Wall time of each ledger step of SlurmJobs.submit (through a thin proxy of the ledger) and of each COMMIT."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def add(self, step: str, since: float) -> None:
        self.seconds[step] += time.perf_counter() - since
        self.calls[step] += 1

    def wrap_ledger(self, ledger):
        timer = self

        class TimedLedger:
            def __getattr__(self, name: str):
                attribute = getattr(ledger, name)
                if name == "locked":
                    return timer._timed_locked(attribute)
                if not callable(attribute):
                    return attribute

                def timed(*args, **kwargs):
                    start = time.perf_counter()
                    try:
                        return attribute(*args, **kwargs)
                    finally:
                        timer.add(f"ledger.{name}()", start)

                return timed

        return TimedLedger()

    def _timed_locked(self, locked):
        timer = self

        @contextlib.contextmanager
        def timed_locked(*args, **kwargs):
            manager = locked(*args, **kwargs)
            start = time.perf_counter()
            batch = manager.__enter__()
            timer.add("ledger.locked() enter", start)
            try:
                yield batch
            except BaseException:
                if not manager.__exit__(*sys.exc_info()):
                    raise
            else:
                start = time.perf_counter()
                manager.__exit__(None, None, None)
                timer.add("ledger.locked() exit", start)

        return timed_locked

    @contextlib.contextmanager
    def timing_commits(self, connection):
        commit = connection.commit

        def timed_commit() -> None:
            start = time.perf_counter()
            try:
                commit()
            finally:
                self.add("COMMIT", start)

        connection.commit = timed_commit
        try:
            yield
        finally:
            del connection.commit


@dataclass
class Phase:
    """One measured row of the table."""

    label: str
    seconds: float
    jobs: int
    calls: Counter[str] = field(default_factory=Counter)
    queries: QueryTimer | None = None

    def row(self, n: int) -> str:
        sql = "-" if self.queries is None else str(self.queries.count)
        return (
            f"{self.label:<46} {self.seconds:8.3f} {1000 * self.seconds / n:8.2f} {self.calls['sbatch']:7d} "
            f"{self.calls['squeue']:7d} {self.calls['sacct']:6d} {sql:>5}"
        )


@dataclass
class PassPhase(Phase):
    """A reconciler pass: its statements are always counted."""

    queries: QueryTimer = field(default_factory=QueryTimer)
    result: Any = None  # what reconcile_once returned
