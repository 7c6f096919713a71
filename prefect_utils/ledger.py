"""The storage interface the submission protocol and the poller need; `workflows.ledger` implements it on Django."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from prefect_utils.scheduler import JobInfo

TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "CANCELLED"}
)


@dataclass(frozen=True)
class LedgerRecord:
    key: str
    attempt: int
    spec: dict[str, Any]
    job_id: str | None = None
    state: str = "NEW"
    slurm_state: str = ""
    reason: str = ""
    exit_code: int | None = None
    stale: bool = False
    checked_at: datetime | None = None
    log_tail: str = ""
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def submission_key(self) -> str:
        return submission_key(self.key, self.attempt)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def submission_key(key: str, attempt: int) -> str:
    return f"{key}-{attempt}"


class LockedRecord(Protocol):
    record: LedgerRecord

    def set_job_id(self, job_id: str) -> None: ...


class JobLedger(Protocol):
    def get_or_create(
        self,
        key: str,
        attempt: int,
        *,
        spec: Mapping[str, Any],
        inputs: Mapping[str, str],
        labels: Mapping[str, Any],
        previous_attempt: int | None = None,
    ) -> tuple[LedgerRecord, bool]:
        """Insert the row (committed) or return the existing one; the bool says whether this call created it."""

    def locked(self, key: str, attempt: int) -> AbstractContextManager[LockedRecord]:
        """A transaction holding the row lock; `set_job_id` inside it is committed on exit."""

    def latest(self, key: str) -> LedgerRecord | None: ...

    def get(self, key: str, attempt: int) -> LedgerRecord: ...

    def records(self, submission_keys: Iterable[tuple[str, int]]) -> list[LedgerRecord]: ...

    def active_jobs(self) -> dict[str, str | None]:
        """Every submitted job that is not terminal, whoever submitted it, with the path of its log.

        The poller's whole work list. The log path comes from the spec, since sacct does not report it.
        """

    def count_active(self) -> int: ...

    def count_submitted_since(self, since: datetime) -> int: ...

    def apply_states(
        self, infos: Mapping[str, JobInfo], log_tails: Mapping[str, str], checked_at: datetime
    ) -> int:
        """Record polled states; returns how many rows changed state."""

    def mark_stale(self, job_ids: Iterable[str]) -> None: ...

    def try_acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Compare-and-set: take or extend the lease if it is free, expired or already ours."""

    def release_lease(self, name: str, holder: str) -> None: ...

    def record_poll(self, name: str, *, ok: bool, error: str = "") -> None: ...

    def job_ids_for(
        self, *, flow_run_id: str | None = None, labels: Mapping[str, Any] | None = None
    ) -> list[str]: ...

    def mark_cancelled(self, job_ids: Iterable[str], reason: str) -> None: ...
