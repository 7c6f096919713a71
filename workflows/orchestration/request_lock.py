"""One reconciler pass per request at a time, and a way to tell a live pass from a dead one.

The lock is a PostgreSQL session advisory lock held on a connection of its own for the length of one pass. The
server drops it the moment that connection closes, so a flow process killed with -9 releases it at once: no
lease to expire, no heartbeat to miss. Recovery reads `pg_locks` to see which requests have a live pass.

On another database (SQLite, for a demo without PostgreSQL) the lock is only held within this process, and
`requests_with_live_pass` cannot see other processes: recovery then relies on Prefect's states alone.
"""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
from django.db import connection

from analyses.errors import Conflict
from workflows.pg import is_postgres, own_connection

logger = logging.getLogger(__name__)

# First half of the two-int advisory key: ours, so nothing else using advisory locks on the database collides.
_NAMESPACE = 0x454D47  # "EMG"
_INT4_MAX = 2**31 - 1
_local_locks: dict[int, threading.Lock] = {}
_local_guard = threading.Lock()


class RequestBusy(Conflict):
    """Another pass over the same request did not finish within the wait."""

    code = "request_busy"


def _check_id(request_id: int) -> int:
    if not 0 < request_id <= _INT4_MAX:
        raise ValueError(f"request id {request_id} does not fit an advisory lock key")
    return request_id


def _try_advisory_lock(conn: psycopg.Connection, request_id: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_NAMESPACE, request_id)).fetchone()
    return bool(row and row[0])  # the query always returns one row


@contextmanager
def request_lock(
    request_id: int, *, wait_seconds: float = 60.0, poll_seconds: float = 0.25
) -> Iterator[None]:
    """Hold the request's lock for the block; RequestBusy if another pass holds it longer than `wait_seconds`."""
    _check_id(request_id)
    deadline = time.monotonic() + wait_seconds
    if not is_postgres():
        with _local_guard:
            lock = _local_locks.setdefault(request_id, threading.Lock())
        if not lock.acquire(timeout=wait_seconds):
            raise RequestBusy(f"request {request_id} is being reconciled by another pass")
        try:
            yield
        finally:
            lock.release()
        return
    conn = own_connection()
    held = False
    try:
        while not _try_advisory_lock(conn, request_id):
            if time.monotonic() > deadline:
                raise RequestBusy(f"request {request_id} is being reconciled by another pass")
            time.sleep(poll_seconds)
        held = True
        yield
    finally:
        # Unlock first: the server drops a closed session's locks as its backend exits, after close() returns,
        # and a pass started at once (or recovery reading pg_locks) would still see this one. Closing the session
        # releases the lock whatever happened inside, the unlock included.
        if held:
            with suppress(Exception):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_NAMESPACE, request_id))
        conn.close()


def requests_with_live_pass() -> set[int] | None:
    """Ids of the requests a pass holds the lock of right now (any process, any host); None if unknowable."""
    if not is_postgres():
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [_NAMESPACE],
        )
        return {int(row[0]) for row in cursor.fetchall()}
