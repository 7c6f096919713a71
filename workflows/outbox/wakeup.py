"""Waking the service loops: how a web request hands work on without waiting on Prefect or Slurm.

A save that needs the orchestrator (a new trigger, a cancellation) writes its durable row and calls
`wake_service_loops()` in the same transaction. PostgreSQL delivers the NOTIFY when that transaction commits and
drops it when it rolls back, so a woken loop always finds the row. Every service loop LISTENs on a connection of
its own and acts at once; a lost notification (the listener was reconnecting) costs one dispatch interval, since
the loops also look on their own every few seconds. The HTTP request thread itself never calls Prefect or Slurm:
measured before this, a POST took 1.6 s with Prefect refusing connections and 3.1 s with Prefect hanging.
"""

import logging
import threading

from django.db import connection

from workflows.pg import is_postgres, own_connection

logger = logging.getLogger(__name__)

CHANNEL = "emgapi_workflows"


def wake_service_loops() -> None:
    """Wake every service loop once the current transaction commits (at once outside a transaction)."""
    if not is_postgres():  # no LISTEN/NOTIFY: the loops find the work on their next round
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


class WakeUps:
    """Listens for `wake_service_loops()` in a thread of its own; `wait()` returns early when woken.

    The listener survives a PostgreSQL restart: it reconnects, and counts the reconnection as a wake-up, since
    notifications sent meanwhile are lost. It also sets the wake-up when `stop` is set, so a loop waiting on it
    sees the stop within a second.
    """

    def __init__(self, stop: threading.Event, *, reconnect_seconds: float = 1.0) -> None:
        self._stop = stop
        self._woken = threading.Event()
        self._reconnect_seconds = reconnect_seconds
        self._thread: threading.Thread | None = None

    def start(self) -> "WakeUps":
        if is_postgres():
            self._thread = threading.Thread(target=self._listen, name="wake-ups", daemon=True)
            self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """Block until woken or `timeout` seconds pass; True if woken (and the wake-up is consumed)."""
        woken = self._woken.wait(timeout)
        self._woken.clear()
        return woken

    def _listen(self) -> None:
        connected_before = False
        while not self._stop.is_set():
            try:
                with own_connection(connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if connected_before:  # what was sent while we were away is lost: look now
                        self._woken.set()
                    connected_before = True
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._woken.set()
            except Exception as exc:  # PostgreSQL restarting: the loop still looks on its own meanwhile
                logger.warning("Wake-up listener lost its connection (%s); reconnecting", exc)
                self._stop.wait(self._reconnect_seconds)
        self._woken.set()
