"""A pass's read point and a poll's stamps are ordered by the commit, not by wall times read beforehand.

A pass records when it read the ledger (`read_at`); the linger check and the sweep then look for jobs that ended
after it (`state_changed_at > read_at`). A change that was not committed when the pass read must therefore be
stamped later than `read_at`, however long the poll's transaction takes to commit.
"""

import threading
import uuid
from datetime import datetime

import pytest
from django.db import connection
from django.utils import timezone

from prefect_utils.job_spec import JobInfo
from prefect_utils.keys import job_key
from prefect_utils.ledger import JobSubmission
from prefect_utils.poller import POLLER_LEASE
from prefect_utils.states import TERMINAL_STATES, JobState
from tests.ledger.specs import spec_in
from tests.slurm_support import poll_until
from workflows.models import ClusterJob
from workflows.orchestration.ledger import DjangoJobLedger

pytestmark = pytest.mark.django_db(transaction=True)


class HeldOpen(DjangoJobLedger):
    """A ledger whose poll write, once made, waits for the test before it commits (a slow poll of many rows)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = threading.Event()
        self.release = threading.Event()

    def _apply_states(self, *args, **kwargs):
        changed = super()._apply_states(*args, **kwargs)
        self.written.set()
        assert self.release.wait(timeout=120), "the test never released the poll"
        return changed


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def test_a_change_committed_after_a_pass_read_is_stamped_after_its_read_point(tmp_path):
    ledger = HeldOpen()
    spec = spec_in(tmp_path, "true", environment={"RUN": uuid.uuid4().hex})
    key = job_key(spec, {})
    ledger.insert_missing([JobSubmission(key, 1, spec.canonical())], claim="test")
    with ledger.locked([(key, 1)]) as batch:
        batch.set_job_id(key, 1, "987654319")
    holder = "poller-under-test"
    assert ledger.try_acquire_lease(POLLER_LEASE, holder, ttl_seconds=300)
    ended = JobInfo(job_id="987654319", state=JobState.COMPLETED, slurm_state="COMPLETED", exit_code=0)

    def poll() -> None:  # what Poller.poll_once writes, its clock read before the write
        try:
            ledger.apply_states({"987654319": ended}, {}, timezone.now(), lease=(POLLER_LEASE, holder))
        finally:
            connection.close()

    read_at: list[datetime] = []
    seen: list[str] = []

    def pass_reads() -> None:  # what reconcile_once does: its read point, then the ledger
        try:
            read_at.append(DjangoJobLedger().read_point())
            seen.append(ClusterJob.objects.get(key=key).state)
        finally:
            connection.close()

    poller = threading.Thread(target=poll)
    poller.start()
    assert ledger.written.wait(timeout=60)
    reader = threading.Thread(target=pass_reads)
    reader.start()
    # The pass reads while the poll's write is made and not committed (or waits for it, which is the point).
    poll_until(lambda: seen or _waiting_on_a_lock(), what="the pass to read or wait")
    ledger.release.set()
    poller.join(timeout=60)
    reader.join(timeout=60)

    row = ClusterJob.objects.get(key=key)
    assert row.state == "COMPLETED" and row.state_changed_at is not None
    seen_by_the_pass = seen[0] in TERMINAL_STATES
    seen_after = row.state_changed_at > read_at[0]  # what the linger check and the sweep look for
    assert seen_by_the_pass or seen_after, (
        f"the change is neither read by the pass nor stamped after its read point: state_changed_at "
        f"{row.state_changed_at} <= read_at {read_at[0]}"
    )
