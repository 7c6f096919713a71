"""The submission protocol and the shared poller, against the real single-node Slurm and PostgreSQL."""

import json
import os
import signal
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from django.db import connection

from prefect_utils.job_spec import JobSpec
from prefect_utils.keys import job_key, submission_key
from prefect_utils.ledger import JobSubmission, LedgerRecord
from prefect_utils.policy import ResubmitPolicy, describe_failure
from prefect_utils.poller import POLLER_LEASE, Poller
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState
from prefect_utils.submission import PollConfig, SlurmJobs, ThrottleConfig
from tests.ledger.specs import spec_in
from tests.slurm_support import job_ids_with_comment, poll_until, slurm
from workflows.models import ClusterJob, PollerLease
from workflows.orchestration.ledger import DjangoJobLedger

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]


def wait(
    service: SlurmJobs, record: LedgerRecord, state: str | None = None, timeout: float = 60
) -> LedgerRecord:
    """Poll (as the service poller would) until the record is terminal, or in `state`."""
    poller = Poller(service)

    def current() -> LedgerRecord | None:
        poller.tick()
        (now,) = service.ledger.records([(record.key, record.attempt)])
        return now if (now.state == state if state else now.is_terminal) else None

    return poll_until(current, timeout=timeout, interval=0.3, what=f"job {record.job_id} to end")


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
    submitted = job_ids_with_comment(submission_key(key, 1))
    assert len(submitted) == 1
    assert (orphan.slurm_job_id is None) == (point != "after_commit")

    rerun = service.submit_once(spec)
    assert rerun.job_id in submitted
    assert service.client.calls["sbatch"] == 0
    assert wait(service, rerun).state == "COMPLETED"
    assert job_ids_with_comment(submission_key(key, 1)) == submitted


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.parametrize("creator", ["dies", "finishes"])
def test_an_adopter_waits_for_the_creator_between_sbatch_and_commit(run_child, tmp_path, creator):
    """The creator of a row stops right after its sbatch (a barrier), holding the row; a second process asks for
    the same work meanwhile. It must wait, not sbatch; then it adopts the creator's job whether the creator dies
    there or goes on to record it."""
    spec = spec_in(tmp_path, "sleep 1", name="barrier")
    key = job_key(spec, {})
    first = run_child(json.dumps(spec.canonical()), env={"PREFECT_UTILS_FAULT_POINT": "after_sbatch:stop"})
    poll_until(lambda: _stopped(first.pid), timeout=60, what="the creator to stop after its sbatch")
    (submitted,) = job_ids_with_comment(submission_key(key, 1))

    second = run_child(json.dumps(spec.canonical()))
    poll_until(_waiting_on_a_lock, timeout=60, what="the second process to wait for the creator's row")
    assert second.poll() is None
    assert job_ids_with_comment(submission_key(key, 1)) == {submitted}

    os.kill(first.pid, signal.SIGKILL if creator == "dies" else signal.SIGCONT)
    out, err = second.communicate(timeout=120)
    first.communicate(timeout=60)
    assert second.returncode == 0, err
    assert out.strip() == submitted
    if creator == "finishes":
        assert first.returncode == 0
    assert job_ids_with_comment(submission_key(key, 1)) == {submitted}
    assert ClusterJob.objects.get(key=key, attempt=1).slurm_job_id == submitted


