"""Cluster capacity is a queue, not a race: slots are claimed atomically and shared round-robin between requests.

The cluster has `SLURM_MAX_ACTIVE_JOBS` slots (and a submit rate, `SlurmJobs.capacity`). Every ledger row that is
not over holds one: a job on the cluster, or a row claimed for submission (state NEW).

- **Claiming is atomic.** A pass claims slots with `claim_slots`: under one transaction-scoped lock it reads the
  capacity and inserts the ledger rows of the steps it may submit, so the next claimer counts them. Concurrent
  passes never exceed the limit; sbatch itself runs after the lock is released.
- **The queue.** A pass that could not claim every slot it wanted records how many it still wants
  (`RequestProgress.capacity_wanted`). While any other request waits so, a pass takes only the slots granted to
  it; when no other request waits, it takes what is free.
- **Grants, round-robin.** `grant_free_slots` (the poller lease holder, after a poll in which jobs ended and on
  every sweep) hands the free slots to waiting requests one at a time: the request served longest ago (granted
  slots or took free ones) first, a request never served before any other, then the longest wait. Only the requests granted a slot are resumed, so
  2,000 requests waiting for one free slot cost one resume, not 2,000. A two-run request created after a
  5,000-run one gets the next freed slot.
- **A grant not taken** within `WORKFLOWS_CAPACITY_GRANT_SECONDS` (its flow run could not start, say) is taken
  back and the request goes on waiting, behind the others. The clock runs from the grant, or from the last sweep
  that found the run still queued for a process (`keep_grants`): a runner at its process limit is slow, not lost,
  and a lapsed grant would only resume one more run into the same queue.
- **A queued request is resumed by its grant only**, not for its own jobs that end meanwhile
  (`queued_without_grant`): its pass could submit nothing. The pass its grant starts reads those ends too.
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from analyses.models import ACTIVE_REQUEST_STATUSES
from prefect_utils.ledger import JobSubmission
from prefect_utils.submission import SlurmJobs
from workflows.models import RequestProgress

logger = logging.getLogger(__name__)

# A two-int advisory key of our own ("EMC"), apart from the request locks' namespace that recovery reads.
_CAPACITY_LOCK = (0x454D43, 1)


def _lock_capacity() -> None:
    """Serialise claimers and granters until the transaction ends. On SQLite (demo only) writes serialise anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", _CAPACITY_LOCK)


def _grant_valid_since(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.WORKFLOWS_CAPACITY_GRANT_SECONDS)


def _waiting(now: datetime):
    """Requests still unfinished that want more slots than they hold unexpired grants for."""
    return RequestProgress.objects.filter(request__status__in=ACTIVE_REQUEST_STATUSES).filter(
        Q(capacity_wanted__gt=F("capacity_granted"))
        | Q(capacity_wanted__gt=0, capacity_granted_at__lt=_grant_valid_since(now))
    )


def _outstanding_grants(now: datetime, *, excluding: int | None = None) -> int:
    grants = RequestProgress.objects.filter(
        request__status__in=ACTIVE_REQUEST_STATUSES,
        capacity_granted__gt=0,
        capacity_granted_at__gte=_grant_valid_since(now),
    )
    if excluding is not None:
        grants = grants.exclude(pk=excluding)
    return grants.aggregate(total=Sum("capacity_granted"))["total"] or 0


def claim_slots(
    request_id: int, wanted: Sequence[JobSubmission], jobs: SlurmJobs, claim: str
) -> list[JobSubmission]:
    """The submissions of `wanted` this request may submit now, their ledger rows inserted under `claim`.

    Submissions whose row exists already (claimed by an earlier pass that did not get to sbatch) hold their slot
    and always come back. The rest are cut to the request's share of the free slots, and what is left over is
    recorded as the request's place in the queue.
    """
    if not wanted:
        return []
    existing = {(r.key, r.attempt) for r in jobs.ledger.records([(s.key, s.attempt) for s in wanted])}
    held = [s for s in wanted if (s.key, s.attempt) in existing]
    new = [s for s in wanted if (s.key, s.attempt) not in existing]
    now = timezone.now()
    with transaction.atomic():
        _lock_capacity()
        progress, _ = RequestProgress.objects.select_for_update().get_or_create(request_id=request_id)
        granted = (
            progress.capacity_granted
            if progress.capacity_granted_at and progress.capacity_granted_at >= _grant_valid_since(now)
            else 0
        )
        free = jobs.capacity() - _outstanding_grants(now, excluding=request_id)
        others_wait = _waiting(now).exclude(pk=request_id).exists()
        share = min(granted, max(free, 0)) if others_wait else max(free, 0)
        taken = new[: max(share, 0)]
        jobs.ledger.insert_missing(taken, claim)
        progress.capacity_granted = max(granted - len(taken), 0)
        progress.capacity_wanted = len(new) - len(taken)
        if taken:
            progress.capacity_served_at = now
        if progress.capacity_wanted and progress.capacity_waiting_since is None:
            progress.capacity_waiting_since = now
        elif not progress.capacity_wanted:
            progress.capacity_waiting_since = None
        progress.save(
            update_fields=[
                "capacity_granted",
                "capacity_wanted",
                "capacity_served_at",
                "capacity_waiting_since",
            ]
        )
    if progress.capacity_wanted:
        logger.info(
            "Request %s: %d step(s) wait for cluster capacity (%d claimed now)",
            request_id,
            progress.capacity_wanted,
            len(taken),
        )
    return held + taken


