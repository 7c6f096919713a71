"""Parsing of Slurm's outputs (prefect_utils/parsing.py), on captures from the real cluster (captures.py)."""

from datetime import datetime

import pytest

from prefect_utils.errors import SchedulerError
from prefect_utils.parsing import (
    parse_exit_code,
    parse_sacct,
    parse_sbatch_job_id,
    parse_squeue,
    parse_time,
    parse_wait_status,
)
from prefect_utils.states import JobState
from tests.prefect_utils.captures import IDS, by_id, read, wall_clock

# --- exit codes, times ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3:0", (3, 0)), ("0:15", (0, 15)), ("0:125", (0, 125)), ("", (None, None)), ("N/A", (None, None))],
)
def test_parse_exit_code(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("768", (3, 0)),
        ("0", (0, 0)),
        ("9", (0, 9)),
        ("15", (0, 15)),
        ("", (None, None)),
        ("N/A", (None, None)),
    ],
)
def test_parse_wait_status(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_wait_status(text) == expected


@pytest.mark.parametrize("text", ["", "Unknown", "None", "N/A", "NONE", "(null)", "garbage"])
def test_parse_time_without_a_time(text: str) -> None:
    assert parse_time(text) is None


def test_parse_time_is_aware_and_keeps_the_wall_clock() -> None:
    parsed = parse_time("2026-11-21T23:31:46")
    assert parsed is not None and parsed.tzinfo is not None
    assert wall_clock(parsed) == datetime(2026, 11, 21, 23, 31, 46)


# --- squeue ---


def test_parse_squeue_live_jobs() -> None:
    jobs = by_id(parse_squeue(read("squeue_live.txt")))
    assert set(jobs) == set(IDS.values())

    pending = jobs[IDS["pending"]]
    assert (pending.state, pending.reason) == (JobState.PENDING, "BeginTime")
    # squeue prints a forecast start for a pending job and a 0 exit status: neither is a fact yet.
    assert (pending.start, pending.end, pending.exit_code, pending.node) == (None, None, None, None)
    assert pending.comment == "capture-pending-0001"

    running = jobs[IDS["running"]]
    assert running.state is JobState.RUNNING and running.reason is None
    assert wall_clock(running.start) == datetime(2026, 11, 21, 23, 31, 50)
    assert running.end is None and running.exit_code is None
    assert running.node == "vm"
    # The time-limited job is still running at this point.
    assert jobs[IDS["timeout"]].state is JobState.RUNNING

    completed = jobs[IDS["completed"]]
    assert (completed.state, completed.exit_code, completed.signal) == (JobState.COMPLETED, 0, 0)
    assert wall_clock(completed.end) == datetime(2026, 11, 21, 23, 31, 46)
    assert completed.stdout_path == f"/tmp/emgapi-capture/slurm-{IDS['completed']}.out"
    assert completed.comment == "capture-completed-0001"
    assert wall_clock(completed.submitted) == datetime(2026, 11, 21, 23, 31, 45)

    failed = jobs[IDS["failed"]]
    assert (failed.state, failed.exit_code, failed.signal, failed.reason) == (
        JobState.FAILED,
        3,
        0,
        "NonZeroExitCode",
    )

    # Over its --mem, jobacct_gather's OverMemoryKill SIGKILLs the step: FAILED, not OUT_OF_MEMORY, without cgroups.
    memkill = jobs[IDS["memkill"]]
    assert (memkill.state, memkill.exit_code, memkill.signal) == (JobState.FAILED, 0, 9)

    cancelled = jobs[IDS["cancelled"]]
    assert (cancelled.state, cancelled.signal) == (JobState.CANCELLED, 15)


def test_parse_squeue_ended_jobs() -> None:
    jobs = by_id(parse_squeue(read("squeue_ended.txt")))
    timeout = jobs[IDS["timeout"]]
    assert (timeout.state, timeout.reason, timeout.slurm_state) == (JobState.TIMEOUT, "TimeLimit", "TIMEOUT")
    assert wall_clock(timeout.end) == datetime(2026, 11, 21, 23, 33, 13)
    assert jobs[IDS["running"]].state is JobState.CANCELLED
    cancelled_while_pending = jobs[IDS["pending"]]
    assert cancelled_while_pending.state is JobState.CANCELLED and cancelled_while_pending.node is None
    # Without an explicit --output, squeue prints the path already expanded.
    assert cancelled_while_pending.stdout_path == f"/tmp/emgapi-capture/slurm-{IDS['pending']}.out"


def test_parse_squeue_skips_malformed_records() -> None:
    text = read("squeue_live.txt")
    assert len(parse_squeue("garbage\x1e\n" + text + "1\x1fRUNNING\x1e\n")) == len(IDS)
    assert parse_squeue("") == []


# --- sacct ---


def test_parse_sacct_ended_jobs() -> None:
    jobs = by_id(parse_sacct(read("sacct_ended.txt")))
    assert set(jobs) == set(IDS.values())
    failed = jobs[IDS["failed"]]
    assert (failed.state, failed.exit_code, failed.signal) == (JobState.FAILED, 3, 0)
    assert failed.comment == "capture-failed-0001"
    assert failed.stdout_path is None
    cancelled = jobs[IDS["cancelled"]]
    assert (cancelled.state, cancelled.slurm_state) == (JobState.CANCELLED, "CANCELLED by 0")
    timeout = jobs[IDS["timeout"]]
    assert (timeout.state, timeout.exit_code) == (JobState.TIMEOUT, 0)
    assert jobs[IDS["memkill"]].signal == 9
    never_started = jobs[IDS["pending"]]
    assert (never_started.start, never_started.node) == (None, None)
    assert wall_clock(never_started.end) == datetime(2026, 11, 21, 23, 33, 13)
    completed = jobs[IDS["completed"]]
    assert (completed.state, completed.exit_code, completed.node) == (JobState.COMPLETED, 0, "vm")


def test_parse_sacct_live_jobs_shows_why_squeue_is_the_truth_for_live_jobs() -> None:
    jobs = by_id(parse_sacct(read("sacct_live.txt")))
    # A job whose begin time is in the future is not in sacct's window at all...
    assert IDS["pending"] not in jobs
    # ... and jobs that had started 1.5 s earlier were still PENDING, named "allocation", without comment.
    for name in ("running", "timeout"):
        job = jobs[IDS[name]]
        assert (job.state, job.comment, job.exit_code, job.end) == (JobState.PENDING, None, None, None)
    assert jobs[IDS["failed"]].exit_code == 3


def test_parse_sacct_documented_out_of_memory() -> None:
    (job,) = parse_sacct(read("sacct_oom_documented.txt"))
    assert (job.state, job.exit_code, job.signal) == (JobState.OUT_OF_MEMORY, 0, 125)


# --- sbatch and error messages ---


@pytest.mark.parametrize(("text", "expected"), [("42\n", "42"), ("42;emgapi\n", "42"), ("7_1\n", "7_1")])
def test_parse_sbatch_job_id(text: str, expected: str) -> None:
    assert parse_sbatch_job_id(text) == expected


@pytest.mark.parametrize("text", ["", "Submitted batch job 42\n", "x;y"])
def test_parse_sbatch_job_id_refuses_other_output(text: str) -> None:
    with pytest.raises(SchedulerError):
        parse_sbatch_job_id(text)
