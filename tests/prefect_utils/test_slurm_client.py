"""SlurmClient's logic without a cluster: its runner replays outputs captured from the real one.

The client against the real cluster: test_slurm_client_live.py.
"""

import subprocess
from pathlib import Path

import pytest

from prefect_utils.errors import SchedulerUnavailable, SubmissionRejected, SubmitLimitReached
from prefect_utils.job_spec import JobInfo
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState
from tests.prefect_utils.captures import IDS, SUBMIT_LIMIT_MESSAGES, Replay, make_spec, read

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
    # squeue lists all our jobs (a second job carrying one's key shows only so); sacct only those squeue did not.
    assert any(arg.startswith("--user=") for arg in squeue_args)
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
            "squeue": [(0, "", "")],
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


def test_after_a_lost_answer_the_client_looks_again_until_the_timeout_window_passed(tmp_path: Path) -> None:
    replay = Replay(
        {
            "sbatch": [subprocess.TimeoutExpired(["sbatch"], 0.1), (0, "124\n", "")],
            "squeue": [(0, "", "")],
            "sacct": [(0, "", "")],
        }
    )
    # The controller was given 0.1 s; looks at pauses of 0.01, 0.02, 0.04, 0.08 s cover that much again.
    client = SlurmClient(backoff_seconds=0.01, command_timeout=0.1, runner=replay)
    assert client.submit(make_spec(tmp_path), "key-1") == "124"
    assert client.calls["sbatch"] == 2
    assert client.calls["squeue"] == client.calls["sacct"] == 5


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


def test_ping_output() -> None:
    assert "is UP" in read("scontrol_ping_up.txt")
    assert "is UP" not in read("scontrol_ping_down.txt")


def test_ping_replay() -> None:
    up = SlurmClient(runner=Replay({"scontrol": [(0, read("scontrol_ping_up.txt"), "")]}))
    down = SlurmClient(runner=Replay({"scontrol": [(1, read("scontrol_ping_down.txt"), "")]}))
    missing = SlurmClient(runner=Replay({"scontrol": [FileNotFoundError("scontrol")]}))
    assert up.ping() and not down.ping() and not missing.ping()
