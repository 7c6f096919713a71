"""The Slurm client: submit, query and cancel jobs through Slurm's command-line tools.

Everything Slurm prints is parsed by ``prefect_utils.parsing``. Commands always run as argument lists, never
through a shell.

Standard library only: the poller, the submission protocol and the web health check all build on this module.
"""

from __future__ import annotations

import collections
import os
import pwd
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from prefect_utils.errors import (
    SchedulerError,
    SchedulerUnavailable,
    SubmissionRejected,
    SubmitLimitReached,
    is_submit_limit,
    is_transient_error,
    never_connected,
)
from prefect_utils.job_spec import JobInfo, JobSpec
from prefect_utils.parsing import (
    FIELD_SEP,
    JOB_ID,
    SACCT_FORMAT,
    SQUEUE_FORMAT,
    parse_sacct,
    parse_sbatch_job_id,
    parse_squeue,
)

__all__ = ["Runner", "SlurmClient"]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
_MAX_JOBS_ARGUMENT = 100_000
# The job's whole environment is the spec's plus these defaults: nothing leaks from the orchestrator (secrets,
# virtualenvs), so a job behaves the same whichever process submitted it.
_DEFAULT_JOB_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Lookups for the job of an sbatch that timed out stop at this many even with no backoff (replayed tests).
_MAX_LATE_LOOKUPS = 10

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
            raise _Transient(f"{command}: {message}", maybe_delivered=not never_connected(message))
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

    def _our_queue(self) -> list[JobInfo]:
        """Every job of ours the controller holds, live or recently ended: one squeue."""
        proc = self._run(
            "squeue",
            [f"--user={_current_user()}", "--states=all", "--noheader", f"--Format={SQUEUE_FORMAT}"],
        )
        if proc.returncode != 0:
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

        After a failure that may have reached the controller (a timeout), the retry first looks the key up, for as
        long again as sbatch was given (``_await_late_job``), and adopts the job it finds instead of submitting
        blindly again. Raises SubmitLimitReached (back-pressure),
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
        started = datetime.now().astimezone()
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt - 1)
            if check_first:
                try:
                    existing = self._await_late_job(key, since=started)
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

    def _await_late_job(self, key: str, *, since: datetime) -> JobInfo | None:
        """The job of an sbatch that may have reached the controller although it timed out, or None.

        A slow controller may register that job after a first look, so the lookups go on with doubling pauses
        for as long again as sbatch was given (``command_timeout``). The job cannot predate this submit call
        (``since``), which bounds accounting's part of each lookup.
        """
        waited = 0.0
        for lookup in range(_MAX_LATE_LOOKUPS):
            if lookup:
                pause = self.backoff_seconds * 2 ** (lookup - 1)
                time.sleep(pause)
                waited += pause
            found = self.find_by_key(key, since=since - timedelta(minutes=1))
            if found is not None or waited >= self.command_timeout:
                return found
        return None

    def job_states(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """The state of every job in ``job_ids``: one squeue call, then at most one sacct call.

        squeue is the truth for jobs the controller still holds; sacct is asked only about the others. A job
        neither knows, or that accounting still calls live after the controller forgot it, is UNKNOWN.

        squeue lists all our jobs, not just these: a job is reported with the other live jobs carrying its
        comment (``JobInfo.duplicates``), which only a listing beyond the asked ids can show.
        """
        ids = _job_ids(job_ids)
        if not ids:
            return {}
        wanted = set(ids)
        queue = self._our_queue()
        live_by_comment: dict[str, list[str]] = collections.defaultdict(list)
        for job in queue:
            if job.comment and not job.state.is_terminal:
                live_by_comment[job.comment].append(job.job_id)
        found = {}
        for job in queue:
            if job.job_id in wanted:
                others = [
                    other for other in live_by_comment.get(job.comment or "", ()) if other != job.job_id
                ]
                found[job.job_id] = replace(job, duplicates=tuple(others))
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
                    queued = found.get(job_id)
                    found[job_id] = replace(record, duplicates=queued.duplicates) if queued else record
                elif job_id not in found:
                    found[job_id] = JobInfo.unknown(
                        job_id, record.slurm_state, "not in squeue; accounting has not recorded its end"
                    )
        return {job_id: found.get(job_id) or JobInfo.unknown(job_id) for job_id in ids}

    def find_by_key(self, key: str, *, since: datetime | None = None) -> JobInfo | None:
        """The first job submitted with ``key``: squeue sees live (and recently ended) jobs, sacct the rest."""
        return self.find_by_keys([key], since=since).get(key)

    def find_by_keys(self, keys: Iterable[str], *, since: datetime | None = None) -> dict[str, JobInfo]:
        """The first job carrying each key, for the keys that have one: one squeue, at most one sacct.

        A key carried by several jobs (the late job of an sbatch that timed out) keeps the first, which the
        ledger then records; the poller scancels the others (``JobInfo.duplicates``). ``since`` bounds the
        accounting search (the ledger knows when it created the rows); without it, the client's lookback
        (30 days by default) is scanned.
        """
        wanted = set(keys)
        if not wanted:
            return {}
        by_key: dict[str, list[JobInfo]] = collections.defaultdict(list)
        for job in self._our_queue():
            if job.comment in wanted:
                by_key[job.comment].append(job)
        missing = wanted - set(by_key)
        if missing:
            # The comment reaches accounting only when the job ends, and live jobs were all in squeue above.
            for job in self._sacct([f"--user={_current_user()}"], since=since):
                if job.comment in missing:
                    by_key[job.comment].append(job)
        return {key: first for key, jobs in by_key.items() if (first := _first(jobs)) is not None}

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
    bad = [job_id for job_id in ids if not JOB_ID.fullmatch(job_id)]
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


def _submission_order(job: JobInfo) -> tuple[float, int]:
    submitted = job.submitted.timestamp() if job.submitted else 0.0
    return submitted, int(job.job_id.split("_", 1)[0])


def _newest(jobs: Iterable[JobInfo]) -> JobInfo | None:
    return max(jobs, key=_submission_order, default=None)


def _first(jobs: Iterable[JobInfo]) -> JobInfo | None:
    return min(jobs, key=_submission_order, default=None)
