"""The Django implementation of `prefect_utils.ledger.JobLedger`: ClusterJob rows and the poller lease."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from prefect_utils.job_spec import JobInfo, JobSpec
from prefect_utils.keys import submission_key
from prefect_utils.ledger import ActiveJob, JobSubmission, LedgerRecord
from prefect_utils.poller import POLLER_LEASE
from prefect_utils.states import NOT_SUBMITTED, TERMINAL_STATES, JobState
from workflows.models import ClusterJob, PollerLease
from workflows.pg import is_postgres

# Labels with a column of their own (indexed, and queryable on every database); the rest stay in `labels`.
_LABEL_COLUMNS = {"flow_run_id": "flow_run_id", "request_id": "request_id"}
_POLLED_FIELDS = [
    "state",
    "slurm_state",
    "reason",
    "exit_code",
    "started_at",
    "ended_at",
    "log_tail",
]


def to_record(row: ClusterJob) -> LedgerRecord:
    return LedgerRecord(
        key=row.key,
        attempt=row.attempt,
        spec=row.spec,
        job_id=row.slurm_job_id,
        state=JobState(row.state),  # storage hands out the enum: the column's text is converted here, once
        slurm_state=row.slurm_state,
        reason=row.reason,
        exit_code=row.exit_code,
        stale=row.state_stale,
        checked_at=row.state_checked_at,
        log_tail=row.log_tail,
        labels={**row.labels, "flow_run_id": row.flow_run_id, "request_id": row.request_id},
        claim=row.claim,
        created=row.created,
    )


def _database_now() -> datetime:
    """The database server's clock now (not the transaction's start); this process's clock on SQLite."""
    if not is_postgres():
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def _log_path(spec: dict[str, Any], job_id: str) -> str | None:
    try:
        return JobSpec.from_canonical(spec).stdout_path(job_id)
    except (TypeError, ValueError):
        return None  # a hand-made or damaged row must not stop the poller for every other job


def _rows(pairs: Iterable[tuple[str, int]], queryset=None) -> list[ClusterJob]:
    """The rows of exactly these (key, attempt) pairs: one indexed query on a superset, narrowed here.

    An OR of one condition per pair costs Django ~11 ms to build for 200 pairs, more than the query itself.
    """
    wanted = set(pairs)
    if not wanted:
        return []
    queryset = ClusterJob.objects.all() if queryset is None else queryset
    rows = queryset.filter(key__in={key for key, _ in wanted}, attempt__in={attempt for _, attempt in wanted})
    return [row for row in rows if (row.key, row.attempt) in wanted]


class _LockedBatch:
    def __init__(self, rows: list[ClusterJob]) -> None:
        self._rows = {(row.key, row.attempt): row for row in rows}
        self._dirty: dict[int, ClusterJob] = {}
        self._now = timezone.now()

    @property
    def records(self) -> list[LedgerRecord]:
        return [to_record(row) for row in self._rows.values()]

    def set_job_id(self, key: str, attempt: int, job_id: str) -> None:
        row = self._rows[(key, attempt)]
        row.slurm_job_id = job_id
        row.state = JobState.PENDING
        row.submitted_at = row.state_changed_at = self._now
        self._dirty[row.pk] = row

    def reject(self, key: str, attempt: int, reason: str) -> None:
        row = self._rows[(key, attempt)]
        row.state = JobState.FAILED
        row.slurm_state = NOT_SUBMITTED
        row.reason = reason[:255]
        row.log_tail = reason
        row.state_changed_at = row.ended_at = timezone.now()
        self._dirty[row.pk] = row

    def flush(self) -> None:
        submitted = [row for row in self._dirty.values() if row.state == JobState.PENDING]
        rejected = [row for row in self._dirty.values() if row.state != JobState.PENDING]
        if submitted:
            # One CASE over a single column, then one plain UPDATE: a bulk_update of eight columns took 270-450 ms
            # for 200 rows, most of a batch's ledger time (bench/submit.py).
            ClusterJob.objects.bulk_update(submitted, ["slurm_job_id"], batch_size=500)
            ClusterJob.objects.filter(pk__in=[row.pk for row in submitted]).update(
                state=JobState.PENDING,
                submitted_at=submitted[0].submitted_at,
                state_changed_at=submitted[0].submitted_at,
            )
        for row in rejected:  # sbatch refusing a spec is rare
            row.save(
                update_fields=["state", "slurm_state", "reason", "log_tail", "ended_at", "state_changed_at"]
            )


