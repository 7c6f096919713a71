"""Parsing and client logic on outputs captured from the real Slurm 22.05 cluster (tests/prefect_utils/data).

The captures come from the command lines in data/commands.txt, run by SlurmClient itself against jobs that were
pending, running, completed, failed with exit 3, killed for memory, cancelled and timed out (data/job_ids.txt).
Only sacct_oom_documented.txt is not captured: OUT_OF_MEMORY needs cgroups, which the dev cluster does not use,
so that line follows sacct's documented format (state OUT_OF_MEMORY, ExitCode 0:125).
"""

import json
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from prefect_utils.errors import (
    SchedulerError,
    SchedulerUnavailable,
    SubmissionRejected,
    SubmitLimitReached,
    is_submit_limit,
    is_transient_error,
)
from prefect_utils.job_spec import JobInfo, JobSpec, expand_output_pattern
from prefect_utils.parsing import (
    parse_exit_code,
    parse_sacct,
    parse_sbatch_job_id,
    parse_squeue,
    parse_time,
    parse_wait_status,
)
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState, map_state

DATA = Path(__file__).parent / "data"
IDS = dict(line.split() for line in (DATA / "job_ids.txt").read_text().splitlines())


def read(name: str) -> str:
    return (DATA / name).read_text()


def by_id(jobs: list[JobInfo]) -> dict[str, JobInfo]:
    return {job.job_id: job for job in jobs}


def wall_clock(value: datetime | None) -> datetime | None:
    # Slurm prints local time; compare the wall clock whatever the test machine's time zone.
    return value.replace(tzinfo=None) if value else None


# --- states, exit codes, times ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PENDING", JobState.PENDING),
        ("REQUEUED", JobState.PENDING),
        ("REQUEUE_FED", JobState.PENDING),
        ("REQUEUE_HOLD", JobState.PENDING),
        ("RESV_DEL_HOLD", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("CONFIGURING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("RESIZING", JobState.RUNNING),
        ("SIGNALING", JobState.RUNNING),
        ("STAGE_OUT", JobState.RUNNING),
        ("SUSPENDED", JobState.RUNNING),
        ("STOPPED", JobState.RUNNING),
        ("COMPLETED", JobState.COMPLETED),
        ("FAILED", JobState.FAILED),
        ("BOOT_FAIL", JobState.FAILED),
        ("SPECIAL_EXIT", JobState.FAILED),
        ("TIMEOUT", JobState.TIMEOUT),
        ("DEADLINE", JobState.TIMEOUT),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("NODE_FAIL", JobState.NODE_FAIL),
        ("PREEMPTED", JobState.PREEMPTED),
        ("CANCELLED", JobState.CANCELLED),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("CANCELLED+", JobState.CANCELLED),
        ("REVOKED", JobState.CANCELLED),
        ("completed", JobState.COMPLETED),
        ("", JobState.UNKNOWN),
        ("SOMETHING_NEW", JobState.UNKNOWN),
    ],
)
def test_map_state(raw: str, expected: JobState) -> None:
    assert map_state(raw) is expected


def test_only_finished_states_are_terminal() -> None:
    assert {state for state in JobState if not state.is_terminal} == {
        JobState.NEW,
        JobState.PENDING,
        JobState.RUNNING,
        JobState.UNKNOWN,
    }


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


def test_expand_output_pattern() -> None:
    assert expand_output_pattern("/w/slurm-%j.out", "20", None) == "/w/slurm-20.out"
    assert expand_output_pattern("/w/%x-%A_%a.%%.out", "20_3", "name") == "/w/name-20_3.%.out"
    assert expand_output_pattern("/w/%x-%u.out", "20", None) == "/w/%x-%u.out"


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


@pytest.mark.parametrize(
    "name",
    [
        "squeue_controller_down.stderr.txt",
        "sbatch_controller_down.stderr.txt",
        "scancel_controller_down.stderr.txt",
        "sacct_dbd_down.stderr.txt",
        "squeue_munge_down.stderr.txt",
        "sbatch_munge_down.stderr.txt",
        "scancel_munge_down.stderr.txt",
        "sacct_munge_down.stderr.txt",
    ],
)
def test_outages_are_transient(name: str) -> None:
    assert is_transient_error(read(name))
    assert not is_submit_limit(read(name))


