"""Everything Slurm prints is read here, by pure functions, into typed values; and the formats asked of it.

Standard library only.
"""

from __future__ import annotations

import re
from datetime import datetime

from prefect_utils.errors import SchedulerError
from prefect_utils.job_spec import JobInfo, expand_output_pattern
from prefect_utils.states import JobState, map_state

__all__ = [
    "FIELD_SEP",
    "JOB_ID",
    "RECORD_SEP",
    "SACCT_FIELDS",
    "SACCT_FORMAT",
    "SQUEUE_FIELDS",
    "SQUEUE_FORMAT",
    "parse_exit_code",
    "parse_sacct",
    "parse_sbatch_job_id",
    "parse_squeue",
    "parse_time",
    "parse_wait_status",
]

# A Slurm job id: "123", or an array task "123_4".
JOB_ID = re.compile(r"\d+(?:_\d+)?")


# Unit separator between fields and record separator after the last one: job names, comments and paths of
# other users' jobs may contain '|' or even newlines, these bytes in practice never.
FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"

SQUEUE_FIELDS = (
    "JobID",
    "State",
    "Reason",
    "exit_code",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "NodeList",
    "Name",
    "STDOUT",
    "Comment",
)
# squeue --Format: "field:suffix" prints the field unpadded and untruncated, followed by the suffix.
SQUEUE_FORMAT = (
    ",".join(f"{name}:{FIELD_SEP}" for name in SQUEUE_FIELDS[:-1]) + f",{SQUEUE_FIELDS[-1]}:{RECORD_SEP}"
)

SACCT_FIELDS = (
    "JobID",
    "State",
    "ExitCode",
    "Reason",
    "Submit",
    "Start",
    "End",
    "NodeList",
    "JobName",
    "Comment",
)
SACCT_FORMAT = ",".join(SACCT_FIELDS)

_NO_VALUE = {"", "n/a", "none", "unknown", "(null)", "none assigned"}


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text.lower() in _NO_VALUE else text


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """sacct's "exit:signal" ("3:0", "0:15") to (exit code, signal); (None, None) when absent."""
    text = text.strip()
    match = re.fullmatch(r"(\d+):(\d+)", text)
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2))


def parse_wait_status(text: str) -> tuple[int | None, int | None]:
    """squeue's exit_code, a raw wait(2) status (768 = exit 3, 9 = killed by signal 9), to (exit code, signal)."""
    text = text.strip()
    if not text.isdigit():
        return None, None
    status = int(text)
    return (status >> 8) & 0xFF, status & 0x7F


def parse_time(text: str) -> datetime | None:
    """Slurm's local "2026-11-21T23:27:31" to an aware datetime; None for "Unknown", "N/A", "None" and blanks."""
    value = _value(text)
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).astimezone()
    except ValueError:
        return None


def _split_records(text: str, separator: str, width: int) -> list[list[str]]:
    records = []
    for record in text.split(separator):
        record = record.strip("\n")
        if not record:
            continue
        values = record.split(FIELD_SEP)
        if len(values) == width:
            records.append(values)
    return records


def parse_squeue(text: str) -> list[JobInfo]:
    """Output of ``squeue --noheader --Format=SQUEUE_FORMAT`` to one ``JobInfo`` per job."""
    jobs = []
    for values in _split_records(text, RECORD_SEP, len(SQUEUE_FIELDS)):
        row = dict(zip(SQUEUE_FIELDS, values, strict=True))
        job_id = row["JobID"].strip()
        state = map_state(row["State"])
        terminal = state.is_terminal
        exit_code, signal = parse_wait_status(row["exit_code"]) if terminal else (None, None)
        node = _value(row["NodeList"])
        stdout = _value(row["STDOUT"])
        if stdout:
            stdout = expand_output_pattern(stdout, job_id, _value(row["Name"]), node)
        jobs.append(
            JobInfo(
                job_id=job_id,
                state=state,
                slurm_state=row["State"].strip(),
                reason=_value(row["Reason"]),
                exit_code=exit_code,
                signal=signal,
                # A pending job's start and a running job's end are Slurm's forecasts, not facts.
                start=parse_time(row["StartTime"]) if state is not JobState.PENDING else None,
                end=parse_time(row["EndTime"]) if terminal else None,
                node=node,
                comment=_value(row["Comment"]),
                stdout_path=stdout,
                submitted=parse_time(row["SubmitTime"]),
            )
        )
    return jobs


def parse_sacct(text: str) -> list[JobInfo]:
    """Output of ``sacct --noheader --parsable2 --delimiter=FIELD_SEP --format=SACCT_FORMAT`` (job allocations)."""
    jobs = []
    for values in _split_records(text, "\n", len(SACCT_FIELDS)):
        row = dict(zip(SACCT_FIELDS, values, strict=True))
        state = map_state(row["State"])
        exit_code, signal = parse_exit_code(row["ExitCode"]) if state.is_terminal else (None, None)
        jobs.append(
            JobInfo(
                job_id=row["JobID"].strip(),
                state=state,
                slurm_state=row["State"].strip(),
                reason=_value(row["Reason"]),
                exit_code=exit_code,
                signal=signal,
                start=parse_time(row["Start"]),
                end=parse_time(row["End"]) if state.is_terminal else None,
                node=_value(row["NodeList"]),
                comment=_value(row["Comment"]),
                submitted=parse_time(row["Submit"]),
            )
        )
    return jobs


def parse_sbatch_job_id(text: str) -> str:
    """``sbatch --parsable`` prints "<id>" or "<id>;<cluster>"."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    job_id = first.split(";", 1)[0].strip()
    if not JOB_ID.fullmatch(job_id):
        raise SchedulerError(f"sbatch printed no job id: {text.strip()!r}")
    return job_id