def test_concurrent_processes_submit_one_job(run_child, tmp_path):
    spec = spec_in(tmp_path, "sleep 1", name="concurrent")
    start = tmp_path / "go"
    children = [run_child(json.dumps(spec.canonical()), str(start)) for _ in range(8)]
    # The barrier: every child has imported Django and waits, then all of them are let go at once.
    poll_until(
        lambda: (
            len(list(tmp_path.glob("go.ready.*"))) == len(children)
            or any(child.poll() is not None for child in children)
        ),
        timeout=120,
        what="every child to be ready",
    )
    start.touch()
    outputs = [child.communicate(timeout=120) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    job_ids = {out.strip() for out, _ in outputs}
    assert len(job_ids) == 1
    assert job_ids_with_comment(submission_key(job_key(spec, {}), 1)) == job_ids
    assert ClusterJob.objects.filter(key=job_key(spec, {})).count() == 1


def test_failure_carries_state_exit_code_and_log_tail(service, tmp_path):
    script = "for i in $(seq 1 30); do echo line $i; done\necho 'fatal: reads are corrupt' >&2\nexit 3\n"
    record = wait(service, service.submit_once(spec_in(tmp_path, script, name="fails")))
    assert record.state == "FAILED" and record.exit_code == 3
    message = describe_failure(record)
    assert "FAILED" in message and "exit code 3" in message
    assert "fatal: reads are corrupt" in message and "line 30" in message
    assert "line 1\n" not in message


def test_a_batch_is_one_commit_before_and_one_after_its_sbatches(service, tmp_path):
    specs = [spec_in(tmp_path, f"true # {i}", name=f"batch-{i}") for i in range(5)]
    submissions = [JobSubmission(job_key(spec, {}), 1, spec.canonical()) for spec in specs]
    records = service.submit(submissions)
    assert [r.key for r in records] == [s.key for s in submissions]
    assert len({r.job_id for r in records}) == 5 and service.client.calls["sbatch"] == 5
    assert len({r.claim for r in records}) == 1
    # Again, from the rows alone: every job is reattached, nothing is submitted.
    assert [r.job_id for r in service.submit(submissions)] == [r.job_id for r in records]
    assert service.client.calls["sbatch"] == 5


def test_a_refused_spec_fails_its_attempt_without_a_job(service, tmp_path):
    spec = spec_in(tmp_path, "true", partition="no-such-partition")
    record = service.submit_once(spec)
    assert record.job_id is None and record.state == "FAILED" and record.is_terminal
    assert "sbatch refused" in describe_failure(record)


def test_cancel_scancels_every_unfinished_job_of_a_label(service, tmp_path):
    labels = {"flow_run_id": "run-1"}
    record = wait(
        service, service.submit_once(spec_in(tmp_path, "sleep 600"), labels=labels), state="RUNNING"
    )

    service.cancel(labels, reason="cancelled by test")
    # scancel only asks: the job is over once Slurm says so, and the caller asks again until then.
    poll_until(lambda: service.cancel(labels, reason="cancelled by test") == [], what="Slurm to confirm")
    row = ClusterJob.objects.get(slurm_job_id=record.job_id)
    assert row.cancellation == "cancelled by test" and row.state == "CANCELLED"
    assert service.cancel(labels) == []


def test_cancel_finds_a_job_whose_id_was_never_recorded(service, run_child, tmp_path):
    spec = spec_in(tmp_path, "sleep 600", name="orphan")
    child = run_child(json.dumps(spec.canonical()), env={"PREFECT_UTILS_FAULT_POINT": "after_sbatch"})
    child.communicate(timeout=60)
    key = job_key(spec, {})
    (job_id,) = job_ids_with_comment(submission_key(key, 1))
    ClusterJob.objects.filter(key=key).update(flow_run_id="orphaned-run")

    poll_until(lambda: service.cancel({"flow_run_id": "orphaned-run"}) == [], what="Slurm to confirm")
    row = ClusterJob.objects.get(key=key)
    assert row.slurm_job_id == job_id and row.state == "CANCELLED"
    assert service.client.calls["sbatch"] == 0


def test_poller_lease_makes_one_poller_per_interval(slurm_cluster, tmp_path):
    client = SlurmClient()
    poll = PollConfig(min_interval=0.2, max_interval=0.2)
    service = SlurmJobs(DjangoJobLedger(), client, poll=poll)
    records = [service.submit_once(spec_in(tmp_path, f"sleep 3 # {i}")) for i in range(3)]
    stop = threading.Event()
    polled_rounds: list[int] = []

    def serve() -> None:  # what every serve_flows process does, as on ten hosts
        poller, rounds = Poller(SlurmJobs(DjangoJobLedger(), client, poll=poll)), 0
        try:
            while not stop.is_set():
                rounds += poller.tick() is not None
                stop.wait(poller.interval)
        finally:
            polled_rounds.append(rounds)
            connection.close()

    threads = [threading.Thread(target=serve) for _ in range(10)]
    for thread in threads:
        thread.start()
    try:
        poll_until(
            lambda: all(r.is_terminal for r in service.ledger.records([(r.key, 1) for r in records])),
            timeout=60,
            what="the jobs to end",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert sum(1 for n in polled_rounds if n) == 1, polled_rounds  # one holder kept the lease throughout
    polls = PollerLease.objects.get(name=POLLER_LEASE).polls
    assert client.calls["squeue"] <= polls and client.calls["sacct"] <= polls
    assert all(r.state == "COMPLETED" for r in service.ledger.records([(r.key, 1) for r in records]))


def test_the_poller_polls_at_its_interval_and_at_once_for_new_jobs(service, tmp_path):
    slow = SlurmJobs(DjangoJobLedger(), service.client, poll=PollConfig(min_interval=30, max_interval=60))
    poller = Poller(slow)
    assert poller.due()
    poller.tick()
    assert poller.holding and not poller.due()  # nothing new: the next poll is 30 s away
    service.submit_once(spec_in(tmp_path, "true", name="new"))
    assert poller.due()  # a new job may end within seconds
    poller.tick()
    assert not poller.due()


def test_a_poller_whose_lease_expired_writes_nothing(service, tmp_path):
    record = service.submit_once(spec_in(tmp_path, "sleep 2"))
    stalled = Poller(service, holder="stalled")
    assert stalled.tick() is not None
    PollerLease.objects.filter(name=POLLER_LEASE).update(holder="someone-else")
    poll_until(
        lambda: service.client.job_states([record.job_id])[record.job_id].state.is_terminal,
        what="the job to end",
    )
    assert stalled.poll_once() is None
    assert ClusterJob.objects.get(key=record.key).state in {"PENDING", "RUNNING"}


@pytest.mark.disruptive
def test_controller_down_makes_states_stale_never_failed(tmp_path, slurm_cluster):
    client = SlurmClient(retries=1, backoff_seconds=0.1, command_timeout=5)
    service = SlurmJobs(DjangoJobLedger(), client, poll=PollConfig(min_interval=0.3, max_interval=0.5))
    record = wait(service, service.submit_once(spec_in(tmp_path, "sleep 8")), state="RUNNING")

    poller = Poller(service)  # takes the lease once the waiter's poller above lets it expire
    slurm("stop-ctld")
    try:
        poll_until(
            lambda: (
                poller.tick() is not None and ClusterJob.objects.get(slurm_job_id=record.job_id).state_stale
            ),
            timeout=60,
            what="the poller to mark the state stale",
        )
        row = ClusterJob.objects.get(slurm_job_id=record.job_id)
        assert row.state_stale and row.state == "RUNNING"
        assert PollerLease.objects.get(name=POLLER_LEASE).last_error
    finally:
        slurm("start-ctld")
    done = wait(service, record)
    assert done.state == "COMPLETED" and not done.stale


def test_job_missing_from_squeue_and_sacct_is_unknown_not_completed(service, tmp_path):
    spec = spec_in(tmp_path, "true")
    service.ledger.insert_missing([JobSubmission("f" * 40, 1, spec.canonical())], claim="test")
    with service.ledger.locked([("f" * 40, 1)]) as batch:
        batch.set_job_id("f" * 40, 1, "987654321")  # a job id this cluster never issued
    Poller(service).tick()
    row = ClusterJob.objects.get(key="f" * 40)
    assert row.state == "UNKNOWN"
    assert not row.is_terminal


def test_a_reused_job_id_does_not_rewrite_a_finished_attempt(service, tmp_path):
    done = wait(service, service.submit_once(spec_in(tmp_path, "true", name="old")))
    newer = service.submit_once(spec_in(tmp_path, "sleep 1; exit 4", name="new"))
    # As after a controller reset: Slurm hands the old, finished attempt's id to a new job.
    ClusterJob.objects.filter(key=done.key).update(slurm_job_id=newer.job_id)
    assert wait(service, newer).state == "FAILED"
    assert ClusterJob.objects.get(key=done.key).state == "COMPLETED"


def test_capacity_counts_active_jobs_and_the_submit_rate(tmp_path, slurm_cluster):
    service = SlurmJobs(DjangoJobLedger(), SlurmClient(), throttle=ThrottleConfig(max_active_jobs=2))
    assert service.capacity() == 2
    blocker = service.submit_once(spec_in(tmp_path, "sleep 2", name="blocker"))
    assert service.capacity() == 1
    wait(service, blocker)
    assert service.capacity() == 2
    rated = SlurmJobs(DjangoJobLedger(), SlurmClient(), throttle=ThrottleConfig(submits_per_minute=1))
    assert rated.capacity() == 0  # the blocker was submitted within the minute


def _attempts(spec: JobSpec, *states: str) -> list[LedgerRecord]:
    return [
        LedgerRecord(key="k", attempt=n, spec=spec.canonical(), state=JobState(state))
        for n, state in enumerate(states, 1)
    ]


def test_policy_by_failure_class():
    spec = JobSpec(
        name="x",
        script="true",
        workdir="/tmp",
        memory_mb=1000,
        time_limit_minutes=10,
        environment={"TOOL_MEMORY_BYTES": "1"},
    )
    policy = ResubmitPolicy(
        max_escalations=2,
        factor=2.0,
        max_memory_mb=3000,
        max_time_limit_minutes=15,
        max_infrastructure_retries=2,
        memory_environment={"TOOL_MEMORY_BYTES": 0.5},
    )
    escalated = policy.next_spec(_attempts(spec, "OUT_OF_MEMORY"))
    assert escalated is not None
    assert escalated.memory_mb == 2000 and escalated.environment["TOOL_MEMORY_BYTES"] == str(
        1000 * 1024 * 1024
    )
    bigger = replace(spec, memory_mb=2000)
    grown = policy.next_spec(_attempts(bigger, "OUT_OF_MEMORY", "OUT_OF_MEMORY"))
    assert grown is not None and grown.memory_mb == 3000
    assert policy.next_spec(_attempts(spec, "OUT_OF_MEMORY", "TIMEOUT", "OUT_OF_MEMORY")) is None  # budget
    assert policy.next_spec(_attempts(replace(spec, memory_mb=3000), "OUT_OF_MEMORY")) is None  # ceiling
    longer = policy.next_spec(_attempts(spec, "TIMEOUT"))
    assert longer is not None and longer.time_limit_minutes == 15
    # An exit code is the tool's verdict: reported, never resubmitted.
    assert policy.next_spec(_attempts(spec, "FAILED")) is None
    assert policy.next_spec(_attempts(spec, "CANCELLED")) is None
    # The node's fault, not the job's: the same spec, without using the escalation budget.
    assert policy.next_spec(_attempts(spec, "OUT_OF_MEMORY", "OUT_OF_MEMORY", "NODE_FAIL")) == spec
    assert policy.next_spec(_attempts(spec, "NODE_FAIL", "PREEMPTED")) == spec
    assert policy.next_spec(_attempts(spec, "NODE_FAIL", "PREEMPTED", "NODE_FAIL")) is None
    assert ResubmitPolicy.from_dict(policy.to_dict()) == policy
