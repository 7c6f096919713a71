"""A job Slurm keeps PENDING for a reason that never clears is cancelled and failed with that reason.

The real case: an operator lowers a partition's MaxTime below the --time of jobs already queued in it (sbatch
refuses such a job at submission, EnforcePartLimits=ALL, but not once it is queued). The tests do it to the
partition `limits`, which scripts/slurm.sh configures for tests alone.
"""

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefect_utils.job_spec import JobInfo, JobSpec
from prefect_utils.keys import job_key
from prefect_utils.ledger import JobSubmission, LedgerRecord
from prefect_utils.parsing import parse_squeue
from prefect_utils.policy import ResubmitPolicy, describe_failure
from prefect_utils.poller import Poller
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import UNSCHEDULABLE_REASONS, JobState
from prefect_utils.submission import SlurmJobs
from tests.slurm_support import poll_until, slurm_state
from workflows.orchestration.ledger import DjangoJobLedger

LIMITS = "limits"

# squeue records captured with SlurmClient's own squeue command line (tests/prefect_utils/data/commands.txt):
# job 192 (--time=10) and job 193 (--time=1) queued in partition `limits` while it was DOWN; then
# `scontrol update PartitionName=limits MaxTime=1`, `... State=UP`; then 192 scancelled.
SQUEUE_PARTITION_DOWN = (
    "192\x1fPENDING\x1fPartitionDown\x1f0\x1f2026-11-22T09:11:12\x1fN/A\x1fN/A\x1f\x1f"
    "capture-unschedulable-captureunsch\x1f/tmp/emgapi-capture/slurm-%j.out\x1fcapture-unschedulable-0001\x1e\n"
    "193\x1fPENDING\x1fPartitionDown\x1f0\x1f2026-11-22T09:11:12\x1fN/A\x1fN/A\x1f\x1f"
    "capture-fits-capturefits0\x1f/tmp/emgapi-capture/slurm-%j.out\x1fcapture-fits-0001\x1e\n"
)
SQUEUE_TIME_LIMIT_LOWERED = (
    "193\x1fCOMPLETED\x1fNone\x1f0\x1f2026-11-22T09:11:12\x1f2026-11-22T09:11:12\x1f2026-11-22T09:11:12\x1fvm\x1f"
    "capture-fits-capturefits0\x1f/tmp/emgapi-capture/slurm-%j.out\x1fcapture-fits-0001\x1e\n"
    "192\x1fPENDING\x1fPartitionTimeLimit\x1f0\x1f2026-11-22T09:11:12\x1fN/A\x1fN/A\x1f\x1f"
    "capture-unschedulable-captureunsch\x1f/tmp/emgapi-capture/slurm-%j.out\x1fcapture-unschedulable-0001\x1e\n"
)
SQUEUE_CANCELLED = (
    "192\x1fCANCELLED\x1fPartitionTimeLimit\x1f0\x1f2026-11-22T09:11:12\x1f2026-11-22T09:11:12\x1f"
    "2026-11-22T09:11:12\x1f\x1fcapture-unschedulable-captureunsch\x1f/tmp/emgapi-capture/slurm-%j.out\x1f"
    "capture-unschedulable-0001\x1e\n"
)


def by_id(text: str) -> dict[str, JobInfo]:
    return {job.job_id: job for job in parse_squeue(text)}


# --- the helper, on what squeue printed ---


def test_a_lowered_time_limit_makes_a_queued_job_unschedulable() -> None:
    down = by_id(SQUEUE_PARTITION_DOWN)
    assert [job.reason for job in down.values()] == ["PartitionDown", "PartitionDown"]
    assert not any(job.unschedulable for job in down.values())

    lowered = by_id(SQUEUE_TIME_LIMIT_LOWERED)
    assert lowered["192"].unschedulable
    assert lowered["193"].state is JobState.COMPLETED and not lowered["193"].unschedulable


def test_a_job_that_is_over_is_not_unschedulable_whatever_its_reason() -> None:
    (cancelled,) = parse_squeue(SQUEUE_CANCELLED)
    assert (cancelled.state, cancelled.reason) == (JobState.CANCELLED, "PartitionTimeLimit")
    assert not cancelled.unschedulable


@pytest.mark.parametrize("reason", sorted(UNSCHEDULABLE_REASONS))
def test_pending_for_a_reason_that_never_clears(reason: str) -> None:
    assert JobInfo(job_id="1", state=JobState.PENDING, slurm_state="PENDING", reason=reason).unschedulable
    assert not JobInfo(job_id="1", state=JobState.RUNNING, slurm_state="RUNNING", reason=reason).unschedulable


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "Priority",
        "Resources",
        "BeginTime",
        "Dependency",
        "PartitionDown",
        "PartitionNodeLimit",
        "InvalidAccount",
        "InvalidQOS",
        "JobHeldAdmin",
        "QOSGrpCpuLimit",
    ],
)
def test_pending_for_a_reason_that_can_clear(reason: str | None) -> None:
    assert not JobInfo(job_id="1", state=JobState.PENDING, slurm_state="PENDING", reason=reason).unschedulable


# --- the poller ---


def limited_spec(workdir: Path, name: str, minutes: int) -> JobSpec:
    """A `true` job in partition `limits` (LIMITS), asking for `minutes`."""
    return JobSpec(
        name=name,
        script="true\n",
        workdir=str(workdir),
        partition=LIMITS,
        time_limit_minutes=minutes,
        memory_mb=64,
        # Distinct keys per run: the test database is fresh, Slurm's comments are not.
        environment={"RUN": uuid.uuid4().hex},
    )


