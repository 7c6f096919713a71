"""One reconciler pass per request at a time, and a way to tell a live pass from a dead one.

The lock is a PostgreSQL session advisory lock held on a connection of its own for the length of one pass. The
server drops it the moment that connection closes, so a flow process killed with -9 releases it at once: no
lease to expire, no heartbeat to miss. Recovery reads `pg_locks` to see which requests have a live pass: one that
holds the lock, or one that waits for it (a shared lock of its own, on the same connection, while it waits). A
flow holds it from its first line to its suspension, around its passes: the lock is re-entrant in its thread.

The sweep has a lock of its own (`sweep_lock`), so that two processes never sweep at once.

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
_NAMESPACE = 0x454D47  # "EMG": a pass over the request (the second half) holds it
_WAITING_NAMESPACE = 0x454D57  # "EMW": a pass waits for it (shared: any number may wait)
_SWEEP_KEY = (0x454D53, 1)  # "EMS": a sweep runs
_INT4_MAX = 2**31 - 1
_local_locks: dict[int, threading.Lock] = {}
_local_guard = threading.Lock()
_local_sweep = threading.Lock()
_held = threading.local()  # .requests: the request locks this thread holds


class RequestBusy(Conflict):
    """Another pass over the same request did not finish within the wait."""

    code = "request_busy"


def _check_id(request_id: int) -> int:
    if not 0 < request_id <= _INT4_MAX:
        raise ValueError(f"request id {request_id} does not fit an advisory lock key")
    return request_id


def _held_here() -> set[int]:
    if not hasattr(_held, "requests"):
        _held.requests = set()
    return _held.requests


def _try_advisory_lock(conn: psycopg.Connection, request_id: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_NAMESPACE, request_id)).fetchone()
    return bool(row and row[0])  # the query always returns one row


@contextmanager
def request_lock(
    request_id: int, *, wait_seconds: float = 60.0, poll_seconds: float = 0.25
) -> Iterator[None]:
    """Hold the request's lock for the block; RequestBusy if another pass holds it longer than `wait_seconds`.

    Re-entrant: in a thread that already holds it (a flow around its passes), the block simply runs.
    """
    _check_id(request_id)
    held_here = _held_here()
    if request_id in held_here:
        yield
        return
    deadline = time.monotonic() + wait_seconds
    if not is_postgres():
        with _local_guard:
            lock = _local_locks.setdefault(request_id, threading.Lock())
        if not lock.acquire(timeout=wait_seconds):
            raise RequestBusy(f"request {request_id} is being reconciled by another pass")
        held_here.add(request_id)
        try:
            yield
        finally:
            held_here.discard(request_id)
            lock.release()
        return
    conn = own_connection()
    held = False
    try:
        # Shown as waiting from before the first try: recovery must see a live process here throughout, never a
        # moment with neither lock (it would take the run for a dead one: issue 19).
        conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (_WAITING_NAMESPACE, request_id))
        while not _try_advisory_lock(conn, request_id):
            if time.monotonic() > deadline:
                raise RequestBusy(f"request {request_id} is being reconciled by another pass")
            time.sleep(poll_seconds)
        held = True
        conn.execute("SELECT pg_advisory_unlock_shared(%s, %s)", (_WAITING_NAMESPACE, request_id))
        held_here.add(request_id)
        yield
    finally:
        held_here.discard(request_id)
        # Unlock first: the server drops a closed session's locks as its backend exits, after close() returns,
        # and a pass started at once (or recovery reading pg_locks) would still see this one. Closing the session
        # releases the lock whatever happened inside, the unlock included.
        if held:
            with suppress(Exception):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_NAMESPACE, request_id))
        conn.close()


@contextmanager
def sweep_lock() -> Iterator[bool]:
    """Whether this process may sweep now: True, held for the block, unless another process sweeps (False).

    Taken without waiting, and dropped with its connection: a sweeper that dies or hangs up frees it at once.
    """
    if not is_postgres():
        acquired = _local_sweep.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                _local_sweep.release()
        return
    conn = own_connection()
    acquired = False
    try:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _SWEEP_KEY).fetchone()
        acquired = bool(row and row[0])
        yield acquired
    finally:
        # Unlock before closing, as request_lock does: a closed session's locks go only when its backend exits,
        # after close() returns, and a sweep started at once would take itself for the second sweeper (seen in CI).
        if acquired:
            with suppress(Exception):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", _SWEEP_KEY)
        conn.close()


def requests_with_live_pass() -> set[int] | None:
    """Ids of the requests a pass holds or waits for the lock of right now (any process, any host); None if
    unknowable."""
    if not is_postgres():
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid IN (%s, %s) AND objsubid = 2"
            " AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [_NAMESPACE, _WAITING_NAMESPACE],
        )
        return {int(row[0]) for row in cursor.fetchall()}
