"""The submission protocol and the shared poller, against the real single-node Slurm and PostgreSQL."""

import json
import signal
import threading
import time
import uuid
from dataclasses import replace

import pytest
from django.db import connection

from prefect_utils.jobs import (
    POLLER_LEASE,
    JobFailed,
    PollConfig,
    Resubmit,
    ResubmitPolicy,
    SlurmJobs,
    job_key,
)
from prefect_utils.ledger import LedgerRecord
from prefect_utils.scheduler import JobSpec, SlurmClient
from tests.slurm_support import job_ids_with_comment, poll_until, slurm
from workflows.ledger import DjangoJobLedger
from workflows.models import ClusterJob, PollerLease

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]


def spec_in(tmp_path, script: str, **overrides) -> JobSpec:
    return JobSpec(name=overrides.pop("name", "test-job"), script=script, workdir=str(tmp_path), **overrides)


def wait(service: SlurmJobs, record: LedgerRecord, timeout: float = 60) -> LedgerRecord:
    (done,) = service.wait_for_jobs([record], deadline=time.monotonic() + timeout)
    return done


def test_submit_run_complete_and_reattach(service, tmp_path):
    spec = spec_in(tmp_path, "echo hello from $GREETING\n", environment={"GREETING": "slurm"})
    first = service.submit_once(spec)
    assert first.job_id and first.state == "PENDING"

    again = service.submit_once(spec)
    fresh_process = SlurmJobs(DjangoJobLedger(), SlurmClient()).submit_once(spec)
    assert again.job_id == fresh_process.job_id == first.job_id
    assert service.client.calls["sbatch"] == 1

    done = wait(service, first)
    assert done.state == "COMPLETED" and done.exit_code == 0
    assert "hello from slurm" in (tmp_path / f"slurm-{first.job_id}.out").read_text()
    assert job_ids_with_comment(first.submission_key) == {first.job_id}
    assert ClusterJob.objects.get(slurm_job_id=first.job_id).state_checked_at is not None


def test_key_depends_on_spec_inputs_and_not_on_dict_order(tmp_path):
    spec = spec_in(tmp_path, "true", environment={"A": "1", "B": "2"})
    same = spec_in(tmp_path, "true", environment={"B": "2", "A": "1"})
    assert job_key(spec, {"x": "1", "y": "2"}) == job_key(same, {"y": "2", "x": "1"})
    assert job_key(spec, {"x": "1"}) != job_key(spec, {"x": "2"})
    assert job_key(spec, {}) != job_key(replace(spec, memory_mb=1024), {})


@pytest.mark.parametrize("point", ["after_sbatch", "before_commit", "after_commit"])
def test_process_killed_around_sbatch_is_repaired_by_rerun(service, run_child, tmp_path, point):
    spec = spec_in(tmp_path, "sleep 1")
    child = run_child(json.dumps(spec.canonical()), env={"PREFECT_UTILS_FAULT_POINT": point})
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL

    key = job_key(spec, {})
    orphan = ClusterJob.objects.get(key=key, attempt=1)
    submitted = job_ids_with_comment(f"{key}-1")
    assert len(submitted) == 1
    assert (orphan.slurm_job_id is None) == (point != "after_commit")

    rerun = service.submit_once(spec)
    assert rerun.job_id in submitted
    assert service.client.calls["sbatch"] == 0
    assert wait(service, rerun).state == "COMPLETED"
    assert job_ids_with_comment(f"{key}-1") == submitted


