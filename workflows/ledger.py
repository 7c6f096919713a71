"""The Django implementation of `prefect_utils.ledger.JobLedger`: ClusterJob rows and the poller lease."""

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from prefect_utils.ledger import LedgerRecord
from prefect_utils.scheduler import JobInfo, JobSpec
from workflows.models import TERMINAL_JOB_STATES, ClusterJob, PollerLease

# Labels with a column of their own (indexed, and queryable on every database); the rest stay in `labels`.
_LABEL_COLUMNS = {"flow_run_id": "flow_run_id", "request_id": "request_id"}


def to_record(row: ClusterJob) -> LedgerRecord:
    return LedgerRecord(
        key=row.key,
        attempt=row.attempt,
        spec=row.spec,
        job_id=row.slurm_job_id,
        state=row.state,
        slurm_state=row.slurm_state,
        reason=row.reason,
        exit_code=row.exit_code,
        stale=row.state_stale,
        checked_at=row.state_checked_at,
        log_tail=row.log_tail,
        labels={**row.labels, "flow_run_id": row.flow_run_id, "request_id": row.request_id},
    )


def _log_path(spec: dict[str, Any], job_id: str) -> str | None:
    try:
        return JobSpec.from_canonical(spec).stdout_path(job_id)
    except (TypeError, ValueError):
        return None  # a hand-made or damaged row must not stop the poller for every other job


class _LockedRow:
    def __init__(self, row: ClusterJob) -> None:
        self.row = row

    @property
    def record(self) -> LedgerRecord:
        return to_record(self.row)

    def set_job_id(self, job_id: str) -> None:
        self.row.slurm_job_id = job_id
        self.row.state = "PENDING"
        self.row.submitted_at = timezone.now()
        self.row.save(update_fields=["slurm_job_id", "state", "submitted_at", "updated"])


class DjangoJobLedger:
    def __init__(self) -> None:
        self._leases_ensured: set[str] = set()

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
        columns = {column: labels[label] for label, column in _LABEL_COLUMNS.items() if labels.get(label)}
        extra = {k: v for k, v in labels.items() if k not in _LABEL_COLUMNS}
        previous = (
            ClusterJob.objects.filter(key=key, attempt=previous_attempt).first() if previous_attempt else None
        )
        # get_or_create retries the read after an IntegrityError, so concurrent callers all get the one row.
        row, created = ClusterJob.objects.get_or_create(
            key=key,
            attempt=attempt,
            defaults={
                "spec": dict(spec),
                "input_hashes": dict(inputs),
                "name": spec.get("name", "")[:200],
                "labels": extra,
                "previous_attempt": previous,
                **columns,
            },
        )
        return to_record(row), created

    @contextmanager
    def locked(self, key: str, attempt: int) -> Iterator[_LockedRow]:
        with transaction.atomic():
            yield _LockedRow(ClusterJob.objects.select_for_update().get(key=key, attempt=attempt))

    def latest(self, key: str) -> LedgerRecord | None:
        row = ClusterJob.objects.filter(key=key).order_by("-attempt").first()
        return to_record(row) if row else None

    def get(self, key: str, attempt: int) -> LedgerRecord:
        return to_record(ClusterJob.objects.get(key=key, attempt=attempt))

    def records(self, submission_keys: Iterable[tuple[str, int]]) -> list[LedgerRecord]:
        wanted = list(submission_keys)
        rows = {
            (row.key, row.attempt): row
            for row in ClusterJob.objects.filter(key__in={key for key, _ in wanted})
        }
        return [to_record(rows[pair]) for pair in wanted]

    def _active(self):
        return ClusterJob.objects.filter(slurm_job_id__isnull=False).exclude(state__in=TERMINAL_JOB_STATES)

    def active_jobs(self) -> dict[str, str | None]:
        return {
            job_id: _log_path(spec, job_id)
            for job_id, spec in self._active().values_list("slurm_job_id", "spec")
        }

    def count_active(self) -> int:
        return self._active().count()

    def count_submitted_since(self, since: datetime) -> int:
        return ClusterJob.objects.filter(submitted_at__gte=since).count()

    def apply_states(
        self, infos: Mapping[str, JobInfo], log_tails: Mapping[str, str], checked_at: datetime
    ) -> int:
        # Only rows whose state or log moved are rewritten; the rest get one UPDATE of their freshness.
        # Rewriting all of them made a poll of 1000 waiting jobs cost 1.6 s of CPU (bench/poll.py).
        changed_rows = []
        for row in ClusterJob.objects.filter(slurm_job_id__in=list(infos)):
            info = infos[row.slurm_job_id]
            if row.state in TERMINAL_JOB_STATES and info.state.value == "UNKNOWN":
                continue  # A finished job aging out of Slurm's memory does not unfinish it.
            values = {
                "state": info.state.value,
                "slurm_state": info.slurm_state or "",
                "reason": (info.reason or "")[:255],
                "exit_code": info.exit_code,
                "started_at": info.start or row.started_at,
                "ended_at": info.end or row.ended_at,
                "log_tail": log_tails.get(row.slurm_job_id) or row.log_tail,
            }
            if any(getattr(row, name) != value for name, value in values.items()) or row.state_stale:
                for name, value in values.items():
                    setattr(row, name, value)
                row.state_stale = False
                row.state_checked_at = checked_at
                changed_rows.append(row)
        ClusterJob.objects.bulk_update(
            changed_rows,
            [
                "state",
                "slurm_state",
                "reason",
                "exit_code",
                "started_at",
                "ended_at",
                "state_stale",
                "state_checked_at",
                "log_tail",
            ],
            batch_size=500,
        )
        ClusterJob.objects.filter(slurm_job_id__in=list(infos)).exclude(
            pk__in=[row.pk for row in changed_rows]
        ).update(state_checked_at=checked_at, state_stale=False)
        return len(changed_rows)

    def mark_stale(self, job_ids: Iterable[str]) -> None:
        ClusterJob.objects.filter(slurm_job_id__in=list(job_ids)).update(state_stale=True)

    def try_acquire_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        if name not in self._leases_ensured:
            PollerLease.objects.get_or_create(name=name)
            self._leases_ensured.add(name)
        now = timezone.now()
        taken = (
            PollerLease.objects.filter(name=name)
            .filter(Q(holder=holder) | Q(expires_at__isnull=True) | Q(expires_at__lt=now))
            .update(holder=holder, expires_at=now + timedelta(seconds=ttl_seconds))
        )
        return taken == 1

    def release_lease(self, name: str, holder: str) -> None:
        PollerLease.objects.filter(name=name, holder=holder).update(expires_at=None)

    def record_poll(self, name: str, *, ok: bool, error: str = "") -> None:
        now = timezone.now()
        fields: dict[str, Any] = {"last_poll_at": now, "last_error": error, "polls": F("polls") + 1}
        if ok:
            fields["last_success_at"] = now
        PollerLease.objects.filter(name=name).update(**fields)

    def job_ids_for(
        self, *, flow_run_id: str | None = None, labels: Mapping[str, Any] | None = None
    ) -> list[str]:
        rows = self._active()
        if flow_run_id:
            rows = rows.filter(flow_run_id=flow_run_id)
        for label, value in (labels or {}).items():
            rows = rows.filter(**{_LABEL_COLUMNS[label]: value})
        return list(rows.values_list("slurm_job_id", flat=True))

    def mark_cancelled(self, job_ids: Iterable[str], reason: str) -> None:
        ClusterJob.objects.filter(slurm_job_id__in=list(job_ids)).update(cancellation=reason[:255])
