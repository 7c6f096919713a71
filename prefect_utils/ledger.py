"""The storage interface the submission protocol and the poller need; `workflows.orchestration.ledger` implements it on Django."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from prefect_utils.job_spec import JobInfo
from prefect_utils.keys import submission_key
from prefect_utils.states import TERMINAL_STATES, JobState


@dataclass(frozen=True)
class LedgerRecord:
    key: str
    attempt: int
    spec: dict[str, Any]
    job_id: str | None = None
    state: JobState = JobState.NEW
    slurm_state: str = ""
    reason: str = ""
    exit_code: int | None = None
    stale: bool = False
    checked_at: datetime | None = None
    log_tail: str = ""
    labels: dict[str, Any] = field(default_factory=dict)
    claim: str = ""
    created: datetime | None = None

    @property
    def submission_key(self) -> str:
        return submission_key(self.key, self.attempt)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def needs_submission(self) -> bool:
        """No job was recorded for this attempt (one may exist in Slurm, submitted by a process that died)."""
        return self.job_id is None and self.state == JobState.NEW


@dataclass(frozen=True)
class ActiveJob:
    """What the poller needs of one submitted job that is not over."""

    job_id: str
    submission_key: str  # the comment Slurm must report for this job id: anything else is another job
    log_path: str | None  # from the spec, since sacct does not report it
    state: JobState
    state_changed_at: datetime | None


@dataclass(frozen=True)
class JobSubmission:
    """One attempt to put in the ledger and on the cluster."""

    key: str
    attempt: int
    spec: dict[str, Any]
    inputs: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, Any] = field(default_factory=dict)
    previous_attempt: int | None = None

    @property
    def submission_key(self) -> str:
        return submission_key(self.key, self.attempt)


class LockedBatch(Protocol):
    @property
    def records(self) -> list[LedgerRecord]: ...

    def set_job_id(self, key: str, attempt: int, job_id: str) -> None: ...

    def reject(self, key: str, attempt: int, reason: str) -> None:
        """sbatch refused the spec itself: the attempt is FAILED without a job."""


class JobLedger(Protocol):
    def insert_missing(self, submissions: Sequence[JobSubmission], claim: str) -> None:
        """Create the rows that do not exist yet, marked with `claim`, in one committed transaction."""

    def locked(self, pairs: Sequence[tuple[str, int]]) -> AbstractContextManager[LockedBatch]:
        """One transaction holding the row locks of `pairs`; what `set_job_id`/`reject` wrote commits on exit."""

    def records(self, pairs: Iterable[tuple[str, int]]) -> list[LedgerRecord]:
        """The records of these (key, attempt) pairs that exist, in the order asked."""

    def attempts(self, keys: Iterable[str]) -> dict[str, list[LedgerRecord]]:
        """Every attempt of each key, oldest first: one query however many keys."""

    def active_jobs(self) -> dict[str, ActiveJob]:
        """Every submitted job that is not terminal, whoever submitted it, by job id: the poller's work list."""

    def count_active(self) -> int: ...

    def count_holding_slots(self) -> int:
        """Rows that hold a slot under the cap on active jobs: every attempt not over, on the cluster or claimed
        for submission (NEW), so that a claim counts from the moment its row is committed."""
        ...

    def count_submitted_since(self, since: datetime) -> int:
        """Attempts submitted, or claimed for submission, since then (the submit rate)."""
        ...

    def apply_states(
        self,
        infos: Mapping[str, JobInfo],
        log_tails: Mapping[str, str],
        checked_at: datetime,
        *,
        lease: tuple[str, str] | None,
    ) -> list[LedgerRecord] | None:
        """Record polled states of active rows while holding `lease` (name, holder); the rows whose state
        changed, or None when the lease was no longer ours and nothing was written. `lease=None` is for the one
        caller that polls its own jobs outside the poller (confirming a cancellation).

        `checked_at` is when Slurm was read. A state change is stamped later, in the commit's order (see
        `read_point`)."""

    def read_point(self) -> datetime:
        """The time a reader of the ledger records as "read at": a state change not committed when this returns
        is stamped later than it, so `state_changed_at > read point` finds every change the reader missed."""

    def mark_stale(self, job_ids: Iterable[str]) -> None: ...

    def try_acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Compare-and-set: take or extend the lease if it is free, expired or already ours."""

    def release_lease(self, name: str, holder: str) -> None: ...

    def record_poll(self, name: str, *, ok: bool, error: str = "") -> None: ...

    def unfinished(self, labels: Mapping[str, Any]) -> list[LedgerRecord]:
        """Rows with these labels that are not terminal: submitted and live, or never recorded as submitted."""

    def mark_cancelled(self, pairs: Iterable[tuple[str, int]], reason: str) -> None: ...