def test_twenty_concurrent_processes_submit_one_job(run_child, tmp_path):
    spec = spec_in(tmp_path, "sleep 1", name="concurrent")
    start = tmp_path / "go"
    children = [run_child(json.dumps(spec.canonical()), str(start)) for _ in range(20)]
    start.touch()
    outputs = [child.communicate(timeout=120) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    job_ids = {out.strip() for out, _ in outputs}
    assert len(job_ids) == 1
    assert job_ids_with_comment(f"{job_key(spec, {})}-1") == job_ids
    assert ClusterJob.objects.filter(key=job_key(spec, {})).count() == 1


def test_failure_carries_state_exit_code_and_log_tail(service, tmp_path):
    script = "for i in $(seq 1 30); do echo line $i; done\necho 'fatal: reads are corrupt' >&2\nexit 3\n"
    with pytest.raises(JobFailed) as excinfo:
        service.run(spec_in(tmp_path, script, name="fails"))
    record = excinfo.value.record
    assert record.state == "FAILED" and record.exit_code == 3
    message = str(excinfo.value)
    assert "FAILED" in message and "exit code 3" in message
    assert "fatal: reads are corrupt" in message and "line 30" in message
    assert "line 1\n" not in message


def test_timeout_is_resubmitted_with_an_escalated_time_limit(service, tmp_path):
    # The first attempt leaves a marker and overruns its one-minute limit: a real TIMEOUT from Slurm.
    marker = tmp_path / "first-attempt-ran"
    script = '[ -e "$MARKER" ] && { echo second attempt; exit 0; }\ntouch "$MARKER"\nsleep 600\n'
    spec = spec_in(
        tmp_path, script, name="escalates", time_limit_minutes=1, environment={"MARKER": str(marker)}
    )
    policy = ResubmitPolicy(mode=Resubmit.IF_FAILED, max_attempts=2, factor=3.0)
    final = service.run(spec, policy=policy)

    assert final.attempt == 2 and final.state == "COMPLETED"
    assert final.spec["time_limit_minutes"] == 3
    first = ClusterJob.objects.get(key=final.key, attempt=1)
    second = ClusterJob.objects.get(key=final.key, attempt=2)
    assert first.state == "TIMEOUT"
    assert second.previous_attempt == first and second.slurm_job_id != first.slurm_job_id
    # A rerun of the whole thing reattaches to the finished second attempt: nothing new is submitted.
    sbatch_before = service.client.calls["sbatch"]
    assert service.run(spec, policy=policy).job_id == second.slurm_job_id
    assert service.client.calls["sbatch"] == sbatch_before


def test_cancel_the_jobs_of_a_flow_run(service, tmp_path):
    flow_run_id = str(uuid.uuid4())
    record = service.submit_once(spec_in(tmp_path, "sleep 600"), labels={"flow_run_id": flow_run_id})
    poll_until(
        lambda: service.poll_once() >= 0 and service.ledger.get(record.key, 1).state == "RUNNING",
        what="the job to run",
    )

    assert service.cancel(flow_run_id=flow_run_id, reason="cancelled by test") == [record.job_id]
    poll_until(
        lambda: service.poll_once() >= 0 and service.ledger.get(record.key, 1).state == "CANCELLED",
        what="Slurm to report CANCELLED",
    )
    row = ClusterJob.objects.get(slurm_job_id=record.job_id)
    assert row.cancellation == "cancelled by test" and row.state == "CANCELLED"
    assert service.cancel(flow_run_id=flow_run_id) == []


def test_many_waiters_share_one_squeue_per_interval(slurm_cluster, tmp_path):
    client = SlurmClient()
    poll = PollConfig(min_interval=0.3, max_interval=0.3)
    submitter = SlurmJobs(DjangoJobLedger(), client, poll=poll)
    records = [submitter.submit_once(spec_in(tmp_path, f"sleep 4 # {i}")) for i in range(3)]
    iterations: list[int] = []

    def waiter() -> None:
        count = 0

        def on_poll(_records) -> None:
            nonlocal count
            count += 1

        try:
            SlurmJobs(DjangoJobLedger(), client, poll=poll).wait_for_jobs(records, on_poll=on_poll)
        finally:
            iterations.append(count)
            connection.close()

    threads = [threading.Thread(target=waiter) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(iterations) == 10 and all(n >= 1 for n in iterations)
    polls = PollerLease.objects.get(name=POLLER_LEASE).polls
    # Each poll round (by whichever waiter held the lease) asked Slurm at most once with squeue and sacct ...
    assert client.calls["squeue"] <= polls
    assert client.calls["sacct"] <= polls
    # ... and the rounds are those of about one waiter (plus a hand-over round as each waiter leaves),
    # while ten waiters read the ledger on every round of their own.
    assert client.calls["squeue"] <= max(iterations) + len(threads)
    assert sum(iterations) >= 5 * client.calls["squeue"]
    assert all(
        r.state == "COMPLETED" for r in submitter.ledger.records([(r.key, r.attempt) for r in records])
    )


def test_controller_down_makes_states_stale_never_failed(tmp_path, slurm_cluster):
    client = SlurmClient(retries=1, backoff_seconds=0.1, command_timeout=5)
    service = SlurmJobs(DjangoJobLedger(), client, poll=PollConfig(min_interval=0.3, max_interval=0.5))
    record = service.submit_once(spec_in(tmp_path, "sleep 8"))
    poll_until(
        lambda: service.poll_once() >= 0 and service.ledger.get(record.key, 1).state == "RUNNING",
        what="the job to run",
    )

    result: list[LedgerRecord] = []
    waiter = threading.Thread(
        target=lambda: (result.extend(service.wait_for_jobs([record])), connection.close())
    )
    slurm("stop-ctld")
    try:
        waiter.start()
        poll_until(
            lambda: ClusterJob.objects.get(slurm_job_id=record.job_id).state_stale,
            timeout=60,
            what="the state to go stale",
        )
        row = ClusterJob.objects.get(slurm_job_id=record.job_id)
        assert row.state == "RUNNING"
        assert (
            "unavailable" in PollerLease.objects.get(name=POLLER_LEASE).last_error.lower()
            or PollerLease.objects.get(name=POLLER_LEASE).last_error
        )
    finally:
        slurm("start-ctld")
    waiter.join(timeout=120)
    assert result and result[0].state == "COMPLETED" and not result[0].stale


def test_job_missing_from_squeue_and_sacct_is_unknown_not_completed(service, tmp_path):
    spec = spec_in(tmp_path, "true")
    record, _ = service.ledger.get_or_create("f" * 40, 1, spec=spec.canonical(), inputs={}, labels={})
    with service.ledger.locked(record.key, 1) as locked:
        locked.set_job_id("987654321")  # a job id this cluster never issued
    service.poll_once()
    row = ClusterJob.objects.get(key="f" * 40)
    assert row.state == "UNKNOWN"
    assert not row.is_terminal


def test_throttle_waits_for_capacity_instead_of_failing(tmp_path, slurm_cluster):
    from prefect_utils.jobs import ThrottleConfig

    naps: list[float] = []
    ledger = DjangoJobLedger()
    service = SlurmJobs(
        ledger, SlurmClient(), throttle=ThrottleConfig(max_active_jobs=1, wait_step_seconds=0.2)
    )
    blocker = service.submit_once(spec_in(tmp_path, "sleep 2", name="blocker"))

    def nap(seconds: float) -> None:
        naps.append(seconds)
        service.poll_once()
        time.sleep(seconds)

    service.sleep = nap
    second = service.submit_once(spec_in(tmp_path, "true", name="second"))
    assert naps, "the second submission should have waited for the first job to finish"
    assert service.ledger.get(blocker.key, 1).is_terminal
    assert second.job_id


def test_policy_escalation_rules():
    spec = JobSpec(name="x", script="true", workdir="/tmp", memory_mb=1000, time_limit_minutes=10)
    policy = ResubmitPolicy(
        mode=Resubmit.IF_FAILED, max_attempts=3, factor=2.0, max_memory_mb=3000, max_time_limit_minutes=15
    )

    def outcome(state: str, attempt: int = 1) -> LedgerRecord:
        return LedgerRecord(key="k", attempt=attempt, spec=spec.canonical(), state=state)

    assert policy.next_spec(spec, outcome("OUT_OF_MEMORY")).memory_mb == 2000
    assert policy.next_spec(replace(spec, memory_mb=2000), outcome("OUT_OF_MEMORY")).memory_mb == 3000
    assert policy.next_spec(replace(spec, memory_mb=3000), outcome("OUT_OF_MEMORY")) is None
    assert policy.next_spec(spec, outcome("TIMEOUT")).time_limit_minutes == 15
    assert policy.next_spec(spec, outcome("FAILED")) == spec
    assert policy.next_spec(spec, outcome("FAILED", attempt=3)) is None
    assert policy.next_spec(spec, outcome("COMPLETED")) is None
    assert policy.next_spec(spec, outcome("CANCELLED")) is None
    assert ResubmitPolicy().next_spec(spec, outcome("FAILED")) is None
    assert ResubmitPolicy(mode=Resubmit.ALWAYS).next_spec(spec, outcome("COMPLETED")) == spec
