"""Which Slurm job a ledger row is: one Slurm never heard of is LOST in the end; a job id that now names another
job (its comment is not the row's submission key) is never applied; a second job carrying a recorded key is
scancelled. Against the real Slurm and PostgreSQL; the only fault injected is a controller that does not answer.
"""

import logging
import subprocess
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.db.models import F

from prefect_utils.job_spec import JobSpec
from prefect_utils.keys import job_key
from prefect_utils.ledger import JobSubmission, LedgerRecord
from prefect_utils.policy import ResubmitPolicy, describe_failure
from prefect_utils.poller import Poller
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState, map_state
from prefect_utils.submission import SlurmJobs
from tests.ledger.specs import spec_in
from tests.prefect_utils.captures import Replay, read
from tests.prefect_utils.conftest import wait_for_job
from tests.slurm_support import poll_until, slurm_state
from workflows.models import ClusterJob

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]

NEVER_ISSUED = "987654320"  # a job id this cluster never issued


def unique_spec(workdir: Path, script: str, name: str) -> JobSpec:
    # Distinct keys per run: the test database is fresh, Slurm's comments are not.
    return spec_in(workdir, script, name=name, time_limit_minutes=2, environment={"RUN": uuid.uuid4().hex})


def recorded(service: SlurmJobs, spec: JobSpec, job_id: str, labels: dict | None = None) -> LedgerRecord:
    """A ledger row for `spec` that names Slurm job `job_id`, as a submission would have recorded it."""
    submission = JobSubmission(job_key(spec, {}), 1, spec.canonical(), labels=labels or {})
    service.ledger.insert_missing([submission], claim="test")
    with service.ledger.locked([(submission.key, 1)]) as batch:
        batch.set_job_id(submission.key, 1, job_id)
    (record,) = service.ledger.records([(submission.key, 1)])
    return record


def current(service: SlurmJobs, record: LedgerRecord) -> LedgerRecord:
    (now,) = service.ledger.records([(record.key, record.attempt)])
    return now


def polled_until(
    poller: Poller, record: LedgerRecord, wanted: Callable[[LedgerRecord], bool], what: str
) -> LedgerRecord:
    """Ticks until the row is as wanted: a tick that outlasted the test's short lease writes nothing."""

    def check() -> LedgerRecord | None:
        poller.tick()
        now = current(poller.jobs, record)
        return now if wanted(now) else None

    return poll_until(check, timeout=60, what=what)


def warnings_about(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and job_id in r.getMessage()
    ]


def test_a_job_neither_squeue_nor_sacct_knows_is_lost_after_the_threshold(service, tmp_path, caplog):
    spec = unique_spec(tmp_path, "true", "vanished")
    labels = {"flow_run_id": f"lost-{uuid.uuid4().hex}"}
    record = recorded(service, spec, NEVER_ISSUED, labels)
    poller = Poller(service)
    # So far, maybe a controller catching up; a cancellation waits for it.
    polled_until(poller, record, lambda now: now.state == "UNKNOWN", "the job to be unknown")
    assert service.cancel(labels)

    # An hour later (SLURM_LOST_AFTER_SECONDS), first with the controller not answering: that proves nothing.
    ClusterJob.objects.filter(key=record.key).update(
        state_changed_at=F("state_changed_at") - timedelta(hours=2)
    )
    down = SlurmJobs(
        service.ledger,
        SlurmClient(
            retries=0, runner=Replay({"squeue": [(1, "", read("squeue_controller_down.stderr.txt"))]})
        ),
        poll=service.poll,
    )
    Poller(down, holder=poller.holder).tick()
    assert current(service, record).state == "UNKNOWN" and current(service, record).stale

    caplog.set_level(logging.WARNING, logger="prefect_utils")
    lost = polled_until(poller, record, lambda now: now.state != "UNKNOWN", "the unknown job to be given up")
    assert lost.state == "LOST" and lost.is_terminal and not lost.stale
    assert "unknown to squeue and sacct" in describe_failure(lost)
    assert warnings_about(caplog, NEVER_ISSUED)
    # An infrastructure failure: the same spec again, within the bound NODE_FAIL has.
    assert ResubmitPolicy().next_spec([lost]) == spec
    assert service.cancel(labels) == []  # over, for a cancellation too


