"""What the benchmarks share: a fresh PostgreSQL database with the schema, the real Slurm, and small Slurm helpers.

Importing this module changes nothing; ``fresh_database`` must run before any Django model is imported.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = ROOT / "scripts" / "slurm.sh"
DEFAULT_DATABASE_URL = "postgres://postgres:postgres@127.0.0.1:5432/emgapi"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def say(message: str = "") -> None:
    print(message, flush=True)


def free_port() -> int:
    """A TCP port free on loopback now, for a server the benchmark starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- database ---------------------------------------------------------------------------------------------------


def fresh_database(name: str) -> str:
    """Drop and recreate database ``name`` on the server of DATABASE_URL, point Django at it, migrate.

    The server and credentials come from DATABASE_URL (default as in scripts/env.sh); only the database name is
    replaced, so a benchmark never touches the development or test databases.
    """
    import psycopg
    from psycopg import sql

    base = urlsplit(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    if base.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"the benchmarks need PostgreSQL; DATABASE_URL is {base.scheme}://...")
    admin_url = urlunsplit(base._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(base._replace(path=f"/{name}"))
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SECRET_KEY", f"dev-and-test-only-secret-key-{socket.gethostname()}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emgapi.settings")
    # Django logs INFO to the console by default; the figures are what a benchmark prints.
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return f"{base.hostname}:{base.port or 5432}/{name}"


class QueryTimer:
    """Counts the SQL statements Django runs, and the wall time spent executing them (connection.execute_wrapper).

    COMMIT is not a statement Django executes through a cursor, so it is not counted here.
    """

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.kinds: Counter[str] = Counter()

    def __call__(self, execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - start
            self.count += 1
            self.kinds[statement_kind(sql)] += 1

    def kinds_per(self, n: int) -> str:
        return ", ".join(f"{count / n:g} {kind}" for kind, count in self.kinds.most_common())


def statement_kind(sql: str) -> str:
    words = sql.split()
    kind = words[0].upper() if words else "?"
    if kind == "SELECT" and words[1:2] == ["COUNT(*)"]:
        kind = "SELECT COUNT"
    if kind == "SELECT" and "FOR UPDATE" in sql:
        kind = "SELECT FOR UPDATE"
    return kind


# --- Slurm ------------------------------------------------------------------------------------------------------


def run(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def wait_for_slurm(timeout: float = 600.0) -> None:
    """Wait until `scripts/slurm.sh status` exits 0 and sacct answers (the cluster may be restarting)."""
    deadline = time.monotonic() + timeout
    told = False
    while True:
        status = run([str(SLURM_SCRIPT), "status"], check=False)
        sacct = run(["sacct", "--noheader", "--allocations", "--starttime=now-1minutes"], check=False)
        if status.returncode == 0 and sacct.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise SystemExit(
                f"Slurm is not up after {timeout:.0f} s (run `scripts/slurm.sh up`):\n{status.stdout}{sacct.stderr}"
            )
        if not told:
            say("waiting for Slurm (scripts/slurm.sh status and sacct must both succeed) ...")
            told = True
        time.sleep(5)


def config_value(name: str) -> str:
    for line in run(["scontrol", "show", "config"]).stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    return ""


def seconds_value(text: str, default: int) -> int:
    """scontrol prints durations as '300 sec'."""
    words = text.split()
    return int(words[0]) if words and words[0].isdigit() else default


def sbatch(args: Sequence[str]) -> str:
    proc = run(["sbatch", "--parsable", *args])
    return proc.stdout.strip().split(";", 1)[0]


def chunks(items: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def scancel(job_ids: Iterable[str]) -> None:
    ids = [job_id for job_id in job_ids if job_id]
    for part in chunks(ids):
        run(["scancel", *part], check=False)


def live_job_ids(job_ids: Iterable[str]) -> set[str]:
    """The ids among ``job_ids`` that squeue still lists as pending or running (array tasks as 'A_i')."""
    wanted = {job_id for job_id in job_ids if job_id}
    live: set[str] = set()
    bases = sorted({job_id.split("_", 1)[0] for job_id in wanted})
    for part in chunks(bases):
        proc = run(
            [
                "squeue",
                "--noheader",
                "--array",
                "--states=PENDING,RUNNING,COMPLETING,CONFIGURING",
                f"--jobs={','.join(part)}",
                "--format=%i",
            ],
            check=False,
        )
        live.update(line.strip() for line in proc.stdout.splitlines() if line.strip())
    # A bare array id ('A') is live while any of its tasks ('A_i') is.
    live_bases = {job_id.split("_", 1)[0] for job_id in live}
    return {job_id for job_id in wanted if job_id in live or ("_" not in job_id and job_id in live_bases)}


def wait_until_idle(job_ids: Iterable[str], timeout: float = 900.0, what: str = "jobs") -> float:
    """Wait until none of ``job_ids`` is pending or running; returns the seconds waited."""
    ids = list(job_ids)
    start = time.monotonic()
    while live_job_ids(ids):
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{what} still in the queue after {timeout:.0f} s")
        time.sleep(1)
    return time.monotonic() - start
