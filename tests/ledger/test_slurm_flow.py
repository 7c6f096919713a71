"""The Prefect tasks over the ledger, run in real flows against the Prefect server `make test` starts."""

import pytest
from prefect import flow
from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

from prefect_utils import slurm_flow
from prefect_utils.jobs import JobFailed, PollConfig, SlurmJobs
from prefect_utils.scheduler import JobSpec, SlurmClient
from workflows.ledger import DjangoJobLedger
from workflows.models import ClusterJob

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]


@flow(name="emgapi-test-submit-and-wait")
def submit_and_wait(spec: JobSpec) -> tuple[str, str]:
    handle = slurm_flow.submit_once(spec)
    (record,) = slurm_flow.wait_for_jobs([handle])
    return handle.job_id, record.state


@flow(name="emgapi-test-run-job")
def run_one(spec: JobSpec) -> str:
    return slurm_flow.run_job(spec).state


@pytest.fixture
def counting_client(slurm_cluster, tmp_path):
    client = SlurmClient()
    slurm_flow.configure(lambda: SlurmJobs(DjangoJobLedger(), client, poll=PollConfig(0.2, 1.0)))
    # The task cache lives on local disk; a directory of this test's own keeps other sessions' results out.
    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "results"}):
        yield client


def test_rerun_flow_gets_the_recorded_job_without_submitting(counting_client, tmp_path):
    spec = JobSpec(name="flow-task", script="echo from a task", workdir=str(tmp_path))
    first_job, first_state = submit_and_wait(spec)
    second_job, second_state = submit_and_wait(spec)
    assert first_job == second_job and first_state == second_state == "COMPLETED"
    assert counting_client.calls["sbatch"] == 1
    job = ClusterJob.objects.get(slurm_job_id=first_job)
    assert job.flow_run_id, "the flow run id is recorded on the ledger"


def test_failed_job_fails_the_task_with_exit_code_and_log(counting_client, tmp_path):
    spec = JobSpec(name="flow-task-fails", script="echo about to fail\nexit 3", workdir=str(tmp_path))
    with pytest.raises(JobFailed, match="exit code 3") as excinfo:
        run_one(spec)
    assert "about to fail" in str(excinfo.value)
