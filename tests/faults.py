"""Real faults for the chaos tests: daemons stopped by the pid their own pid file records, never by name."""

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection, connections

from tests.slurm_support import slurm

# How long a chaos test's outage lasts (a service down, or the wait that stands for it).
OUTAGE_SECONDS = float(os.environ.get("CHAOS_OUTAGE_SECONDS", "6"))


def restart_postgres() -> None:
    """Restart the PostgreSQL server of the test database: a fast shutdown cuts every session, as a crash or a
    failover does. The server is found from its own postmaster.pid, and restarted with its own pg_ctl and the
    options it was started with (postmaster.opts)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        data_dir = Path(cursor.fetchone()[0])
    postmaster_pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    pg_ctl = Path(os.readlink(f"/proc/{postmaster_pid}/exe")).with_name("pg_ctl")
    connections.close_all()  # ours would be cut anyway; closing first keeps Django from reusing a dead one
    # The server's output goes to a file: a pipe of ours would outlive pg_ctl (the server inherits it).
    log = Path(tempfile.gettempdir()) / "emgapi-tests-postgres.log"
    log.touch()
    shutil.chown(log, "postgres")
    restart = ["runuser", "-u", "postgres", "--", str(pg_ctl), "-D", str(data_dir), "restart", "-m", "fast"]
    subprocess.run(
        [*restart, "-w", "-t", "60", "-l", str(log)],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def stop_slurm_daemon(daemon: str) -> None:
    """`daemon` is ctld, dbd or munge (scripts/slurm.sh stops it by the pid in its pid file)."""
    slurm(f"stop-{daemon}")


def start_slurm_daemon(daemon: str) -> None:
    slurm(f"start-{daemon}")


SERVICES_LOCK = Path(os.environ.get("EMGAPI_SERVICES_LOCK", "/run/lock/emgapi-services.lock"))


@contextmanager
def shared_services_to_ourselves() -> Iterator[None]:
    """Hold the machine's services exclusively while a test stops or restarts them, or skip the test.

    `make run` holds this lock shared while its stack uses Slurm and PostgreSQL (scripts/run_stack.sh): a test
    that stopped slurmctld under it would fail the demo's jobs' polls and disturb someone's work. Held
    exclusively, it also makes a `make run` started meanwhile wait until the test is done.
    """
    SERVICES_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(SERVICES_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.skip(
                f"a running `make run` holds {SERVICES_LOCK}: this test stops the Slurm daemons or PostgreSQL it "
                "uses ('make down' first, or run the tests on another machine)"
            )
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