def current(service: SlurmJobs, record: LedgerRecord) -> LedgerRecord:
    (now,) = service.ledger.records([(record.key, record.attempt)])
    return now


class ScancelFails:
    """A runner for SlurmClient: squeue prints SQUEUE_TIME_LIMIT_LOWERED; scancel fails until `scancel_works`."""

    def __init__(self) -> None:
        self.scancel_works = False
        self.commands: list[list[str]] = []
        self.comments: dict[str, str] = {}  # captured comment -> the submission key of the row naming the job

    def __call__(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.commands.append(args)
        if args[0] == "squeue":
            listing = SQUEUE_TIME_LIMIT_LOWERED
            for captured, key in self.comments.items():
                listing = listing.replace(captured, key)
            return subprocess.CompletedProcess(args, 0, listing, "")
        if args[0] == "scancel" and self.scancel_works:
            return subprocess.CompletedProcess(args, 0, "", "")
        return subprocess.CompletedProcess(args, 1, "", f"{args[0]}: error: Access/permission denied\n")


@pytest.mark.django_db(transaction=True)
def test_a_job_scancel_could_not_reach_stays_pending_and_the_others_are_recorded(tmp_path: Path) -> None:
    runner = ScancelFails()
    service = SlurmJobs(DjangoJobLedger(), SlurmClient(runner=runner, retries=0))
    records = {}
    for job_id, minutes in (("192", 10), ("193", 1)):
        spec = limited_spec(tmp_path, f"job-{job_id}", minutes)
        submission = JobSubmission(job_key(spec, {}), 1, spec.canonical())
        service.ledger.insert_missing([submission], "test")
        with service.ledger.locked([(submission.key, 1)]) as batch:
            batch.set_job_id(submission.key, 1, job_id)
        (records[job_id],) = service.ledger.records([(submission.key, 1)])
    # The captured jobs carry the capture's keys; a comment other than the row's would be another job's.
    runner.comments = {
        "capture-unschedulable-0001": records["192"].submission_key,
        "capture-fits-0001": records["193"].submission_key,
    }
    poller = Poller(service)

    poller.tick()
    assert ["scancel", "192"] in runner.commands
    stuck, done = current(service, records["192"]), current(service, records["193"])
    assert (stuck.state, stuck.reason) == ("PENDING", "PartitionTimeLimit")
    assert done.state == "COMPLETED"

    runner.scancel_works = True
    poller.tick()
    failed = current(service, records["192"])
    assert failed.state == "FAILED"
    assert failed.reason.startswith("never schedulable: PartitionTimeLimit")
    assert ResubmitPolicy().next_spec([failed]) is None


@pytest.fixture
def limits_partition(slurm_cluster: None) -> Iterator[None]:
    """Partition `limits` DOWN, so that jobs queue there whatever their --time; restored however the test ends."""
    scontrol_update("MaxTime=INFINITE", "State=DOWN")
    try:
        yield
    finally:
        scontrol_update("MaxTime=INFINITE", "State=UP")


def scontrol_update(*settings: str) -> None:
    """Retried until it takes: the cluster is shared, and other tests stop its daemons for a while."""
    command = ["scontrol", "update", f"PartitionName={LIMITS}", *settings]
    poll_until(
        lambda: subprocess.run(command, capture_output=True, text=True, check=False).returncode == 0,
        timeout=120,
        interval=1,
        what=" ".join(command),
    )


@pytest.mark.slurm
@pytest.mark.django_db(transaction=True)
def test_job_left_pending_by_a_lowered_time_limit_is_cancelled_and_failed_for_good(
    limits_partition: None, service: SlurmJobs, tmp_path: Path
) -> None:
    too_long = service.submit_once(limited_spec(tmp_path, "too-long", minutes=10))
    fits = service.submit_once(limited_spec(tmp_path, "fits", minutes=1))
    poller = Poller(service)

    def polled(*records: LedgerRecord) -> list[LedgerRecord]:
        # A tick whose squeue outlasted the test's short lease writes nothing; the next one does.
        poller.tick()
        return [current(service, record) for record in records]

    # A DOWN partition is a wait that ends: polls record the reason and leave the jobs alone.
    poll_until(
        lambda: all(r.state == "PENDING" and r.reason == "PartitionDown" for r in polled(too_long, fits)),
        timeout=60,
        what="both jobs reported pending in the DOWN partition",
    )

    scontrol_update("MaxTime=1")
    scontrol_update("State=UP")

    def ended() -> list[LedgerRecord] | None:
        now = polled(too_long, fits)
        return now if all(r.is_terminal for r in now) else None

    too_long, fits = poll_until(ended, timeout=120, what="both jobs to end in the ledger")

    assert fits.state == "COMPLETED"
    assert too_long.state == "FAILED" and too_long.exit_code is None
    assert too_long.reason.startswith("never schedulable: PartitionTimeLimit (")
    message = describe_failure(too_long)
    assert "ended FAILED" in message and "never schedulable: PartitionTimeLimit" in message

    # Slurm has let the job go: it will not start should the limit be raised again.
    assert slurm_state(service.client, too_long.job_id) is JobState.CANCELLED

    # Another attempt with the same spec would only pend again.
    history = service.ledger.attempts([too_long.key])[too_long.key]
    assert [r.attempt for r in history] == [1]
    assert ResubmitPolicy().next_spec(history) is None
    assert ResubmitPolicy(max_escalations=3, max_infrastructure_retries=3).next_spec(history) is None
