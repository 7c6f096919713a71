"""The real Slurm jobs bench/poll.py fills the ledger with: the queue pool (running `sleep` jobs, and held jobs:
PENDING until cancelled) and the left-queue pool (finished jobs squeue no longer lists, from accounting, and the
shortfall run first as `true` arrays)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench._report import say
from bench._setup import run, sbatch, wait_until_idle

MAX_ARRAY = 1000  # Slurm's default MaxArraySize is 1001: indices up to 1000.


def left_queue_pool(wanted: int, tmp: Path, live_ids: list[str]) -> tuple[list[str], list[str]]:
    """`wanted` ids of finished jobs squeue no longer lists, and the arrays run for the shortfall (each added to
    `live_ids` as soon as it is submitted)."""
    finished_ids = finished_in_accounting(wanted)
    arrays: list[str] = []
    say(f"left-queue pool: {len(finished_ids)} finished jobs from accounting, no longer in squeue")
    shortfall = wanted - len(finished_ids)
    start = time.monotonic()
    for part in range(0, shortfall, MAX_ARRAY):
        count = min(MAX_ARRAY, shortfall - part)
        array = sbatch(
            [
                f"--array=1-{count}%1",
                f"--chdir={tmp}",
                "--output=/dev/null",
                "--time=1",
                "--wrap",
                "true",
            ]
        )
        arrays.append(array)
        live_ids.append(array)
        finished_ids += [f"{array}_{i}" for i in range(1, count + 1)]
    if arrays:
        wait_until_idle(arrays, timeout=3600, what="finished-job arrays")
        say(
            f"  + {shortfall} array tasks of `true` run for the shortfall in {time.monotonic() - start:.0f} s"
        )
    return finished_ids, arrays


def queue_pool(
    sleepers_count: int, wanted: int, tmp: Path, live_ids: list[str]
) -> tuple[list[str], list[str]]:
    """Up to `sleepers_count` running `sleep` jobs and held jobs for the rest of `wanted` (added to `live_ids`)."""
    sleepers = [
        sbatch(
            [
                f"--chdir={tmp}",
                f"--output={tmp}/sleep-%j.out",
                "--time=120",
                "--wrap",
                "echo started; sleep 7200",
            ]
        )
        for _ in range(min(sleepers_count, wanted))
    ]
    live_ids.extend(sleepers)
    wait_for_state(sleepers, "RUNNING")
    held_count = wanted - len(sleepers)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        held = list(
            pool.map(
                lambda _: sbatch(
                    ["--hold", f"--chdir={tmp}", "--output=/dev/null", "--time=1", "--wrap", "true"]
                ),
                range(held_count),
            )
        )
    live_ids.extend(held)
    say(
        f"queue pool: {len(sleepers)} running sleep jobs, {len(held)} held jobs (sbatch in {time.monotonic() - start:.0f} s)"
    )
    return sleepers, held


def finished_in_accounting(wanted: int) -> list[str]:
    """Up to ``wanted`` ids of jobs accounting has recorded as ended and squeue no longer lists, newest first.

    Plain job ids only: array tasks would do for sacct too, but one kind of id keeps the figures comparable.
    """
    from prefect_utils.states import map_state

    in_squeue = set(run(["squeue", "--noheader", "--states=all", "--array", "--format=%i"]).stdout.split())
    accounting = run(
        [
            "sacct",
            "--noheader",
            "--allocations",
            "--parsable2",
            "--starttime=now-7days",
            "--format=JobID,State",
        ]
    ).stdout
    ids = []
    for line in reversed(accounting.splitlines()):
        job_id, _, state = line.partition("|")
        if job_id.isdigit() and job_id not in in_squeue and map_state(state).is_terminal:
            ids.append(job_id)
    return ids[:wanted]


def wait_for_state(job_ids: list[str], state: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = run(["squeue", "--noheader", f"--jobs={','.join(job_ids)}", "--format=%T"], check=False)
        if proc.stdout.split().count(state) == len(job_ids):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs {job_ids} not {state} after {timeout:.0f} s: {proc.stdout.split()}")
        time.sleep(0.5)


def wait_until_purged(job_ids: list[str], timeout: float) -> float:
    """Wait until squeue no longer lists the jobs at all (not even as COMPLETED)."""
    start = time.monotonic()
    while True:
        proc = run(
            ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%i"],
            check=False,
        )
        if not proc.stdout.strip():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise SystemExit(f"jobs {job_ids} still listed by squeue after {timeout:.0f} s")
        time.sleep(5)