@pytest.mark.parametrize(
    "name",
    [
        "sbatch_invalid_partition.stderr.txt",
        "sbatch_too_much_memory.stderr.txt",
        "sbatch_too_many_cpus.stderr.txt",
        "squeue_invalid_job_id.stderr.txt",
    ],
)
def test_refusals_are_not_transient(name: str) -> None:
    assert not is_transient_error(read(name))
    assert not is_submit_limit(read(name))


# Documented sbatch messages (a submit limit needs AccountingStorageEnforce and QOS set up, not the dev cluster's).
SUBMIT_LIMIT_MESSAGES = [
    "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: "
    "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n",
    "sbatch: error: AssocMaxSubmitJobLimit\nsbatch: error: Batch job submission failed: "
    "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n",
    "sbatch: error: Batch job submission failed: Resource temporarily unavailable\n",
]


@pytest.mark.parametrize("message", SUBMIT_LIMIT_MESSAGES)
def test_submit_limits_are_recognised(message: str) -> None:
    assert is_submit_limit(message)


def test_ping_output() -> None:
    assert "is UP" in read("scontrol_ping_up.txt")
    assert "is UP" not in read("scontrol_ping_down.txt")


# --- JobSpec ---


def make_spec(tmp_path: Path, **overrides: object) -> JobSpec:
    values: dict[str, object] = {
        "name": "analysis PRJEB1/step",
        "script": "echo hello",
        "workdir": str(tmp_path),
        "environment": {"B": "2", "A": "1,2"},
    }
    values.update(overrides)
    return JobSpec(**values)  # type: ignore[arg-type]


