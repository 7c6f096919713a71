import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Cancelling

from analyses.models import Analysis
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState
from tests.slurm_support import poll_until, slurm_state
from tests.stack import (
    REQUESTS_URL,
    assert_one_slurm_job_per_key,
    flow_run_of,
    linger_past_a_held_job,
    post_request,
    request_status,
    running_job,
    suspended,
)
from workflows.models import ClusterJob, RequestProgress

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


@linger_past_a_held_job
def test_a_waiting_request_holds_no_process_and_survives_a_killed_flow_server(
    flows_server, gated_stub, user_client
):
    stub, _ = gated_stub
    stub.fastq_gate.clear()  # the fetch job blocks in curl: a job that is RUNNING on Slurm for as long as we like
    request = post_request(user_client, "PRJEB00002")
    held = poll_until(lambda: running_job(request), timeout=120, what="the fetch job to run")
    poll_until(lambda: suspended(request), timeout=60, what="the flow run to suspend while its job runs")
    # The suspended run's process exits (about a second after the state is recorded): waiting holds nothing.
    poll_until(lambda: not flows_server.flow_processes(), timeout=30, what="the flow process to exit")

    flows_server.kill()
    assert slurm_state(SlurmClient(), held.slurm_job_id) is JobState.RUNNING
    flows_server.start()
    stub.fastq_gate.set()  # the job ends while the new server runs: its poller resumes the flow run

    poll_until(
        lambda: request_status(request) in {"completed", "failed"}, timeout=400, what="the request to finish"
    )
    assert request.status == "completed", request.status_detail
    assert request.request_metadata["failed_runs"] == {}  # ERR9000004 was rejected by data QA, not by Slurm
    held.refresh_from_db()
    assert held.state == "COMPLETED" and held.attempt == 1
    assert not ClusterJob.objects.filter(request=request, attempt__gt=1).exists()
    assert_one_slurm_job_per_key(request)
    assert Analysis.objects.filter(request=request).count() == 2  # by the assembly and the analysis chained
    assert RequestProgress.objects.get(pk=request.pk).resumes >= 1


def test_cancelling_a_running_request_scancels_its_jobs(flows_server, gated_stub, user_client):
    stub, _ = gated_stub
    stub.fastq_gate.clear()
    request = post_request(user_client, "PRJEB00001")
    held = poll_until(lambda: running_job(request), timeout=120, what="a job to run")

    response = user_client.post(f"{REQUESTS_URL}{request.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    client = SlurmClient()
    poll_until(
        lambda: slurm_state(client, held.slurm_job_id) is JobState.CANCELLED,
        timeout=60,
        what="Slurm to report the job CANCELLED",
    )
    poll_until(
        lambda: flow_run_of(request).state.is_cancelled(), timeout=90, what="Prefect to cancel the run"
    )
    poll_until(
        lambda: RequestProgress.objects.get(pk=request.pk).cancel_carried_out_at,
        timeout=60,
        what="the cancellation to be confirmed",
    )
    assert request_status(request) == "cancelled"
    held.refresh_from_db()
    assert held.cancellation == "Cancelled by user." and held.state == "CANCELLED"


def test_cancelling_the_suspended_flow_run_in_prefect_scancels_and_cancels_the_request(
    flows_server, gated_stub, user_client
):
    """The Cancel button of the Prefect UI on a suspended run: no process, no hook; the sweep carries it out."""
    stub, _ = gated_stub
    stub.fastq_gate.clear()
    request = post_request(user_client, "PRJEB00001")
    held = poll_until(lambda: running_job(request), timeout=120, what="a job to run")
    poll_until(lambda: suspended(request), timeout=60, what="the flow run to suspend")

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(request.flow_run_id), Cancelling(), force=True)
    slurm = SlurmClient()
    poll_until(
        lambda: slurm_state(slurm, held.slurm_job_id) is JobState.CANCELLED,
        timeout=90,
        what="the sweep to scancel the job",
    )
    poll_until(lambda: request_status(request) == "cancelled", timeout=60, what="the request to be cancelled")
    poll_until(
        lambda: ClusterJob.objects.get(pk=held.pk).state == "CANCELLED",
        timeout=60,
        what="the ledger to agree",
    )
    assert ClusterJob.objects.get(pk=held.pk).cancellation == "Flow run cancelled in Prefect."
