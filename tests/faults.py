"""Real faults for the chaos tests: daemons stopped by the pid their own pid file records, never by name."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from django.db import connection, connections

from tests.slurm_support import slurm


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
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(pg_ctl), "-D", str(data_dir), "restart", "-m", "fast", "-w"]
        + ["-t", "60", "-l", str(log)],
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