class DjangoJobLedger:
    def __init__(self) -> None:
        self._leases_ensured: set[str] = set()

    def insert_missing(self, submissions: Sequence[JobSubmission], claim: str) -> None:
        previous = {
            (row.key, row.attempt): row.pk
            for row in _rows(
                ((s.key, s.previous_attempt) for s in submissions if s.previous_attempt),
                ClusterJob.objects.only("pk", "key", "attempt"),
            )
        }
        rows = []
        for s in submissions:
            columns = {
                column: s.labels[label] for label, column in _LABEL_COLUMNS.items() if s.labels.get(label)
            }
            previous_id = previous.get((s.key, s.previous_attempt)) if s.previous_attempt else None
            rows.append(
                ClusterJob(
                    key=s.key,
                    attempt=s.attempt,
                    spec=dict(s.spec),
                    input_hashes=dict(s.inputs),
                    name=str(s.spec.get("name", ""))[:200],
                    labels={k: v for k, v in s.labels.items() if k not in _LABEL_COLUMNS},
                    previous_attempt_id=previous_id,
                    claim=claim,
                    **columns,
                )
            )
        # One transaction for the whole batch; rows that exist (another pass made them) keep their claim.
        with transaction.atomic():
            ClusterJob.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)

    @contextmanager
    def locked(self, pairs: Sequence[tuple[str, int]]) -> Iterator[_LockedBatch]:
        with transaction.atomic():
            rows = _rows(pairs, ClusterJob.objects.select_for_update().order_by("pk"))
            batch = _LockedBatch(rows)
            yield batch
            batch.flush()

    def records(self, pairs: Iterable[tuple[str, int]]) -> list[LedgerRecord]:
        wanted = list(pairs)
        rows = {(row.key, row.attempt): row for row in _rows(wanted)}
        return [to_record(rows[pair]) for pair in wanted if pair in rows]

    def attempts(self, keys: Iterable[str]) -> dict[str, list[LedgerRecord]]:
        found: dict[str, list[LedgerRecord]] = {}
        wanted = sorted(set(keys))
        # One array parameter, not one per key: a 20,000-step plan's IN list cost 1.5-2.5 s of CPU a pass in
        # psycopg's and Django's handling of 20,000 parameters (bench/scale.py, scenario a).
        matching = (
            Q(key__in=RawSQL("SELECT unnest(%s::text[])", [wanted])) if is_postgres() else Q(key__in=wanted)
        )
        for row in ClusterJob.objects.filter(matching).order_by("key", "attempt"):
            found.setdefault(row.key, []).append(to_record(row))
        return found

    def _active(self):
        return ClusterJob.objects.filter(slurm_job_id__isnull=False).exclude(state__in=TERMINAL_STATES)

    def active_jobs(self) -> dict[str, ActiveJob]:
        return {
            job_id: ActiveJob(
                job_id, submission_key(key, attempt), _log_path(spec, job_id), JobState(state), changed
            )
            for job_id, key, attempt, spec, state, changed in self._active().values_list(
                "slurm_job_id", "key", "attempt", "spec", "state", "state_changed_at"
            )
        }

    def count_active(self) -> int:
        return self._active().count()

    def count_holding_slots(self) -> int:
        # Two counts, each on a partial index, rather than one that neither index covers.
        return self.count_active() + ClusterJob.objects.filter(state=JobState.NEW).count()

    def count_submitted_since(self, since: datetime) -> int:
        return ClusterJob.objects.filter(
            Q(submitted_at__gte=since) | Q(state=JobState.NEW, created__gte=since)
        ).count()

    def apply_states(
        self,
        infos: Mapping[str, JobInfo],
        log_tails: Mapping[str, str],
        checked_at: datetime,
        *,
        lease: tuple[str, str] | None,
    ) -> list[LedgerRecord] | None:
        with transaction.atomic():
            if lease is not None:
                # The lease row stays locked until the states are committed: a poller whose lease expired
                # writes nothing, and no new holder can take the lease half-way through this write.
                name, holder = lease
                held = (
                    PollerLease.objects.select_for_update()
                    .filter(name=name, holder=holder, expires_at__gt=timezone.now())
                    .exists()
                )
                if not held:
                    return None
            # Stamped by the database clock with the lease row locked, not with a time read before this
            # transaction: a reader's `read_point` waits for the lock, so a change it could not see is later.
            return self._apply_states(infos, log_tails, checked_at, _database_now())

    def _apply_states(
        self,
        infos: Mapping[str, JobInfo],
        log_tails: Mapping[str, str],
        checked_at: datetime,
        changed_at: datetime,
    ) -> list[LedgerRecord]:
        # Only rows whose state or log moved are rewritten; the rest get one UPDATE of their freshness.
        # Rewriting all of them made a poll of 1000 waiting jobs cost 1.6 s of CPU (bench/poll.py).
        # Terminal rows are never touched: a job id that Slurm reuses after a controller reset must not turn
        # an old COMPLETED attempt into something else.
        changed_rows = []
        rows = self._active().filter(slurm_job_id__in=list(infos))
        for row in rows:
            info = infos[row.slurm_job_id]
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
                if values["state"] != row.state:
                    row.state_changed_at = changed_at
                for name, value in values.items():
                    setattr(row, name, value)
                row.state_stale = False
                row.state_checked_at = checked_at
                changed_rows.append(row)
        ClusterJob.objects.bulk_update(
            changed_rows,
            [*_POLLED_FIELDS, "state_stale", "state_checked_at", "state_changed_at"],
            batch_size=500,
        )
        self._active().filter(slurm_job_id__in=list(infos)).exclude(
            pk__in=[row.pk for row in changed_rows]
        ).update(state_checked_at=checked_at, state_stale=False)
        return [to_record(row) for row in changed_rows if row.state_changed_at == changed_at]

    def read_point(self) -> datetime:
        if not is_postgres():
            return timezone.now()  # SQLite (demo only) runs one writer at a time
        # FOR SHARE waits for a poll's write (which holds the lease row FOR UPDATE) to commit, and keeps the next
        # one from stamping until this transaction ends: that poll reads the clock after this does.
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT 1 FROM {PollerLease._meta.db_table} WHERE name = %s FOR SHARE", [POLLER_LEASE]
                )
            return _database_now()

    def mark_stale(self, job_ids: Iterable[str]) -> None:
        self._active().filter(slurm_job_id__in=list(job_ids)).update(state_stale=True)

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

    def unfinished(self, labels: Mapping[str, Any]) -> list[LedgerRecord]:
        rows = ClusterJob.objects.exclude(state__in=TERMINAL_STATES)
        for label, value in labels.items():
            rows = rows.filter(**{_LABEL_COLUMNS[label]: value})
        return [to_record(row) for row in rows]

    def mark_cancelled(self, pairs: Iterable[tuple[str, int]], reason: str) -> None:
        ClusterJob.objects.filter(pk__in=[row.pk for row in _rows(pairs)]).update(cancellation=reason[:255])
