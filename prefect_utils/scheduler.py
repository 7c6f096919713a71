"""The Slurm client: submit, query and cancel jobs through Slurm's command-line tools.

Everything Slurm prints is parsed here, by the module-level pure functions (``parse_squeue``, ``parse_sacct``,
``map_state``, ...), into typed values. Commands always run as argument lists, never through a shell.

Standard library only: the poller, the submission protocol and the web health check all build on this module.
"""

from __future__ import annotations

import collections
import enum
import os
import pwd
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "TERMINAL_STATES",
    "UNSCHEDULABLE_REASONS",
    "JobInfo",
    "JobSpec",
    "JobState",
    "SchedulerError",
    "SchedulerUnavailable",
    "SlurmClient",
    "SubmissionRejected",
    "SubmitLimitReached",
    "expand_output_pattern",
    "map_state",
    "parse_exit_code",
    "parse_sacct",
    "parse_sbatch_job_id",
    "parse_squeue",
    "parse_time",
    "parse_wait_status",
]


class JobState(enum.StrEnum):
    """What the service needs to know about a job; ``SlurmClient`` maps every Slurm state onto one of these."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_terminal(self) -> bool:
        return self not in (JobState.UNKNOWN, JobState.PENDING, JobState.RUNNING)


# The one definition of "this job is over" for the whole service (the ledger, the poller, the reconciler).
TERMINAL_STATES: frozenset[str] = frozenset(state.value for state in JobState if state.is_terminal)

# Job state codes of Slurm 22.05 (squeue(1), sacct(1)). A state that still holds or may yet get resources is
# PENDING or RUNNING: the service must not treat it as finished.
_SLURM_STATES: Mapping[str, JobState] = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "CONFIGURING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
}


# Reasons Slurm gives for keeping a job PENDING that time alone never clears: the job asks for more than a limit
# allows, or for what no node of its partition has, or waits on a dependency that can no longer be met. Only an
# operator changing the job or the limits would let it start. EnforcePartLimits refuses such jobs at submission,
# so a job meets these when the limits change under it, e.g. a partition's MaxTime lowered below its --time.
# Left out although they may also last long, because they clear without anyone touching the job or the limits:
# - PartitionNodeLimit: Slurm documents that it may also mean the partition's nodes are DOWN or DRAINED, and a node
#   returns when its slurmd registers again (ReturnToService=2).
# - InvalidAccount, InvalidQOS: slurmctld looks the association and QOS up again on every scheduling pass and
#   clears these once found, e.g. after a slurmctld that started while slurmdbd was down gets its associations.
# - PartitionDown/Inactive, JobHeldAdmin/User, ReqNodeNotAvail, Reservation: states that operators set and lift.
# - Grp*, Max*PerUser, Max*PerAccount: limits on what other jobs use, which frees up as those jobs end.
# The strings are Slurm 22.05's (job_reason_string in src/common/slurm_protocol_defs.c).
UNSCHEDULABLE_REASONS: frozenset[str] = frozenset(
    {
        "PartitionTimeLimit",
        # Any other partition limit (CPUs, AllowGroups, nodes outside the partition...).
        "PartitionConfig",
        "BadConstraints",
        "DependencyNeverSatisfied",
        # Per-job limits of the job's QOS or association (AccountingStorageEnforce=limits): they weigh the
        # job's own request only.
        "QOSMaxWallDurationPerJobLimit",
        "AssocMaxWallDurationPerJobLimit",
        "QOSMaxCpuPerJobLimit",
        "AssocMaxCpuPerJobLimit",
        "QOSMaxCpuMinutesPerJobLimit",
        "AssocMaxCpuMinutesPerJobLimit",
        "QOSMaxNodePerJobLimit",
        "AssocMaxNodePerJobLimit",
        "QOSMaxMemoryPerJob",
        "AssocMaxMemPerJob",
    }
)


class SchedulerError(Exception):
    """Slurm refused or failed a request."""


class SchedulerUnavailable(SchedulerError):
    """The controller (or the accounting daemon) did not answer, even after bounded retries."""


class SubmitLimitReached(SchedulerError):
    """Back-pressure: sbatch refused the job because of a submit limit; submit again later."""


class SubmissionRejected(SchedulerError):
    """sbatch refused the job spec itself; submitting it again will not help."""


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_JOB_ID = re.compile(r"\d+(?:_\d+)?")
# The job's whole environment is the spec's plus these defaults: nothing leaks from the orchestrator (secrets,
# virtualenvs), so a job behaves the same whichever process submitted it.
_MAX_JOBS_ARGUMENT = 100_000
_DEFAULT_JOB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """Everything that defines a batch job. Data reaches the script through ``environment``, never its text."""

    name: str
    script: str
    workdir: str
    partition: str | None = None
    cpus: int = 1
    memory_mb: int = 512
    time_limit_minutes: int = 60
    environment: dict[str, str] = field(default_factory=dict)
    output_path: str | None = None
    error_path: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("JobSpec.name must not be empty")
        if not self.script.strip():
            raise ValueError("JobSpec.script must not be empty")
        for attribute in ("cpus", "memory_mb", "time_limit_minutes"):
            value = getattr(self, attribute)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"JobSpec.{attribute} must be a positive integer, got {value!r}")
        for attribute in ("workdir", "output_path", "error_path"):
            value = getattr(self, attribute)
            if value is not None and not os.path.isabs(value):
                raise ValueError(f"JobSpec.{attribute} must be an absolute path, got {value!r}")
        for key, value in self.environment.items():
            if not _ENV_NAME.fullmatch(key) or key.startswith("SLURM_"):
                raise ValueError(f"invalid environment variable name for a job: {key!r}")
            if not isinstance(value, str) or "\0" in value:
                raise ValueError(f"environment value of {key} must be a string without NUL bytes")

    @property
    def batch_script(self) -> str:
        """The script as submitted: sbatch needs an interpreter line."""
        body = self.script if self.script.endswith("\n") else self.script + "\n"
        return body if body.startswith("#!") else "#!/bin/bash\n" + body

    def stdout_path(self, job_id: str) -> str:
        """Where the job's standard output goes, with ``%j``-style patterns expanded."""
        pattern = self.output_path or os.path.join(self.workdir, "slurm-%j.out")
        return expand_output_pattern(pattern, job_id, job_name=None)

    def canonical(self) -> dict[str, Any]:
        """A JSON-able, key-sorted form: equal specs give equal canonical forms (the submission key hashes it)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["environment"] = dict(sorted(self.environment.items()))
        return dict(sorted(values.items()))

    @classmethod
    def from_canonical(cls, data: Mapping[str, Any]) -> JobSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown JobSpec fields: {sorted(unknown)}")
        values = dict(data)
        values["environment"] = dict(values.get("environment") or {})
        return cls(**values)


@dataclass(frozen=True)
class JobInfo:
    """One job as Slurm last reported it. ``slurm_state`` keeps Slurm's own word for the state."""

    job_id: str
    state: JobState
    slurm_state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    node: str | None = None
    comment: str | None = None
    stdout_path: str | None = None
    submitted: datetime | None = None

    @classmethod
    def unknown(cls, job_id: str, slurm_state: str = "", reason: str | None = None) -> JobInfo:
        return cls(job_id=job_id, state=JobState.UNKNOWN, slurm_state=slurm_state, reason=reason)

    @property
    def unschedulable(self) -> bool:
        """Slurm keeps the job pending for a reason that never clears by itself (``UNSCHEDULABLE_REASONS``)."""
        return self.state is JobState.PENDING and self.reason in UNSCHEDULABLE_REASONS


