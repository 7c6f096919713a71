"""SlurmClient against the real single-node cluster (scripts/slurm.sh), which the session fixture brings up.

The cluster is shared with whatever else runs on the machine: every wait polls with a generous deadline.
"""

import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from prefect_utils.errors import SchedulerUnavailable, SubmissionRejected
from prefect_utils.job_spec import JobInfo, JobSpec
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState
from tests.prefect_utils.conftest import wait_for_job
from tests.slurm_support import job_ids_with_comment
from tests.slurm_support import slurm as slurm_sh

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def new_key(label: str) -> str:
    return f"test-{label}-{uuid.uuid4().hex}"


def spec(workdir: Path, script: str, **overrides: object) -> JobSpec:
    # A short limit lets backfill start the job on a free core even while wider jobs of others wait.
    values: dict[str, object] = {"time_limit_minutes": 5, **overrides}
    return JobSpec(name="scheduler live test", script=script, workdir=str(workdir), **values)  # type: ignore[arg-type]


def is_running(info: JobInfo) -> bool:
    return info.state is JobState.RUNNING


class HideFromSqueue:
    """Runs the real commands but blanks squeue's output, as if the controller had purged the jobs already
    (MinJobAge): the answer must then come from accounting."""

    def __call__(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, **kwargs)  # type: ignore[call-overload]
        if args[0] == "squeue":
            return subprocess.CompletedProcess(args, 0, "", "")
        return proc


def wait_in_accounting(job_id: str, timeout: float = 30.0) -> JobInfo:
    """Accounting records a job's end about a second after squeue shows it."""
    return wait_for_job(SlurmClient(runner=HideFromSqueue()), job_id, timeout=timeout)


def test_submit_and_complete(client: SlurmClient, tmp_path: Path) -> None:
    job_id = client.submit(spec(tmp_path, "echo hello from $SLURM_JOB_ID"), new_key("complete"))
    info = wait_for_job(client, job_id)
    assert (info.state, info.exit_code, info.signal) == (JobState.COMPLETED, 0, 0)
    assert info.node and info.start and info.end and info.start <= info.end
    assert info.stdout_path == str(tmp_path / f"slurm-{job_id}.out")
    assert client.tail_log(info) == f"hello from {job_id}\n"


def test_exit_3_is_failed_with_exit_code_and_log_tail(client: SlurmClient, tmp_path: Path) -> None:
    script = 'for i in $(seq 1 50); do echo "line $i"; done\necho "about to fail" >&2\nexit 3\n'
    job_id = client.submit(spec(tmp_path, script), new_key("exit3"))
    info = wait_for_job(client, job_id)
    assert (info.state, info.exit_code, info.signal) == (JobState.FAILED, 3, 0)
    # Without error_path, stderr goes to the same file: the tail shows why the job failed.
    assert client.tail_log(info, lines=3) == "line 49\nline 50\nabout to fail\n"
    accounted = wait_in_accounting(job_id)
    assert (accounted.state, accounted.exit_code, accounted.signal) == (JobState.FAILED, 3, 0)


