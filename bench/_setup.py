"""What every benchmark sets up before it measures: its command line, a PostgreSQL database of its own (never the
development or test one) and the real Slurm cluster (waited for; what a benchmark submitted is cancelled at its
end), and the commit it measures.

Importing this module changes nothing but sys.path (the repository first, as `python bench/x.py` needs);
`fresh_database` must run before any Django model is imported.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

from bench._report import say

ROOT = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = ROOT / "scripts" / "slurm.sh"
DEFAULT_DATABASE_URL = "postgres://postgres:postgres@127.0.0.1:5432/emgapi"
T = TypeVar("T")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- the command line -------------------------------------------------------------------------------------------


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser: its module docstring, as written, is the description."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_fresh_database(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--database", default=default, help="dropped and recreated at start")


def parse_sizes(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """--sizes: comma-separated positive integers, sorted, each once."""
    sizes = sorted({int(size) for size in text.split(",") if size.strip()})
    if not sizes or sizes[0] < 1:
        parser.error("--sizes must be positive integers")
    return sizes


# --- PostgreSQL -------------------------------------------------------------------------------------------------


def database_server() -> SplitResult:
    """DATABASE_URL (default as in scripts/env.sh): the server and credentials every benchmark database is on."""
    base = urlsplit(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    if base.scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"the benchmarks need PostgreSQL; DATABASE_URL is {base.scheme}://...")
    return base


def database_url(name: str, scheme: str | None = None) -> str:
    """The URL of database `name` on the server of DATABASE_URL (with another scheme, for another driver)."""
    base = database_server()
    return urlunsplit(base._replace(scheme=scheme or base.scheme, path=f"/{name}"))


def admin_url() -> str:
    return database_url("postgres", "postgresql")


def recreate_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def use_database(name: str) -> str:
    """Point this process's Django at database `name` on the server of DATABASE_URL and set Django up; returns
    host:port/name. Only the database name is replaced, so a benchmark never touches the development or test
    databases."""
    base = database_server()
    os.environ["DATABASE_URL"] = database_url(name)
    os.environ.setdefault("SECRET_KEY", f"dev-and-test-only-secret-key-{socket.gethostname()}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emgapi.settings")
    # Django logs INFO to the console by default; the figures are what a benchmark prints.
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # A benchmark's 5,000-run study is over any approval threshold: it measures the work, not the waiting for a
    # person (flow servers started by a benchmark inherit this).
    os.environ.setdefault("APPROVAL_THRESHOLD_CPU_HOURS", "")

    import django

    django.setup()
    return f"{base.hostname}:{base.port or 5432}/{name}"


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def fresh_database(name: str) -> str:
    """Drop and recreate database `name`, point Django at it and migrate it; returns host:port/name."""
    recreate_database(name)
    where = use_database(name)
    migrate()
    return where


# --- Slurm, and the repository ----------------------------------------------------------------------------------


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


def chunks(items: Sequence[T], size: int = 500) -> Iterable[Sequence[T]]:
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


def repo_state() -> str:
    """The commit the figures are of, with ' + changes' when tracked files differ from it."""
    commit = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], check=False)
    return f"{commit or '?'}{' + changes' if dirty.stdout.strip() else ''}"
