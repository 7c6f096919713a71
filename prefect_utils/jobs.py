"""Crash-safe, idempotent submission and the shared poller (no Prefect, no Django: see DESIGN.md).

A job is identified by its submission key: the hash of its canonical spec and input hashes, plus the attempt.
The ledger row for the key is the source of truth; Slurm carries the key in the job comment so that a job
submitted by a process that died before recording it is found and adopted, never submitted again.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_utils.ledger import JobLedger, LedgerRecord
from prefect_utils.scheduler import JobSpec, SchedulerUnavailable, SlurmClient, SubmitLimitReached

logger = logging.getLogger(__name__)

POLLER_LEASE = "slurm-poller"
# Names of the points where a test may have the process SIGKILL itself, to prove the rerun repairs it.
FAULT_POINT_ENV = "PREFECT_UTILS_FAULT_POINT"


def _fault_point(name: str) -> None:
    if os.environ.get(FAULT_POINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def job_key(spec: JobSpec, inputs: Mapping[str, str]) -> str:
    """Hash of the canonical spec and the input hashes: equal work, equal key, on any machine."""
    payload = json.dumps({"spec": spec.canonical(), "inputs": dict(sorted(inputs.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


class Resubmit(enum.StrEnum):
    NEVER = "never"
    IF_FAILED = "if_failed"
    ALWAYS = "always"


@dataclass(frozen=True)
class ResubmitPolicy:
    """What to do when an attempt ends badly. OOM and TIMEOUT escalate resources by `factor`, up to the ceilings."""

    mode: Resubmit = Resubmit.NEVER
    max_attempts: int = 3
    factor: float = 2.0
    max_memory_mb: int = 64_000
    max_time_limit_minutes: int = 7 * 24 * 60

    def next_spec(self, previous: JobSpec, outcome: LedgerRecord) -> JobSpec | None:
        """The spec of the next attempt, or None when the policy says stop."""
        if outcome.attempt >= self.max_attempts or self.mode is Resubmit.NEVER:
            return None
        if outcome.state == "COMPLETED" and self.mode is not Resubmit.ALWAYS:
            return None
        if outcome.state == "CANCELLED":
            return None
        if outcome.state == "OUT_OF_MEMORY":
            memory = min(int(previous.memory_mb * self.factor), self.max_memory_mb)
            return None if memory <= previous.memory_mb else replace(previous, memory_mb=memory)
        if outcome.state == "TIMEOUT":
            limit = min(int(previous.time_limit_minutes * self.factor), self.max_time_limit_minutes)
            return (
                None if limit <= previous.time_limit_minutes else replace(previous, time_limit_minutes=limit)
            )
        return previous


@dataclass(frozen=True)
class PollConfig:
    min_interval: float = 1.0
    max_interval: float = 60.0
    growth: float = 1.5
    lease_ttl_factor: float = 3.0
    log_tail_lines: int = 5


@dataclass(frozen=True)
class ThrottleConfig:
    max_active_jobs: int = 100
    submits_per_minute: float = 600.0
    wait_step_seconds: float = 2.0


class JobFailed(Exception):
    """A job ended in a state other than COMPLETED; carries what an operator needs to see why."""

    def __init__(self, record: LedgerRecord) -> None:
        self.record = record
        detail = f"exit code {record.exit_code}" if record.exit_code is not None else "no exit code"
        reason = f", reason {record.reason}" if record.reason and record.reason != "None" else ""
        tail = record.log_tail.strip() or "(empty log)"
        super().__init__(
            f"Slurm job {record.job_id} ({record.spec.get('name', record.key[:12])}, attempt {record.attempt}) "
            f"ended {record.state} with {detail}{reason}. Last lines of its log:\n{tail}"
        )


class SlurmJobs:
    """Submit once, wait through the shared poller, resubmit by policy, cancel."""

    def __init__(
        self,
        ledger: JobLedger,
        client: SlurmClient | None = None,
        *,
        poll: PollConfig | None = None,
        throttle: ThrottleConfig | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ledger = ledger
        self.client = client or SlurmClient()
        self.poll = poll or PollConfig()
        self.throttle = throttle or ThrottleConfig()
        self.clock = clock
        self.sleep = sleep
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # --- submission ----------------------------------------------------------------------------------------

    def submit_once(
        self,
        spec: JobSpec,
        inputs: Mapping[str, str] | None = None,
        *,
        attempt: int = 1,
        labels: Mapping[str, Any] | None = None,
        previous_attempt: int | None = None,
        key: str | None = None,
    ) -> LedgerRecord:
        """Return the ledger record of the Slurm job for (spec, inputs, attempt), submitting it at most once."""
        inputs = dict(inputs or {})
        key = key or job_key(spec, inputs)
        record, created = self.ledger.get_or_create(
            key,
            attempt,
            spec=spec.canonical(),
            inputs=inputs,
            labels=dict(labels or {}),
            previous_attempt=previous_attempt,
        )
        if record.job_id:
            return record
        self._wait_for_capacity()
        with self.ledger.locked(key, attempt) as locked:
            if locked.record.job_id:
                return locked.record
            # A row we did not create and that has no job id: its creator may have died around sbatch.
            if not created:
                found = self.client.find_by_key(locked.record.submission_key)
                if found is not None:
                    logger.warning("Adopting Slurm job %s for %s", found.job_id, locked.record.submission_key)
                    locked.set_job_id(found.job_id)
                    return locked.record
            effective = JobSpec.from_canonical(locked.record.spec)
            job_id = self._sbatch_with_backpressure(effective, locked.record.submission_key)
            _fault_point("after_sbatch")
            locked.set_job_id(job_id)
            _fault_point("before_commit")
            submitted = locked.record
        _fault_point("after_commit")
        return submitted

    def _sbatch_with_backpressure(self, spec: JobSpec, submission_key: str) -> str:
        delay = self.throttle.wait_step_seconds
        while True:
            try:
                return self.client.submit(spec, submission_key)
            except SubmitLimitReached as exc:
                logger.info("Slurm refused more submissions (%s); retrying in %.0f s", exc, delay)
                self.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _wait_for_capacity(self) -> None:
        """Back-pressure: wait while our jobs fill the cap, or while we submit faster than the rate limit."""
        warned = False
        while True:
            active = self.ledger.count_active()
            recent = self.ledger.count_submitted_since(self.clock() - timedelta(minutes=1))
            if active < self.throttle.max_active_jobs and recent < self.throttle.submits_per_minute:
                return
            if not warned:
                logger.info(
                    "Throttled: %d active jobs (cap %d), %d submits in the last minute (cap %.0f)",
                    active,
                    self.throttle.max_active_jobs,
                    recent,
                    self.throttle.submits_per_minute,
                )
                warned = True
            self.sleep(self.throttle.wait_step_seconds)

    # --- waiting -------------------------------------------------------------------------------------------

    def poll_once(self) -> int:
        """One scheduler round for the whole service: one `job_states` call for every active ledger job."""
        log_paths = self.ledger.active_jobs()
        job_ids = list(log_paths)
        if not job_ids:
            self.ledger.record_poll(POLLER_LEASE, ok=True)
            return 0
        try:
            infos = self.client.job_states(job_ids)
        except SchedulerUnavailable as exc:
            # Never a failure: the jobs are still wherever they were; we just cannot see them.
            self.ledger.mark_stale(job_ids)
            self.ledger.record_poll(POLLER_LEASE, ok=False, error=str(exc))
            logger.warning("Slurm controller unavailable, job states are stale: %s", exc)
            return 0
        tails = {
            job_id: self.client.tail_log(path, self.poll.log_tail_lines)
            for job_id, info in infos.items()
            if info.state.value not in ("PENDING", "UNKNOWN")
            and (path := info.stdout_path or log_paths.get(job_id))
        }
        changed = self.ledger.apply_states(infos, tails, self.clock())
        self.ledger.record_poll(POLLER_LEASE, ok=True)
        return changed

    def wait_for_jobs(
        self,
        records: Sequence[LedgerRecord],
        *,
        on_poll: Callable[[list[LedgerRecord]], None] | None = None,
        deadline: float | None = None,
    ) -> list[LedgerRecord]:
        """Block until every job is terminal; states come from the ledger, kept fresh by whoever holds the lease."""
        try:
            return self._wait(records, on_poll=on_poll, deadline=deadline)
        finally:
            # Hand the lease on at once rather than make the next waiter sit out its expiry.
            self.ledger.release_lease(POLLER_LEASE, self.holder)

    def _wait(
        self,
        records: Sequence[LedgerRecord],
        *,
        on_poll: Callable[[list[LedgerRecord]], None] | None,
        deadline: float | None,
    ) -> list[LedgerRecord]:
        wanted = [(r.key, r.attempt) for r in records]
        interval = self.poll.min_interval
        last_states: dict[tuple[str, int], str] = {}
        while True:
            ttl = max(interval * self.poll.lease_ttl_factor, self.poll.min_interval * 3)
            if self.ledger.try_acquire_lease(POLLER_LEASE, self.holder, ttl):
                self.poll_once()
            current = self.ledger.records(wanted)
            if on_poll is not None:
                on_poll(current)
            if all(r.is_terminal for r in current):
                return current
            states = {(r.key, r.attempt): r.state for r in current}
            # Short intervals while things change, longer ones for jobs that run for days.
            interval = (
                self.poll.min_interval
                if states != last_states
                else min(interval * self.poll.growth, self.poll.max_interval)
            )
            last_states = states
            if deadline is not None and time.monotonic() + interval > deadline:
                raise TimeoutError(f"Jobs still running at the deadline: {sorted(states.values())}")
            self.sleep(interval)

    # --- whole lifecycle -----------------------------------------------------------------------------------

    def run(
        self,
        spec: JobSpec,
        inputs: Mapping[str, str] | None = None,
        *,
        policy: ResubmitPolicy | None = None,
        labels: Mapping[str, Any] | None = None,
        on_poll: Callable[[list[LedgerRecord]], None] | None = None,
    ) -> LedgerRecord:
        """Submit (or reattach to the latest attempt), wait, resubmit by policy; raise JobFailed at the end."""
        policy = policy or ResubmitPolicy()
        inputs = dict(inputs or {})
        key = job_key(spec, inputs)
        latest = self.ledger.latest(key)
        record = (
            latest
            if latest is not None and latest.job_id
            else self.submit_once(
                spec, inputs, attempt=latest.attempt if latest else 1, labels=labels, key=key
            )
        )
        while True:
            (record,) = self.wait_for_jobs([record], on_poll=on_poll)
            next_spec = policy.next_spec(JobSpec.from_canonical(record.spec), record)
            if next_spec is None:
                if record.state != "COMPLETED":
                    raise JobFailed(record)
                return record
            logger.info("Resubmitting %s as attempt %d after %s", key[:12], record.attempt + 1, record.state)
            record = self.submit_once(
                next_spec,
                inputs,
                attempt=record.attempt + 1,
                labels=labels,
                key=key,
                previous_attempt=record.attempt,
            )

    # --- cancellation --------------------------------------------------------------------------------------

    def cancel(
        self,
        *,
        flow_run_id: str | None = None,
        labels: Mapping[str, Any] | None = None,
        reason: str = "cancelled",
    ) -> list[str]:
        """scancel every non-terminal job of a flow run or of a labelled owner, and record it on the ledger."""
        job_ids = self.ledger.job_ids_for(flow_run_id=flow_run_id, labels=labels)
        if not job_ids:
            return []
        self.client.cancel(job_ids)
        self.ledger.mark_cancelled(job_ids, reason)
        # scancel exits 0 whatever happened: record what Slurm now says, since no waiter may poll again.
        try:
            self.ledger.apply_states(self.client.job_states(job_ids), {}, self.clock())
        except SchedulerUnavailable:
            self.ledger.mark_stale(job_ids)
        return job_ids