def test_environment_reaches_the_script_verbatim_and_nothing_else_leaks(
    client: SlurmClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMGAPI_ORCHESTRATOR_SECRET", "must-not-reach-jobs")
    awkward = "a,b=c; $(touch /tmp/pwned) `id` 'quoted' \"double\"\nsecond line"
    script = 'printf "%s" "$AWKWARD" > awkward.txt\nenv > env.txt\n'
    job_id = client.submit(spec(tmp_path, script, environment={"AWKWARD": awkward}), new_key("env"))
    assert wait_for_job(client, job_id).state is JobState.COMPLETED
    assert (tmp_path / "awkward.txt").read_text() == awkward
    environment = (tmp_path / "env.txt").read_text()
    assert "EMGAPI_ORCHESTRATOR_SECRET" not in environment
    assert f"SLURM_JOB_ID={job_id}" in environment


def test_cancel_gives_cancelled(client: SlurmClient, tmp_path: Path) -> None:
    job_id = client.submit(spec(tmp_path, "sleep 600"), new_key("cancel"))
    try:
        wait_for_job(client, job_id, is_running)
    finally:
        client.cancel([job_id])
    assert wait_for_job(client, job_id).state is JobState.CANCELLED
    assert wait_in_accounting(job_id).state is JobState.CANCELLED


def test_find_by_key_finds_a_live_and_a_finished_job(client: SlurmClient, tmp_path: Path) -> None:
    live_key, done_key = new_key("live"), new_key("done")
    live_id = client.submit(spec(tmp_path / "live", "sleep 600"), live_key)
    try:
        found = client.find_by_key(live_key)
        assert found is not None and found.job_id == live_id and not found.state.is_terminal
        assert found.comment == live_key
    finally:
        client.cancel([live_id])

    done_id = client.submit(spec(tmp_path / "done", "true"), done_key)
    wait_for_job(client, done_id)
    found = client.find_by_key(done_key)
    assert found is not None and (found.job_id, found.state) == (done_id, JobState.COMPLETED)
    # Once the controller has forgotten the job, accounting still knows it by its comment. A time-window
    # query of sacct (no --jobs) sees a job a few seconds later than `sacct --jobs` does: poll.
    accounting_only = SlurmClient(runner=HideFromSqueue())
    deadline = time.monotonic() + 60
    while (from_accounting := accounting_only.find_by_key(done_key)) is None:
        assert time.monotonic() < deadline, "accounting never reported the finished job's key"
        time.sleep(0.5)
    assert (from_accounting.job_id, from_accounting.state) == (done_id, JobState.COMPLETED)
    assert client.find_by_key(new_key("never-submitted")) is None


def test_job_states_uses_one_squeue_and_at_most_one_sacct(client: SlurmClient, tmp_path: Path) -> None:
    ids = [client.submit(spec(tmp_path / str(n), f"exit {n}"), new_key(f"batch{n}")) for n in range(6)]
    for job_id in ids:
        wait_for_job(client, job_id)
    unknown = "987654321"
    counting = SlurmClient()
    states = counting.job_states([*ids, unknown])
    assert counting.calls == {"squeue": 1, "sacct": 1}
    assert [states[job_id].exit_code for job_id in ids] == list(range(6))
    assert states[ids[0]].state is JobState.COMPLETED
    assert {states[job_id].state for job_id in ids[1:]} == {JobState.FAILED}
    assert states[unknown].state is JobState.UNKNOWN

    only_known = SlurmClient()
    only_known.job_states(ids)
    assert only_known.calls == {"squeue": 1}


def test_unknown_job_id_is_unknown(client: SlurmClient) -> None:
    info = client.job_states(["999999999"])["999999999"]
    assert info.state is JobState.UNKNOWN
    assert not info.state.is_terminal


def test_submit_rejected(client: SlurmClient, tmp_path: Path) -> None:
    with pytest.raises(SubmissionRejected, match="node configuration is not available"):
        client.submit(spec(tmp_path, "true", memory_mb=100_000_000), new_key("rejected"))


def test_lost_sbatch_answer_is_adopted_not_resubmitted(tmp_path: Path) -> None:
    """sbatch submits, then its answer is lost (as in a timeout): the retry must find the job by key."""
    lost_once: list[bool] = []

    def lose_first_sbatch_answer(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(args, **kwargs)  # type: ignore[call-overload]
        if args[0] == "sbatch" and not lost_once:
            lost_once.append(True)
            raise subprocess.TimeoutExpired(args, 0.0)
        return proc

    client = SlurmClient(backoff_seconds=0.05, runner=lose_first_sbatch_answer)
    key = new_key("lost")
    job_id = client.submit(spec(tmp_path, "true"), key)
    assert client.calls["sbatch"] == 1
    listed = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i %k"], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert [line.split()[0] for line in listed if line.endswith(f" {key}")] == [job_id]


class SlowController:
    """Runs the real commands, but the first sbatch "times out" at once and its job is registered only after the
    client's first lookup ended: a slow controller catching up. A later lookup comes after the registration."""

    def __init__(self) -> None:
        self.looked = threading.Event()
        self.late: threading.Thread | None = None
        self.late_job: list[str] = []

    def __call__(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if args[0] == "sbatch" and self.late is None:

            def register() -> None:
                assert self.looked.wait(timeout=120)
                proc = subprocess.run(args, **kwargs)  # type: ignore[call-overload]
                self.late_job.append(proc.stdout.strip())

            self.late = threading.Thread(target=register)
            self.late.start()
            raise subprocess.TimeoutExpired(args, 0.0)
        if args[0] == "squeue" and self.looked.is_set() and self.late is not None:
            self.late.join(timeout=120)
        proc = subprocess.run(args, **kwargs)  # type: ignore[call-overload]
        if args[0] == "sacct":  # a lookup ends with accounting, for a key squeue did not show
            self.looked.set()
        return proc


def test_a_job_registered_after_the_first_lookup_is_adopted_not_submitted_again(tmp_path: Path) -> None:
    controller = SlowController()
    client = SlurmClient(backoff_seconds=0.05, runner=controller)
    key = new_key("late")
    job_id = client.submit(spec(tmp_path, "true"), key)
    assert controller.late is not None
    controller.late.join(timeout=120)
    assert job_ids_with_comment(key) == {job_id} == set(controller.late_job)
    assert client.calls["sbatch"] == 1


def test_find_by_key_keeps_the_first_of_two_jobs_with_one_key(client: SlurmClient, tmp_path: Path) -> None:
    key = new_key("twice")
    first = client.submit(spec(tmp_path / "1", "true"), key)
    second = client.submit(spec(tmp_path / "2", "true"), key)
    found = client.find_by_key(key)
    assert found is not None and found.job_id == first != second


@pytest.mark.disruptive
def test_scheduler_unavailable_while_controller_is_stopped(tmp_path: Path) -> None:
    impatient = SlurmClient(retries=1, backoff_seconds=0.1, command_timeout=2)
    slurm_sh("stop-ctld")
    try:
        assert not impatient.ping()
        with pytest.raises(SchedulerUnavailable):
            impatient.job_states(["1"])
        assert impatient.calls["squeue"] == 2
        with pytest.raises(SchedulerUnavailable):
            impatient.submit(spec(tmp_path, "true"), new_key("down"))
    finally:
        slurm_sh("start-ctld")
    deadline = time.monotonic() + 30
    while not SlurmClient().ping():
        assert time.monotonic() < deadline, "slurmctld did not come back"
        time.sleep(0.1)
    assert SlurmClient().job_states(["999999999"])["999999999"].state is JobState.UNKNOWN