# --- parsing: everything Slurm prints is read here -----------------------------------------------------------

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


def map_state(raw: str) -> JobState:
    """Slurm's state text ("CANCELLED by 0", "CANCELLED+", "TIMEOUT") to a ``JobState``; UNKNOWN if unrecognised."""
    words = raw.strip().split()
    if not words:
        return JobState.UNKNOWN
    return _SLURM_STATES.get(words[0].rstrip("+").upper(), JobState.UNKNOWN)


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


def expand_output_pattern(pattern: str, job_id: str, job_name: str | None, node: str | None = None) -> str:
    """Expand the filename patterns sbatch understands for --output (%j, %A, %a, %x, %N, %%); others stay."""
    base, _, index = job_id.partition("_")
    replacements = {"j": job_id, "A": base, "a": index or None, "x": job_name, "N": node, "%": "%"}

    def replace(match: re.Match[str]) -> str:
        value = replacements.get(match.group(1))
        return match.group(0) if value is None else value

    return re.sub(r"%([A-Za-z%])", replace, pattern)


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
    if not _JOB_ID.fullmatch(job_id):
        raise SchedulerError(f"sbatch printed no job id: {text.strip()!r}")
    return job_id


# Messages of a controller (or slurmdbd) that is down, restarting or overloaded: worth another try.
_TRANSIENT = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "connect failure",
    "zero bytes were transmitted or received",
    "transport endpoint is not connected",
    "communication connection failure",
    "backup controller in standby mode",
    "problem talking to the database",
    "resource temporarily unavailable",
    # munged stopped or restarting: the client cannot sign its request, or the controller cannot check it.
    "protocol authentication error",
)
# ... of which these mean the controller never took the request in (unreachable, or it refused an unsigned one), so
# a retried sbatch cannot duplicate a job.
_NEVER_CONNECTED = ("connect failure", "connection refused", "protocol authentication error")
_SUBMIT_LIMIT = (
    "qosmaxsubmitjobperuserlimit",
    "qosmaxsubmitjobperaccountlimit",
    "assocmaxsubmitjoblimit",
    "maxsubmitjob",
    "job violates accounting/qos policy",
    "job submit limit",
    "resource temporarily unavailable",
    "temporarily unable to accept job",
)


