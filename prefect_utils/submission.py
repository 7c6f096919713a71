"""Crash-safe, idempotent submission in batches, and cancellation (no Prefect, no Django).

The ledger row of an attempt is the source of truth; it is committed before any sbatch, and Slurm carries the
attempt's submission key (`prefect_utils.keys`) in the job comment, so that a job submitted by a process that died
before recording it is found and adopted, never submitted again.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect_utils.errors import SchedulerUnavailable, SubmissionRejected, SubmitLimitReached
from prefect_utils.job_spec import JobInfo, JobSpec
from prefect_utils.keys import job_key
from prefect_utils.ledger import JobLedger, JobSubmission, LedgerRecord
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState

__all__ = ["FAULT_POINT_ENV", "PollConfig", "SlurmJobs", "ThrottleConfig"]

logger = logging.getLogger(__name__)

# Names of the points where a test may have the process SIGKILL itself, to prove the rerun repairs it, or with
# ":stop" SIGSTOP itself there: a barrier the test releases (SIGCONT) or turns into a crash (SIGKILL).
FAULT_POINT_ENV = "PREFECT_UTILS_FAULT_POINT"


def _fault_point(name: str) -> None:
    point, _, action = os.environ.get(FAULT_POINT_ENV, "").partition(":")
    if point == name:
        os.kill(os.getpid(), signal.SIGSTOP if action == "stop" else signal.SIGKILL)


@dataclass(frozen=True)
class PollConfig:
    """How the `Poller` paces itself and what it logs (carried here, so one `SlurmJobs` configures a service)."""

    min_interval: float = 1.0
    max_interval: float = 60.0
    growth: float = 1.5
    lease_ttl_factor: float = 3.0
    log_tail_lines: int = 5
    # A job's state is logged when it changes; a job that keeps running gets one line this often, not one a poll.
    still_running_report_seconds: float = 6 * 3600
    # A job neither squeue nor sacct has known for this long, while they answered, is recorded LOST.
    lost_after_seconds: float = 3600.0


@dataclass(frozen=True)
class ThrottleConfig:
    """The cap on active jobs and on the submit rate that `capacity()` reports."""

    max_active_jobs: int = 100
    submits_per_minute: float = 600.0


class SlurmJobs:
    """Submit once (in batches), cancel; the `Poller` polls through it."""

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

    # --- submission ----------------------------------------------------------------------------------------

    def capacity(self) -> int:
        """How many jobs may be submitted now under the cap on active jobs and the submit rate."""
        active = self.ledger.count_holding_slots()
        recent = self.ledger.count_submitted_since(self.clock() - timedelta(minutes=1))
        return max(
            0, min(self.throttle.max_active_jobs - active, int(self.throttle.submits_per_minute) - recent)
        )

    def submit(self, submissions: Sequence[JobSubmission], *, claim: str | None = None) -> list[LedgerRecord]:
        """Put every submission on the cluster at most once; their ledger records, in order.

        The rows are committed (claimed by this call) before any sbatch; then, holding their locks, rows with a
        job id are reattached, rows someone else created without a job id are looked up in Slurm by key and
        adopted (their creator may have died around sbatch), the rest are submitted; every job id is written
        in the one transaction that commits the batch. A crash anywhere leaves rows that the next call repairs.
        A controller that stops answering mid-batch ends the batch: what was submitted is recorded, the rest
        stays NEW for the next pass.

        `claim` names rows the caller has already inserted for this batch (a capacity reservation claims its
        slots by inserting them): they are this batch's own, submitted without an orphan lookup.
        """
        if not submissions:
            return []
        pairs = [(s.key, s.attempt) for s in submissions]
        existing = self.ledger.records(pairs)
        if len(existing) == len(pairs) and not any(r.needs_submission for r in existing):
            return existing  # a rerun over steps already on the cluster: one read, no lock, no write
        claim = claim or uuid.uuid4().hex
        self.ledger.insert_missing(submissions, claim)
        with self.ledger.locked(pairs) as batch:
            locked = batch.records  # built from the rows at each read: read once
            records = {(r.key, r.attempt): r for r in locked}
            orphans = [r for r in locked if r.needs_submission and r.claim != claim]
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
        submission = JobSubmission(
            job_key(spec, inputs), attempt, spec.canonical(), inputs=inputs, labels=dict(labels or {})
        )
        (record,) = self.submit([submission])
        return record

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
        keys = {r.job_id: r.submission_key for r in unfinished if r.job_id}
        if keys:
            # Read before scancel: an id that now names another job must not get that job cancelled.
            states = self.read_states(keys)
            live = [job_id for job_id, info in states.items() if not info.state.is_terminal]
            if live:
                self.client.cancel(live)
                states = self.read_states(keys)
            self.ledger.mark_cancelled([(r.key, r.attempt) for r in unfinished], reason)
            self.ledger.apply_states(states, {}, self.clock(), lease=None)
        return self.ledger.unfinished(labels)

    # --- reading states ------------------------------------------------------------------------------------

    def read_states(self, keys: Mapping[str, str]) -> dict[str, JobInfo]:
        """What Slurm says of each job id of `keys` (job id -> the submission key the ledger holds for it).

        One `job_states` call, checked against the ledger: a job whose comment is not the row's submission key
        is another job under a reused id (a MaxJobId wrap, a controller reset). Its state, log and duplicates
        are never applied; it is reported LOST, and logged. No comment proves nothing: in some Slurm versions
        sacct reports it only once a job ended.
        """
        infos = self.client.job_states(keys)
        for job_id, info in infos.items():
            expected = keys[job_id]
            if info.comment and info.comment != expected:
                logger.warning(
                    "Slurm job %s carries comment %s, not %s: the id now names another job; recorded LOST",
                    job_id,
                    info.comment,
                    expected,
                )
                infos[job_id] = JobInfo(
                    job_id=job_id,
                    state=JobState.LOST,
                    slurm_state="",
                    reason=f"job id reused: Slurm job {job_id} now carries comment {info.comment}"[:255],
                    end=self.clock(),
                )
        return infos
