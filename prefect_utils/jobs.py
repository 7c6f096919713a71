"""Crash-safe, idempotent submission in batches, the shared poller, the resubmit policy (no Prefect, no Django).

A job is identified by its submission key: the hash of its canonical spec and input hashes, plus the attempt.
The ledger row for the key is the source of truth; Slurm carries the key in the job comment so that a job
submitted by a process that died before recording it is found and adopted, never submitted again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_utils.ledger import JobLedger, LedgerRecord, Submission
from prefect_utils.scheduler import (
    JobInfo,
    JobSpec,
    JobState,
    SchedulerError,
    SchedulerUnavailable,
    SlurmClient,
    SubmissionRejected,
    SubmitLimitReached,
)

logger = logging.getLogger(__name__)

POLLER_LEASE = "slurm-poller"
# Names of the points where a test may have the process SIGKILL itself, to prove the rerun repairs it, or with
# ":stop" SIGSTOP itself there: a barrier the test releases (SIGCONT) or turns into a crash (SIGKILL).
FAULT_POINT_ENV = "PREFECT_UTILS_FAULT_POINT"

# Failure classes (see ResubmitPolicy).
INFRASTRUCTURE_FAILURES = frozenset({"NODE_FAIL", "PREEMPTED"})
RESOURCE_FAILURES = frozenset({"OUT_OF_MEMORY", "TIMEOUT"})


def _fault_point(name: str) -> None:
    point, _, action = os.environ.get(FAULT_POINT_ENV, "").partition(":")
    if point == name:
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)


def job_key(spec: JobSpec, inputs: Mapping[str, str]) -> str:
    """Hash of the canonical spec and the input hashes: equal work, equal key, on any machine."""
    payload = json.dumps({"spec": spec.canonical(), "inputs": dict(sorted(inputs.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class ResubmitPolicy:
    """What follows an attempt that ended badly, by failure class.

    - exit code (FAILED), CANCELLED: nothing; the failure is reported with the log tail.
    - OUT_OF_MEMORY / TIMEOUT: an attempt with memory / time multiplied by `factor`, capped by the partition's
      limits, at most `max_escalations` times. `memory_environment` names the variables carrying the tool's own
      memory limit (in bytes, as a fraction of the job's memory), which are scaled with it.
    - NODE_FAIL / PREEMPTED: the same spec again, at most `max_infrastructure_retries` times; these do not use
      the escalation budget, since the job did nothing wrong.
    """

    max_escalations: int = 1
    factor: float = 2.0
    max_memory_mb: int = 64_000
    max_time_limit_minutes: int = 7 * 24 * 60
    max_infrastructure_retries: int = 3
    memory_environment: dict[str, float] = field(default_factory=dict)

    def next_spec(self, history: Sequence[LedgerRecord]) -> JobSpec | None:
        """The spec of the next attempt after the last of `history` (every attempt, oldest first), or None."""
        last = history[-1]
        previous = JobSpec.from_canonical(last.spec)
        if last.state in INFRASTRUCTURE_FAILURES:
            used = sum(record.state in INFRASTRUCTURE_FAILURES for record in history)
            return previous if used <= self.max_infrastructure_retries else None
        if last.state not in RESOURCE_FAILURES:
            return None
        if sum(record.state in RESOURCE_FAILURES for record in history) > self.max_escalations:
            return None
        if last.state == "OUT_OF_MEMORY":
            memory = min(int(previous.memory_mb * self.factor), self.max_memory_mb)
            if memory <= previous.memory_mb:
                return None
            environment = dict(previous.environment)
            for name, fraction in self.memory_environment.items():
                if name in environment:
                    environment[name] = str(int(memory * 1024 * 1024 * fraction))
            return replace(previous, memory_mb=memory, environment=environment)
        limit = min(int(previous.time_limit_minutes * self.factor), self.max_time_limit_minutes)
        return None if limit <= previous.time_limit_minutes else replace(previous, time_limit_minutes=limit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResubmitPolicy:
        return cls(**data)


@dataclass(frozen=True)
class PollConfig:
    min_interval: float = 1.0
    max_interval: float = 60.0
    growth: float = 1.5
    lease_ttl_factor: float = 3.0
    log_tail_lines: int = 5
    # A job's state is logged when it changes; a job that keeps running gets one line this often, not one a poll.
    still_running_report_seconds: float = 6 * 3600


@dataclass(frozen=True)
class ThrottleConfig:
    max_active_jobs: int = 100
    submits_per_minute: float = 600.0


def describe_failure(record: LedgerRecord) -> str:
    """What an operator needs to see why an attempt did not complete: state, exit code, reason, log tail."""
    detail = f"exit code {record.exit_code}" if record.exit_code is not None else "no exit code"
    reason = f", reason {record.reason}" if record.reason and record.reason != "None" else ""
    tail = record.log_tail.strip() or "(empty log)"
    job = f"Slurm job {record.job_id}" if record.job_id else "The job"
    return (
        f"{job} ({record.spec.get('name', record.key[:12])}, attempt {record.attempt}) "
        f"ended {record.state} with {detail}{reason}. Last lines of its log:\n{tail}"
    )


class SlurmJobs:
    """Submit once (in batches), poll for the whole service, cancel."""

    def __init__(
        self,
        ledger: JobLedger,
        client: SlurmClient | None = None,
        *,
        poll: PollConfig | None = None,
        throttle: ThrottleConfig | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ledger = ledger
        self.client = client or SlurmClient()
        self.poll = poll or PollConfig()
        self.throttle = throttle or ThrottleConfig()
        self.clock = clock
        self._reported_running: dict[str, datetime] = {}  # job id -> when its last "still running" line was

    # --- submission ----------------------------------------------------------------------------------------

    def capacity(self) -> int:
        """How many jobs may be submitted now under the cap on active jobs and the submit rate."""
        active = self.ledger.count_active()
        recent = self.ledger.count_submitted_since(self.clock() - timedelta(minutes=1))
        return max(
            0, min(self.throttle.max_active_jobs - active, int(self.throttle.submits_per_minute) - recent)
        )

    def submit(self, submissions: Sequence[Submission]) -> list[LedgerRecord]:
        """Put every submission on the cluster at most once; their ledger records, in order.

        The rows are committed (claimed by this call) before any sbatch; then, holding their locks, rows with a
        job id are reattached, rows someone else created without a job id are looked up in Slurm by key and
        adopted (their creator may have died around sbatch), the rest are submitted; every job id is written
        in the one transaction that commits the batch. A crash anywhere leaves rows that the next call repairs.
        A controller that stops answering mid-batch ends the batch: what was submitted is recorded, the rest
        stays NEW for the next pass.
        """
        if not submissions:
            return []
        pairs = [(s.key, s.attempt) for s in submissions]
        existing = self.ledger.records(pairs)
        if len(existing) == len(pairs) and not any(r.needs_submission for r in existing):
            return existing  # a rerun over steps already on the cluster: one read, no lock, no write
        claim = uuid.uuid4().hex
        self.ledger.insert_missing(submissions, claim)
        with self.ledger.locked(pairs) as batch:
            records = {(r.key, r.attempt): r for r in batch.records}
            orphans = [r for r in batch.records if r.needs_submission and r.claim != claim]
            adopted = {}
            if orphans:
                since = min((r.created for r in orphans if r.created), default=None)
                adopted = self.client.find_by_keys(
                    [r.submission_key for r in orphans],
                    since=since - timedelta(minutes=5) if since else None,
                )
            for submission in submissions:
                record = records[(submission.key, submission.attempt)]
                if not record.needs_submission:
                    continue
                found = adopted.get(record.submission_key)
                if found is not None:
                    logger.warning("Adopting Slurm job %s for %s", found.job_id, record.submission_key)
                    batch.set_job_id(record.key, record.attempt, found.job_id)
                    continue
                try:
                    job_id = self.client.submit(JobSpec.from_canonical(record.spec), record.submission_key)
                except SubmissionRejected as exc:
                    batch.reject(record.key, record.attempt, f"sbatch refused the job: {exc}")
                    continue
                except (SubmitLimitReached, SchedulerUnavailable) as exc:
                    logger.warning("Submission stopped (%s); the rest waits for the next pass", exc)
                    break
                _fault_point("after_sbatch")
                batch.set_job_id(record.key, record.attempt, job_id)
            _fault_point("before_commit")
        _fault_point("after_commit")
        return self.ledger.records(pairs)

    def submit_once(
        self,
        spec: JobSpec,
        inputs: Mapping[str, str] | None = None,
        *,
        attempt: int = 1,
        labels: Mapping[str, Any] | None = None,
    ) -> LedgerRecord:
        """Submit one job at most once; a second call (from any process) returns the same record."""
        inputs = dict(inputs or {})
        submission = Submission(
            job_key(spec, inputs), attempt, spec.canonical(), inputs=inputs, labels=dict(labels or {})
        )
        (record,) = self.submit([submission])
        return record

    # --- the shared poller ---------------------------------------------------------------------------------

    def poll_once(
        self, holder: str, log_paths: Mapping[str, str | None] | None = None
    ) -> list[LedgerRecord] | None:
        """One scheduler round for the whole service: one `job_states` call for every active ledger job
        (`log_paths` is `ledger.active_jobs()`, for a caller that has just read it). A job that Slurm would keep
        pending forever is cancelled and recorded FAILED.

        Returns the rows whose state changed, or None when `holder` lost the poller lease meanwhile (then
        nothing was written: a poller that stalled past its lease must not overwrite a newer poller's states).
        """
        log_paths = self.ledger.active_jobs() if log_paths is None else log_paths
        job_ids = list(log_paths)
        if not job_ids:
            self.ledger.record_poll(POLLER_LEASE, ok=True)
            return []
        try:
            infos = self.client.job_states(job_ids)
        except SchedulerUnavailable as exc:
            # Never a failure: the jobs are still wherever they were; we just cannot see them.
            self.ledger.mark_stale(job_ids)
            self.ledger.record_poll(POLLER_LEASE, ok=False, error=str(exc))
            logger.warning("Slurm controller unavailable, job states are stale: %s", exc)
            return []
        tails = {
            job_id: self.client.tail_log(path, self.poll.log_tail_lines)
            for job_id, info in infos.items()
            if info.state.value not in ("PENDING", "UNKNOWN")
            and (path := info.stdout_path or log_paths.get(job_id))
        }
        polled = self._fail_unschedulable(infos)
        changed = self.ledger.apply_states(polled, tails, self.clock(), lease=(POLLER_LEASE, holder))
        if changed is not None:
            self.ledger.record_poll(POLLER_LEASE, ok=True)
            self._log_states(changed, polled, tails)
        return changed

    def _log_states(
        self, changed: list[LedgerRecord], polled: Mapping[str, JobInfo], tails: Mapping[str, str]
    ) -> None:
        """One line per state change; for a job still running, one line per `still_running_report_seconds`."""
        now = self.clock()
        for record in changed:
            name = record.labels.get("step") or record.spec.get("name") or record.key[:12]
            detail = f" (exit code {record.exit_code})" if record.exit_code is not None else ""
            reason = f": {record.reason}" if record.reason and record.state != "COMPLETED" else ""
            logger.info(
                "Slurm job %s, %s attempt %d: %s%s%s",
                record.job_id,
                name,
                record.attempt,
                record.state,
                detail,
                reason,
            )
            if record.state == "RUNNING":
                self._reported_running[record.job_id or ""] = now
        interval = timedelta(seconds=self.poll.still_running_report_seconds)
        for job_id, info in polled.items():
            if info.state != JobState.RUNNING:
                self._reported_running.pop(job_id, None)
                continue
            last = self._reported_running.setdefault(job_id, now)
            if now - last >= interval:
                self._reported_running[job_id] = now
                running_for = now - info.start if info.start else now - last
                tail = (tails.get(job_id) or "").strip().splitlines()[-1:] or ["(no output yet)"]
                logger.info(
                    "Slurm job %s still RUNNING after %s; log tail: %s",
                    job_id,
                    _hours(running_for),
                    tail[0][:300],
                )

    def _fail_unschedulable(self, infos: Mapping[str, JobInfo]) -> Mapping[str, JobInfo]:
        """`infos` with every job Slurm would keep pending forever cancelled and reported FAILED, the reason in
        the failure text: a FAILED attempt is final for ResubmitPolicy, as the same spec would only pend again.

        The cancel comes before the lease-fenced write. Should this poller have lost its lease meanwhile, it has
        cancelled a job nobody could run and the next poller records the end Slurm reports; the other order could
        leave a row final while its job still pends, and no one would ever cancel that job.
        """
        stuck = [job_id for job_id, info in infos.items() if info.unschedulable]
        if not stuck:
            return infos
        try:
            self.client.cancel(stuck)
        except SchedulerError as exc:
            # They stay PENDING for another try at the next poll; the other jobs' states are recorded meanwhile.
            logger.warning("Could not cancel never-schedulable Slurm jobs %s: %s", stuck, exc)
            return infos
        ended = self.clock()
        failed = {}
        for job_id in stuck:
            info = infos[job_id]
            logger.warning("Cancelled Slurm job %s: pending for good (%s)", job_id, info.reason)
            failed[job_id] = replace(
                info,
                state=JobState.FAILED,
                reason=f"never schedulable: {info.reason} (it violates limits or constraints of the cluster, which "
                "may have changed after submission: Slurm would keep it pending until an operator stepped in); "
                "cancelled",
                end=ended,
            )
        return {**infos, **failed}

    # --- cancellation --------------------------------------------------------------------------------------

    def cancel(self, labels: Mapping[str, Any], reason: str = "cancelled") -> list[LedgerRecord]:
        """scancel every unfinished job with these labels, including jobs submitted but never recorded.

        Returns what is still unfinished afterwards: empty once Slurm confirmed every job over. scancel exits 0
        whatever happened, so the states are read back rather than assumed; a caller retries while this is
        non-empty (a controller that is down raises SchedulerError, and the intent stays to be carried out).
        """
        unfinished = self.ledger.unfinished(labels)
        if not unfinished:
            return []
        unrecorded = [r for r in unfinished if r.needs_submission]
        if unrecorded:
            since = min((r.created for r in unrecorded if r.created), default=None)
            found = self.client.find_by_keys(
                [r.submission_key for r in unrecorded], since=since - timedelta(minutes=5) if since else None
            )
            with self.ledger.locked([(r.key, r.attempt) for r in unrecorded]) as batch:
                for record in batch.records:
                    if not record.needs_submission:
                        continue
                    job = found.get(record.submission_key)
                    if job is not None:
                        batch.set_job_id(record.key, record.attempt, job.job_id)
                    else:
                        batch.reject(record.key, record.attempt, f"{reason} before it was submitted")
            unfinished = self.ledger.unfinished(labels)
        job_ids = [r.job_id for r in unfinished if r.job_id]
        if job_ids:
            self.client.cancel(job_ids)
            self.ledger.mark_cancelled([(r.key, r.attempt) for r in unfinished], reason)
            self.ledger.apply_states(self.client.job_states(job_ids), {}, self.clock(), lease=None)
        return self.ledger.unfinished(labels)


class Poller:
    """The service's one poller: whoever holds the lease polls, at intervals that adapt to what changes."""

    def __init__(self, jobs: SlurmJobs, holder: str | None = None) -> None:
        self.jobs = jobs
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.interval = jobs.poll.min_interval
        self.holding = False
        self._last_active: frozenset[str] = frozenset()
        self._next_at = 0.0

    def due(self) -> bool:
        """Whether to tick now: the interval has passed, or jobs were submitted since the last poll (they may
        end within seconds, and waiting a long interval for them would delay their flow runs)."""
        if time.monotonic() >= self._next_at:
            return True
        return self.holding and self.jobs.ledger.count_active() != len(self._last_active)

    def tick(self) -> list[LedgerRecord] | None:
        """Poll if this process holds (or takes) the lease; the rows that changed state, None if not polling.

        Short intervals while things change or new jobs appear, longer ones for jobs that run for days.
        """
        config = self.jobs.poll
        ttl = max(self.interval * config.lease_ttl_factor, config.min_interval * 3)
        self.holding = self.jobs.ledger.try_acquire_lease(POLLER_LEASE, self.holder, ttl)
        if not self.holding:
            self.interval = config.min_interval
            self._next_at = time.monotonic() + self.interval
            return None
        log_paths = self.jobs.ledger.active_jobs()
        active = frozenset(log_paths)
        try:
            changed = self.jobs.poll_once(self.holder, log_paths)
        except SchedulerError as exc:
            logger.warning("Poll failed: %s", exc)
            changed = []
        if changed or active != self._last_active:
            self.interval = config.min_interval
        else:
            self.interval = min(self.interval * config.growth, config.max_interval)
        self._last_active = active
        self._next_at = time.monotonic() + self.interval
        return changed

    def release(self) -> None:
        self.jobs.ledger.release_lease(POLLER_LEASE, self.holder)


def _hours(duration: timedelta) -> str:
    hours, rest = divmod(int(duration.total_seconds()), 3600)
    return f"{hours} h {rest // 60:02d} min"