def is_transient_error(message: str) -> bool:
    lowered = message.lower()
    return any(pattern in lowered for pattern in _TRANSIENT)


def is_submit_limit(message: str) -> bool:
    lowered = message.lower()
    return any(pattern in lowered for pattern in _SUBMIT_LIMIT)


def _newest(jobs: Iterable[JobInfo]) -> JobInfo | None:
    def order(job: JobInfo) -> tuple[float, int]:
        submitted = job.submitted.timestamp() if job.submitted else 0.0
        return submitted, int(job.job_id.split("_", 1)[0])

    return max(jobs, key=order, default=None)


# --- the client ----------------------------------------------------------------------------------------------

Runner = Callable[..., subprocess.CompletedProcess[str]]


class _Transient(Exception):
    def __init__(self, message: str, *, maybe_delivered: bool) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class SlurmClient:
    """Talks to Slurm through sbatch, squeue, sacct, scancel and scontrol.

    ``calls`` counts every command run, retries included, so tests and benchmarks can hold the service to
    "one squeue (and at most one sacct) per poll".
    """

    def __init__(
        self,
        *,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        command_timeout: float = 30.0,
        sacct_lookback: timedelta = timedelta(days=30),
        runner: Runner = subprocess.run,
    ) -> None:
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.command_timeout = command_timeout
        self.sacct_lookback = sacct_lookback
        self._runner = runner
        self.calls: collections.Counter[str] = collections.Counter()

    # -- running commands --

    def _attempt(
        self, command: str, args: list[str], env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.calls[command] += 1
        try:
            proc = self._runner(
                [command, *args],
                capture_output=True,
                text=True,
                timeout=self.command_timeout,
                env=dict(env) if env is not None else None,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise _Transient(
                f"{command} did not answer within {self.command_timeout:g} s", maybe_delivered=True
            ) from exc
        except OSError as exc:
            raise SchedulerUnavailable(f"cannot run {command}: {exc}") from exc
        # sbatch's "Resource temporarily unavailable" is back-pressure for the caller, not an outage.
        back_pressure = command == "sbatch" and is_submit_limit(proc.stderr)
        if proc.returncode != 0 and is_transient_error(proc.stderr) and not back_pressure:
            message = proc.stderr.strip()
            never_connected = any(pattern in message.lower() for pattern in _NEVER_CONNECTED)
            raise _Transient(f"{command}: {message}", maybe_delivered=not never_connected)
        return proc

    def _pause(self, attempt: int) -> None:
        time.sleep(self.backoff_seconds * 2**attempt)

    def _run(self, command: str, args: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a read-only or idempotent command, retrying transient failures with exponential backoff."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt - 1)
            try:
                return self._attempt(command, args)
            except _Transient as exc:
                last = str(exc)
        raise SchedulerUnavailable(f"{last} (after {self.retries + 1} attempts)")

    def _starttime(self, since: datetime | None = None) -> str:
        # sacct looks at today only unless told where to start; it reads local wall-clock time.
        start = since.astimezone() if since is not None else datetime.now().astimezone() - self.sacct_lookback
        return start.strftime("%Y-%m-%dT%H:%M:%S")

    def _squeue(self, selection: list[str]) -> list[JobInfo]:
        proc = self._run("squeue", [*selection, "--states=all", "--noheader", f"--Format={SQUEUE_FORMAT}"])
        if proc.returncode != 0:
            # Asked only about ids the controller has already forgotten, squeue fails instead of printing nothing.
            if "invalid job id specified" in proc.stderr.lower():
                return []
            raise SchedulerError(f"squeue failed ({proc.returncode}): {proc.stderr.strip()}")
        return parse_squeue(proc.stdout)

    def _sacct(self, selection: list[str], since: datetime | None = None) -> list[JobInfo]:
        proc = self._run(
            "sacct",
            [
                *selection,
                "--allocations",
                "--noheader",
                "--parsable2",
                f"--delimiter={FIELD_SEP}",
                f"--starttime={self._starttime(since)}",
                f"--format={SACCT_FORMAT}",
            ],
        )
        if proc.returncode != 0:
            raise SchedulerError(f"sacct failed ({proc.returncode}): {proc.stderr.strip()}")
        return parse_sacct(proc.stdout)

    # -- public API --

    def submit(self, spec: JobSpec, key: str) -> str:
        """Submit ``spec`` tagged with ``key`` (``--comment``) and return the job id.

        After a failure that may have reached the controller (a timeout), the retry first looks the key up and
        adopts the job it finds instead of submitting blindly again. Raises SubmitLimitReached (back-pressure),
        SubmissionRejected (the spec) or SchedulerUnavailable.
        """
        if not _KEY.fullmatch(key):
            raise ValueError(f"invalid submission key {key!r}: use letters, digits and . _ : - (max 200)")
        job_name = _job_name(spec.name, key)
        script_path = _write_script(spec, job_name)
        env = _job_environment(spec)
        args = [
            "--parsable",
            "--no-requeue",
            f"--job-name={job_name}",
            f"--comment={key}",
            f"--chdir={spec.workdir}",
            f"--output={spec.output_path or os.path.join(spec.workdir, 'slurm-%j.out')}",
            "--ntasks=1",
            f"--cpus-per-task={spec.cpus}",
            f"--mem={spec.memory_mb}M",
            f"--time={spec.time_limit_minutes}",
            # The job inherits sbatch's environment, which is exactly the spec's (see _job_environment): values
            # never pass through --export's comma-separated syntax, and naming variables instead of ALL would make
            # slurmd load the user's login environment (slow, and it leaks into the job).
            "--export=ALL",
        ]
        if spec.error_path:
            args.append(f"--error={spec.error_path}")
        if spec.partition:
            args.append(f"--partition={spec.partition}")
        args.append(script_path)
        sbatch_env = dict(env)
        if "SLURM_CONF" in os.environ:
            sbatch_env["SLURM_CONF"] = os.environ["SLURM_CONF"]

        last = ""
        check_first = False
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt - 1)
            if check_first:
                try:
                    existing = self.find_by_key(key)
                except SchedulerUnavailable as exc:
                    last = str(exc)
                    continue
                if existing is not None:
                    return existing.job_id
                check_first = False
            try:
                proc = self._attempt("sbatch", args, env=sbatch_env)
            except _Transient as exc:
                last = str(exc)
                check_first = exc.maybe_delivered
                continue
            if proc.returncode == 0:
                return parse_sbatch_job_id(proc.stdout)
            message = proc.stderr.strip() or proc.stdout.strip()
            if is_submit_limit(message):
                raise SubmitLimitReached(message)
            raise SubmissionRejected(message)
        raise SchedulerUnavailable(f"{last} (after {self.retries + 1} attempts)")

    def job_states(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """The state of every job in ``job_ids``: one squeue call, then at most one sacct call.

        squeue is the truth for jobs the controller still holds; sacct is asked only about the others. A job
        neither knows, or that accounting still calls live after the controller forgot it, is UNKNOWN.
        """
        ids = _job_ids(job_ids)
        if not ids:
            return {}
        wanted = set(ids)
        found = {job.job_id: job for job in self._squeue(_select_jobs(ids)) if job.job_id in wanted}
        ask_accounting = [
            job_id
            for job_id in ids
            if job_id not in found or (found[job_id].state.is_terminal and found[job_id].exit_code is None)
        ]
        if ask_accounting:
            by_id: dict[str, list[JobInfo]] = collections.defaultdict(list)
            for job in self._sacct(_select_jobs(ask_accounting)):
                by_id[job.job_id].append(job)
            for job_id in ask_accounting:
                record = _newest(by_id.get(job_id, ()))
                if record is None:
                    continue
                if record.state.is_terminal:
                    found[job_id] = record
                elif job_id not in found:
                    found[job_id] = JobInfo.unknown(
                        job_id, record.slurm_state, "not in squeue; accounting has not recorded its end"
                    )
        return {job_id: found.get(job_id) or JobInfo.unknown(job_id) for job_id in ids}

    def find_by_key(self, key: str, *, since: datetime | None = None) -> JobInfo | None:
        """The newest job submitted with ``key``: squeue sees live (and recently ended) jobs, sacct the rest."""
        return self.find_by_keys([key], since=since).get(key)

    def find_by_keys(self, keys: Iterable[str], *, since: datetime | None = None) -> dict[str, JobInfo]:
        """The newest job carrying each key, for the keys that have one: one squeue, at most one sacct.

        ``since`` bounds the accounting search (the ledger knows when it created the rows); without it, the
        client's lookback (30 days by default) is scanned.
        """
        wanted = set(keys)
        if not wanted:
            return {}
        user = _current_user()
        by_key: dict[str, list[JobInfo]] = collections.defaultdict(list)
        for job in self._squeue([f"--user={user}"]):
            if job.comment in wanted:
                by_key[job.comment].append(job)
        missing = wanted - set(by_key)
        if missing:
            # The comment reaches accounting only when the job ends, and live jobs were all in squeue above.
            for job in self._sacct([f"--user={user}"], since=since):
                if job.comment in missing:
                    by_key[job.comment].append(job)
        return {key: newest for key, jobs in by_key.items() if (newest := _newest(jobs)) is not None}

    def cancel(self, job_ids: Iterable[str]) -> None:
        """Ask Slurm to cancel jobs. scancel succeeds even for unknown ids: read the state afterwards."""
        ids = _job_ids(job_ids)
        if not ids:
            return
        proc = self._run("scancel", ids)
        if proc.returncode != 0:
            raise SchedulerError(f"scancel failed ({proc.returncode}): {proc.stderr.strip()}")

    def tail_log(self, job: JobInfo | str | os.PathLike[str], lines: int = 20) -> str:
        """The last ``lines`` lines of a job's standard output (or of a file), '' if there is none."""
        path = job.stdout_path if isinstance(job, JobInfo) else os.fspath(job)
        if not path or lines <= 0:
            return ""
        try:
            with open(path, "rb") as handle:
                return _tail(handle, lines).decode("utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            return ""

    def ping(self) -> bool:
        """Whether the controller answers (for /healthz): one quick try, no retries."""
        try:
            proc = self._attempt("scontrol", ["ping"])
        except (_Transient, SchedulerUnavailable):
            return False
        return proc.returncode == 0 and "is UP" in proc.stdout


def _job_ids(job_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(str(job_id).strip() for job_id in job_ids))
    bad = [job_id for job_id in ids if not _JOB_ID.fullmatch(job_id)]
    if bad:
        raise ValueError(f"not Slurm job ids: {bad}")
    return ids


def _select_jobs(ids: list[str]) -> list[str]:
    """--jobs=<ids>, unless the list would pass Linux's 128 KiB limit on one argument: then all our jobs."""
    joined = ",".join(ids)
    if len(joined) > _MAX_JOBS_ARGUMENT:
        return [f"--user={_current_user()}"]
    return [f"--jobs={joined}"]


def _job_name(name: str, key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:48] or "job"
    short_key = re.sub(r"[^A-Za-z0-9]", "", key)[:12] or key[:12]
    return f"{readable}-{short_key}"


def _job_environment(spec: JobSpec) -> dict[str, str]:
    env = {"PATH": _DEFAULT_JOB_PATH, "LANG": "C.UTF-8"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    env.update(spec.environment)
    return env


def _write_script(spec: JobSpec, job_name: str) -> str:
    """Write the batch script next to the job's outputs; sbatch keeps its own copy once it accepts the job."""
    os.makedirs(spec.workdir, exist_ok=True)
    path = os.path.join(spec.workdir, f"{job_name}.sbatch")
    # Write-then-rename: a concurrent submitter of the same key never sees half a script.
    fd, tmp = tempfile.mkstemp(dir=spec.workdir, prefix=f".{job_name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(spec.batch_script)
        os.chmod(tmp, 0o700)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _current_user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _tail(handle: Any, lines: int, block_size: int = 8192) -> bytes:
    """Read backwards from the end until ``lines`` complete lines are in hand: logs can be gigabytes."""
    handle.seek(0, os.SEEK_END)
    position = handle.tell()
    data = b""
    # One more newline than lines wanted, unless the file ends without one.
    while position > 0 and data.count(b"\n") <= lines:
        step = min(block_size, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
    body = data[:-1] if data.endswith(b"\n") else data
    kept = body.split(b"\n")[-lines:]
    return b"\n".join(kept) + (b"\n" if data.endswith(b"\n") else b"")
