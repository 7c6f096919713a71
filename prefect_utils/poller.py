"""The service's one poller (no Prefect, no Django): whoever holds the lease polls Slurm for every job.

One poll is one `job_states` call for every active ledger job, written to the ledger under the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from prefect_utils.errors import SchedulerError, SchedulerUnavailable
from prefect_utils.job_spec import JobInfo
from prefect_utils.ledger import ActiveJob, LedgerRecord
from prefect_utils.states import JobState
from prefect_utils.submission import SlurmJobs

__all__ = ["POLLER_LEASE", "Poller"]

logger = logging.getLogger(__name__)

POLLER_LEASE = "slurm-poller"


class Poller:
    """The service's one poller: whoever holds the lease polls, at intervals that adapt to what changes."""

    def __init__(self, jobs: SlurmJobs, holder: str | None = None) -> None:
        self.jobs = jobs
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.interval = jobs.poll.min_interval
        self.holding = False
        self._last_active: frozenset[str] = frozenset()
        self._next_at = 0.0
        self._reported_running: dict[str, datetime] = {}  # job id -> when its last "still running" line was

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
        active = self.jobs.ledger.active_jobs()
        active_ids = frozenset(active)
        try:
            changed = self.poll_once(active)
        except SchedulerError as exc:
            logger.warning("Poll failed: %s", exc)
            changed = []
        if changed or active_ids != self._last_active:
            self.interval = config.min_interval
        else:
            self.interval = min(self.interval * config.growth, config.max_interval)
        self._last_active = active_ids
        self._next_at = time.monotonic() + self.interval
        return changed

    def poll_once(self, active: Mapping[str, ActiveJob] | None = None) -> list[LedgerRecord] | None:
        """One scheduler round for the whole service: one `job_states` call for every active ledger job
        (`active` is `ledger.active_jobs()`, for a caller that has just read it), checked against the ledger
        (`SlurmJobs.read_states`). A job that Slurm would keep pending forever is cancelled and recorded FAILED;
        one it has not known for `lost_after_seconds` is recorded LOST; a second job carrying a recorded job's
        submission key is cancelled.

        Returns the rows whose state changed, or None when this poller lost its lease meanwhile (then
        nothing was written: a poller that stalled past its lease must not overwrite a newer poller's states).
        """
        active = self.jobs.ledger.active_jobs() if active is None else active
        if not active:
            self.jobs.ledger.record_poll(POLLER_LEASE, ok=True)
            return []
        try:
            infos = self.jobs.read_states({job_id: job.submission_key for job_id, job in active.items()})
        except SchedulerUnavailable as exc:
            # Never a failure: the jobs are still wherever they were; we just cannot see them.
            self.jobs.ledger.mark_stale(list(active))
            self.jobs.ledger.record_poll(POLLER_LEASE, ok=False, error=str(exc))
            logger.warning("Slurm controller unavailable, job states are stale: %s", exc)
            return []
        self._cancel_duplicates(infos, active)
        infos = self._give_up_on_unknown(infos, active)
        tails = {
            job_id: self.jobs.client.tail_log(path, self.jobs.poll.log_tail_lines)
            for job_id, info in infos.items()
            if info.state not in (JobState.PENDING, JobState.UNKNOWN)
            and (path := info.stdout_path or active[job_id].log_path)
        }
        polled = self._fail_unschedulable(infos)
        changed = self.jobs.ledger.apply_states(
            polled, tails, self.jobs.clock(), lease=(POLLER_LEASE, self.holder)
        )
        if changed is not None:
            self.jobs.ledger.record_poll(POLLER_LEASE, ok=True)
            self._log_states(changed, polled, tails)
        return changed

    def _log_states(
        self, changed: list[LedgerRecord], polled: Mapping[str, JobInfo], tails: Mapping[str, str]
    ) -> None:
        """One line per state change; for a job still running, one line per `still_running_report_seconds`."""
        now = self.jobs.clock()
        for record in changed:
            name = record.labels.get("step") or record.spec.get("name") or record.key[:12]
            detail = f" (exit code {record.exit_code})" if record.exit_code is not None else ""
            reason = f": {record.reason}" if record.reason and record.state != JobState.COMPLETED else ""
            logger.info(
                "Slurm job %s, %s attempt %d: %s%s%s",
                record.job_id,
                name,
                record.attempt,
                record.state,
                detail,
                reason,
            )
            if record.state == JobState.RUNNING:
                self._reported_running[record.job_id or ""] = now
        interval = timedelta(seconds=self.jobs.poll.still_running_report_seconds)
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

    def _give_up_on_unknown(
        self, infos: dict[str, JobInfo], active: Mapping[str, ActiveJob]
    ) -> dict[str, JobInfo]:
        """`infos` with every job that Slurm has not known for `lost_after_seconds` reported LOST: a controller
        that lost its state, or a purged record. Its request would otherwise never finish, and a cancellation
        would wait for it forever. Only a poll that Slurm answered gets here, and it still does not know the job.
        """
        now = self.jobs.clock()
        limit = timedelta(seconds=self.jobs.poll.lost_after_seconds)
        lost = {}
        for job_id, info in infos.items():
            job = active[job_id]
            if info.state is not JobState.UNKNOWN or job.state is not JobState.UNKNOWN:
                continue
            if job.state_changed_at is not None and now - job.state_changed_at < limit:
                continue
            logger.warning(
                "Slurm job %s (%s): neither squeue nor sacct has known it for over %s; recorded LOST",
                job_id,
                job.submission_key,
                _hours(limit),
            )
            lost[job_id] = replace(
                info,
                state=JobState.LOST,
                reason=f"unknown to squeue and sacct for over {_hours(limit)}",
                end=now,
            )
        return {**infos, **lost} if lost else infos

    def _cancel_duplicates(self, infos: Mapping[str, JobInfo], active: Mapping[str, ActiveJob]) -> None:
        """scancel every other live job that carries a recorded job's submission key: the late job of an sbatch
        that timed out, registered after its key was looked up and submitted again. The job the ledger
        recorded is kept (the ledger is the truth; any other choice would rewrite a row whose job may already
        run). squeue lists all our jobs at every poll, so this costs no Slurm call unless there is one.
        """
        second = {other: job_id for job_id, info in infos.items() for other in info.duplicates}
        if not second:
            return
        try:
            self.jobs.client.cancel(list(second))
        except SchedulerError as exc:
            logger.warning("Could not cancel second jobs %s: %s", sorted(second), exc)  # next poll, again
            return
        for other, kept in second.items():
            logger.warning(
                "Slurm job %s carries %s, the key of Slurm job %s: a second job for one key, scancelled",
                other,
                active[kept].submission_key,
                kept,
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
            self.jobs.client.cancel(stuck)
        except SchedulerError as exc:
            # They stay PENDING for another try at the next poll; the other jobs' states are recorded meanwhile.
            logger.warning("Could not cancel never-schedulable Slurm jobs %s: %s", stuck, exc)
            return infos
        ended = self.jobs.clock()
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

    def release(self) -> None:
        self.jobs.ledger.release_lease(POLLER_LEASE, self.holder)


def _hours(duration: timedelta) -> str:
    hours, rest = divmod(int(duration.total_seconds()), 3600)
    return f"{hours} h {rest // 60:02d} min"