def test_canonical_is_json_sorted_and_round_trips(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    canonical = spec.canonical()
    assert list(canonical) == sorted(canonical)
    assert list(canonical["environment"]) == ["A", "B"]
    assert json.loads(json.dumps(canonical)) == canonical
    assert JobSpec.from_canonical(json.loads(json.dumps(canonical))) == spec
    reordered = make_spec(tmp_path, environment={"A": "1,2", "B": "2"})
    assert json.dumps(reordered.canonical()) == json.dumps(canonical)
    assert make_spec(tmp_path, cpus=2).canonical() != canonical


def test_from_canonical_refuses_unknown_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        JobSpec.from_canonical({**make_spec(tmp_path).canonical(), "colour": "blue"})


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": " "},
        {"script": ""},
        {"cpus": 0},
        {"memory_mb": -1},
        {"time_limit_minutes": 1.5},
        {"cpus": True},
        {"workdir": "relative/dir"},
        {"output_path": "out.txt"},
        {"environment": {"1BAD": "x"}},
        {"environment": {"SLURM_JOB_ID": "1"}},
        {"environment": {"A": 1}},
    ],
)
def test_invalid_specs_are_refused(tmp_path: Path, overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_spec(tmp_path, **overrides)


def test_batch_script_gets_an_interpreter_line(tmp_path: Path) -> None:
    assert make_spec(tmp_path).batch_script == "#!/bin/bash\necho hello\n"
    assert make_spec(tmp_path, script="#!/bin/sh\ntrue\n").batch_script == "#!/bin/sh\ntrue\n"


def test_stdout_path(tmp_path: Path) -> None:
    assert make_spec(tmp_path).stdout_path("12") == str(tmp_path / "slurm-12.out")
    assert make_spec(tmp_path, output_path="/logs/%j.log").stdout_path("12") == "/logs/12.log"


# --- tail_log ---


def test_tail_log(tmp_path: Path) -> None:
    client = SlurmClient()
    log = tmp_path / "job.out"
    log.write_text("".join(f"line {i}\n" for i in range(1, 20001)))
    assert client.tail_log(str(log), lines=3) == "line 19998\nline 19999\nline 20000\n"
    assert client.tail_log(log, lines=1) == "line 20000\n"
    log.write_text("a\nb\nc")
    assert client.tail_log(str(log), lines=2) == "b\nc"
    assert client.tail_log(str(log), lines=10) == "a\nb\nc"
    info = JobInfo(job_id="1", state=JobState.FAILED, slurm_state="FAILED", stdout_path=str(log))
    assert client.tail_log(info, lines=1) == "c"
    assert client.tail_log(str(tmp_path / "missing.out")) == ""
    assert client.tail_log(JobInfo.unknown("1")) == ""
    log.write_bytes(b"")
    assert client.tail_log(str(log)) == ""


# --- the client's logic, replaying captured outputs ---


class Replay:
    """A runner answering each Slurm command with captured output, recording the argument lists."""

    def __init__(self, answers: dict[str, list[tuple[int, str, str] | BaseException]]) -> None:
        self.answers = answers
        self.commands: list[list[str]] = []

    def __call__(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.commands.append(args)
        queue = self.answers[args[0]]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        code, stdout, stderr = answer
        return subprocess.CompletedProcess(args, code, stdout, stderr)


def test_job_states_asks_sacct_only_about_jobs_squeue_does_not_report() -> None:
    replay = Replay({"squeue": [(0, read("squeue_live.txt"), "")], "sacct": [(0, "", "")]})
    client = SlurmClient(runner=replay)
    ids = [*IDS.values(), "999999"]
    states = client.job_states(ids)
    assert client.calls == {"squeue": 1, "sacct": 1}
    assert list(states) == ids
    assert states["999999"].state is JobState.UNKNOWN
    assert states[IDS["failed"]].exit_code == 3
    squeue_args, sacct_args = replay.commands
    assert f"--jobs={','.join(IDS.values())},999999" in squeue_args
    assert "--states=all" in squeue_args
    assert "--jobs=999999" in sacct_args
    assert any(arg.startswith("--starttime=") for arg in sacct_args)


def test_job_states_without_sacct_when_squeue_reports_everything() -> None:
    client = SlurmClient(runner=Replay({"squeue": [(0, read("squeue_ended.txt"), "")]}))
    states = client.job_states(IDS.values())
    assert client.calls == {"squeue": 1}
    assert states[IDS["timeout"]].state is JobState.TIMEOUT


def test_job_states_when_squeue_knows_none_of_the_ids() -> None:
    replay = Replay(
        {
            "squeue": [(1, "", read("squeue_invalid_job_id.stderr.txt"))],
            "sacct": [(0, read("sacct_live.txt"), "")],
        }
    )
    client = SlurmClient(runner=replay)
    states = client.job_states(IDS.values())
    assert client.calls == {"squeue": 1, "sacct": 1}
    assert states[IDS["completed"]].state is JobState.COMPLETED
    assert states[IDS["failed"]].exit_code == 3
    # Accounting's word that a job is still live, about a job the controller does not hold, proves nothing.
    assert states[IDS["running"]].state is JobState.UNKNOWN
    assert states[IDS["running"]].slurm_state == "PENDING"
    assert states[IDS["pending"]].state is JobState.UNKNOWN


def test_job_states_of_very_many_ids_still_runs_one_squeue() -> None:
    replay = Replay({"squeue": [(0, read("squeue_ended.txt"), "")], "sacct": [(0, "", "")]})
    client = SlurmClient(runner=replay)
    many = [str(n) for n in range(1_000_000, 1_030_000)]
    states = client.job_states([*IDS.values(), *many])
    assert client.calls == {"squeue": 1, "sacct": 1}
    # A --jobs list that long would pass the kernel's limit on one argument: both ask for all our jobs.
    assert all(not arg.startswith("--jobs=") for command in replay.commands for arg in command)
    assert states[IDS["failed"]].exit_code == 3
    assert states["1000000"].state is JobState.UNKNOWN


def test_job_states_of_nothing_runs_nothing() -> None:
    client = SlurmClient(runner=Replay({}))
    assert client.job_states([]) == {}
    assert client.calls == {}


def test_job_states_refuses_what_is_not_a_job_id() -> None:
    with pytest.raises(ValueError):
        SlurmClient(runner=Replay({})).job_states(["12; rm -rf /"])


def test_outage_is_retried_then_reported() -> None:
    replay = Replay({"squeue": [(1, "", read("squeue_controller_down.stderr.txt"))]})
    client = SlurmClient(retries=2, backoff_seconds=0, runner=replay)
    with pytest.raises(SchedulerUnavailable, match="Unable to contact slurm controller"):
        client.job_states(["1"])
    assert client.calls == {"squeue": 3}


def test_timeouts_are_retried_then_reported() -> None:
    replay = Replay({"squeue": [subprocess.TimeoutExpired(["squeue"], 1.0)]})
    client = SlurmClient(retries=1, backoff_seconds=0, command_timeout=1.0, runner=replay)
    with pytest.raises(SchedulerUnavailable, match="did not answer"):
        client.job_states(["1"])
    assert client.calls == {"squeue": 2}


def test_transient_failure_then_success() -> None:
    replay = Replay(
        {
            "squeue": [(1, "", read("squeue_controller_down.stderr.txt")), (0, read("squeue_ended.txt"), "")],
        }
    )
    client = SlurmClient(retries=3, backoff_seconds=0, runner=replay)
    assert client.job_states([IDS["completed"]])[IDS["completed"]].state is JobState.COMPLETED
    assert client.calls == {"squeue": 2}


def test_submit_rejected(tmp_path: Path) -> None:
    replay = Replay({"sbatch": [(1, "", read("sbatch_invalid_partition.stderr.txt"))]})
    client = SlurmClient(runner=replay)
    with pytest.raises(SubmissionRejected, match="Invalid partition name"):
        client.submit(make_spec(tmp_path, partition="nosuchpartition"), "key-1")
    assert client.calls == {"sbatch": 1}


@pytest.mark.parametrize("message", SUBMIT_LIMIT_MESSAGES)
def test_submit_limit(tmp_path: Path, message: str) -> None:
    client = SlurmClient(runner=Replay({"sbatch": [(1, "", message)]}))
    with pytest.raises(SubmitLimitReached):
        client.submit(make_spec(tmp_path), "key-1")
    assert client.calls == {"sbatch": 1}


def test_submit_after_a_lost_answer_adopts_the_job_instead_of_submitting_again(tmp_path: Path) -> None:
    replay = Replay(
        {
            "sbatch": [subprocess.TimeoutExpired(["sbatch"], 1.0)],
            "squeue": [(0, read("squeue_live.txt"), "")],
        }
    )
    client = SlurmClient(backoff_seconds=0, runner=replay)
    assert client.submit(make_spec(tmp_path), "capture-running-0001") == IDS["running"]
    assert client.calls == {"sbatch": 1, "squeue": 1}


@pytest.mark.parametrize("refusal", ["sbatch_controller_down.stderr.txt", "sbatch_munge_down.stderr.txt"])
def test_submit_retries_when_the_controller_was_never_reached(refusal: str, tmp_path: Path) -> None:
    replay = Replay({"sbatch": [(1, "", read(refusal)), (0, "123;emgapi\n", "")]})
    client = SlurmClient(backoff_seconds=0, runner=replay)
    assert client.submit(make_spec(tmp_path), "key-1") == "123"
    # "connect failure", or a request munge could not sign: the job cannot exist, so no lookup before the retry.
    assert client.calls == {"sbatch": 2}


def test_submit_arguments(tmp_path: Path) -> None:
    replay = Replay({"sbatch": [(0, "77\n", "")]})
    spec = make_spec(tmp_path, partition="long", cpus=4, memory_mb=2048, time_limit_minutes=90)
    assert SlurmClient(runner=replay).submit(spec, "0123456789abcdef") == "77"
    (args,) = replay.commands
    assert args[0] == "sbatch"
    for expected in (
        "--parsable",
        "--no-requeue",
        "--comment=0123456789abcdef",
        "--job-name=analysis-PRJEB1-step-0123456789ab",
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/slurm-%j.out",
        "--cpus-per-task=4",
        "--mem=2048M",
        "--time=90",
        "--partition=long",
        "--export=ALL",
    ):
        assert expected in args
    script = Path(args[-1])
    assert script.parent == tmp_path
    assert script.read_text() == "#!/bin/bash\necho hello\n"


def test_submit_refuses_a_key_that_is_not_a_tag(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SlurmClient(runner=Replay({})).submit(make_spec(tmp_path), "two words")


def test_ping_replay() -> None:
    up = SlurmClient(runner=Replay({"scontrol": [(0, read("scontrol_ping_up.txt"), "")]}))
    down = SlurmClient(runner=Replay({"scontrol": [(1, read("scontrol_ping_down.txt"), "")]}))
    missing = SlurmClient(runner=Replay({"scontrol": [FileNotFoundError("scontrol")]}))
    assert up.ping() and not down.ping() and not missing.ping()