def test_a_job_id_reused_by_another_job_is_never_applied(service, tmp_path, caplog):
    other_key = f"someone-else-{uuid.uuid4().hex}"
    other = service.client.submit(
        unique_spec(tmp_path / "other", "echo secret of another job", "other"), other_key
    )
    wait_for_job(service.client, other)
    # As after a MaxJobId wrap or a controller reset: our row names an id Slurm has since given another job.
    record = recorded(service, unique_spec(tmp_path / "ours", "true", "ours"), other)
    caplog.set_level(logging.WARNING, logger="prefect_utils")

    row = polled_until(Poller(service), record, lambda now: now.state != "PENDING", "the row to be polled")
    assert (row.state, row.exit_code) == ("LOST", None)
    assert "secret of another job" not in row.log_tail
    warnings = warnings_about(caplog, other)
    assert warnings and all(record.submission_key in line and other_key in line for line in warnings)
    assert ResubmitPolicy().next_spec([row]) is not None


def test_a_job_without_a_comment_is_not_a_mismatch(service, tmp_path):
    # sacct reports the comment only once a job ended in some Slurm versions: no comment proves nothing.
    job_id = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={tmp_path}", "--time=2", "--wrap", "echo no comment"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    record = recorded(service, unique_spec(tmp_path, "true", "uncommented"), job_id)
    ended = polled_until(Poller(service), record, lambda now: now.is_terminal, f"job {job_id} to end")
    assert ended.state == "COMPLETED"


def test_a_second_job_carrying_a_recorded_key_is_scancelled(service, tmp_path, caplog):
    spec = unique_spec(tmp_path, "sleep 60", "twice")
    record = service.submit_once(spec)
    # The late job of an sbatch that timed out, registered after its key was looked up and submitted again.
    late = service.client.submit(spec, record.submission_key)
    caplog.set_level(logging.WARNING, logger="prefect_utils")
    poller = Poller(service)
    try:
        poll_until(
            lambda: poller.tick() is not None and slurm_state(service.client, late) is JobState.CANCELLED,
            timeout=30,
            what=f"the second job {late} of {record.submission_key} to be cancelled",
        )
        assert slurm_state(service.client, record.job_id) in {JobState.PENDING, JobState.RUNNING}
        assert current(service, record).job_id == record.job_id
    finally:
        service.client.cancel([record.job_id, late])
    warnings = warnings_about(caplog, late)
    assert warnings and all(record.job_id in line and record.submission_key in line for line in warnings)


def test_boot_fail_and_lost_are_resubmitted_like_node_fail():
    spec = JobSpec(name="x", script="true", workdir="/tmp")

    def ended(state: JobState, slurm_state: str, attempt: int = 1) -> LedgerRecord:
        return LedgerRecord("k", attempt, spec.canonical(), state=state, slurm_state=slurm_state)

    boot_fail = ended(map_state("BOOT_FAIL"), "BOOT_FAIL")
    assert ResubmitPolicy().next_spec([boot_fail]) == spec
    assert "BOOT_FAIL" in describe_failure(boot_fail)  # Slurm's own word stays visible
    lost = ended(JobState("LOST"), "")
    assert ResubmitPolicy().next_spec([lost]) == spec
    # One bound for every infrastructure failure.
    history = [ended(JobState.NODE_FAIL, "NODE_FAIL", 1), ended(JobState("LOST"), "", 2), boot_fail]
    assert ResubmitPolicy(max_infrastructure_retries=2).next_spec(history) is None
