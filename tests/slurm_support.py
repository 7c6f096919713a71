"""What tests about Slurm share: bringing the real cluster up once, and asking it what it holds."""

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState

ROOT = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = ROOT / "scripts" / "slurm.sh"

T = TypeVar("T")


def slurm(*args: str) -> None:
    """Run scripts/slurm.sh; on failure, the assertion carries what the script printed."""
    proc = subprocess.run(
        [str(SLURM_SCRIPT), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"scripts/slurm.sh {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"


def job_ids_with_comment(comment: str) -> set[str]:
    """Every job Slurm knows (live or finished) whose comment is `comment`: the sbatch count for a key."""
    live = subprocess.run(
        ["squeue", "--states=all", "--noheader", "-o", "%i|%k"], check=True, capture_output=True, text=True
    ).stdout
    finished = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--starttime", "now-1days", "--format=JobID,Comment"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    ids = set()
    for line in (live + finished).splitlines():
        job_id, _, job_comment = line.partition("|")
        if job_comment.strip() == comment:
            ids.add(job_id.strip())
    return ids


def slurm_state(client: SlurmClient, job_id: str | None) -> JobState:
    """What Slurm says of one job the ledger recorded as submitted."""
    assert job_id is not None, "the job was never submitted"
    return client.job_states([job_id])[job_id].state


def poll_until(
    check: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"
) -> T:
    """Poll-with-deadline: the value of `check` once truthy, else AssertionError naming what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