class GrantFigures(Protocol):
    """What `holds_untaken_grant` reads: a RequestProgress, or a row of the sweep's with the same names."""

    @property
    def capacity_wanted(self) -> int | None: ...
    @property
    def capacity_granted(self) -> int | None: ...
    @property
    def capacity_granted_at(self) -> datetime | None: ...
    @property
    def last_read_at(self) -> datetime | None: ...


def holds_valid_grant(progress: GrantFigures, now: datetime) -> bool:
    granted_at = progress.capacity_granted_at
    return bool(
        progress.capacity_granted and granted_at is not None and granted_at >= _grant_valid_since(now)
    )


def queued_without_grant(progress: GrantFigures, now: datetime) -> bool:
    """Waiting in the capacity queue with no slot granted: a pass could submit nothing, so nothing wakes it but a
    grant (whose pass reads the jobs that ended meanwhile)."""
    return bool(progress.capacity_wanted) and not holds_valid_grant(progress, now)


def requests_queued_without_grant(request_ids: set[int], now: datetime) -> set[int]:
    waiting = RequestProgress.objects.filter(pk__in=request_ids, capacity_wanted__gt=0).exclude(
        capacity_granted__gt=0, capacity_granted_at__gte=_grant_valid_since(now)
    )
    return set(waiting.values_list("pk", flat=True))


def keep_grants(request_ids: set[int], now: datetime) -> None:
    """Restart the clock of the valid grants of these requests, whose flow runs wait for a process to run them."""
    if request_ids:
        RequestProgress.objects.filter(
            pk__in=request_ids, capacity_granted__gt=0, capacity_granted_at__gte=_grant_valid_since(now)
        ).update(capacity_granted_at=now)


def holds_untaken_grant(progress: GrantFigures, now: datetime) -> bool:
    """Granted slots after its last pass read the ledger, still valid: its resume is due (or was lost)."""
    granted_at = progress.capacity_granted_at
    return holds_valid_grant(progress, now) and (
        progress.last_read_at is None or (granted_at is not None and granted_at > progress.last_read_at)
    )


def grant_free_slots(jobs: SlurmJobs, now: datetime | None = None) -> list[int]:
    """Hand the free slots to waiting requests, one slot each per round; the requests granted, to resume."""
    now = now or timezone.now()
    with transaction.atomic():
        _lock_capacity()
        # Grants not taken in time go back to the pool; their requests keep waiting, with the others.
        RequestProgress.objects.filter(
            capacity_granted__gt=0, capacity_granted_at__lt=_grant_valid_since(now)
        ).update(capacity_granted=0)
        free = jobs.capacity() - _outstanding_grants(now)
        if free <= 0:
            return []
        # Each request gets at most one slot per round, so at most `free` of them are read: bounded whatever the
        # length of the queue.
        queue = list(
            _waiting(now)
            .select_for_update()
            .order_by(F("capacity_served_at").asc(nulls_first=True), "capacity_waiting_since", "pk")[:free]
        )
        grants = dict.fromkeys((p.pk for p in queue), 0)
        while free > 0:
            served = 0
            for progress in queue:
                if free and progress.capacity_wanted - progress.capacity_granted - grants[progress.pk] > 0:
                    grants[progress.pk] += 1
                    free -= 1
                    served += 1
            if not served:
                break
        for progress in queue:
            if grants[progress.pk]:
                RequestProgress.objects.filter(pk=progress.pk).update(
                    capacity_granted=F("capacity_granted") + grants[progress.pk],
                    capacity_granted_at=now,
                    capacity_served_at=now,
                )
    granted = [request_id for request_id, count in grants.items() if count]
    if granted:
        logger.info("Capacity: granted %d slot(s) to request(s) %s", sum(grants.values()), granted)
    return granted
