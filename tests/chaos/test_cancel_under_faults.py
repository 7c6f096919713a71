"""Cancellation is a durable intent: cancelled while nothing can carry it out, it is carried out once something can.

A request waits on a RUNNING job; it is cancelled (API or admin) while the controller is down or while no flow
server is alive; the fault lasts OUTAGE_SECONDS; then every job must end CANCELLED in Slurm, the flow run
cancelled in Prefect and the cancellation confirmed, within a bounded time.
"""

import time

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState
from tests.faults import OUTAGE_SECONDS, start_slurm_daemon, stop_slurm_daemon
from tests.slurm_support import poll_until, slurm_state
from tests.stack import (
    REQUESTS_URL,
    flow_run_of,
    post_request,
    request_status,
    running_job,
    suspended,
)
from workflows.models import ClusterJob, RequestProgress

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


def cancel_through(channel: str, request_id: int, user_client, superuser) -> None:
    if channel == "api":
        response = user_client.post(f"{REQUESTS_URL}{request_id}/cancel/")
        assert response.status_code == 200 and response.json()["status"] == "cancelled", response.content
    else:
        admin = Client()
        admin.force_login(superuser)
        response = admin.post(
            reverse("admin:analyses_assemblyanalysisrequest_changelist"),
            {"action": "cancel_requests", "_selected_action": [request_id], "confirmed": "yes"},
        )
        assert response.status_code == 302


@pytest.mark.parametrize(
    ("fault", "channel"),
    [
        pytest.param("controller-down", "api", marks=pytest.mark.disruptive, id="controller-down-api"),
        # Kills only its own flow server: runs beside other tests.
        pytest.param("no-flow-server", "admin", id="no-flow-server-admin"),
    ],
)
def test_a_cancellation_during_an_outage_is_carried_out_when_it_ends(
    fault, channel, flows_server, gated_stub, user_client, superuser
):
    stub, _ = gated_stub
    stub.fastq_gate.clear()  # the fetch job stays RUNNING until the gate opens (it never does here)
    request = post_request(user_client, "PRJEB00001")
    held = poll_until(lambda: running_job(request), timeout=120, what="a job to run")
    poll_until(lambda: suspended(request), timeout=60, what="the flow run to suspend")
    slurm = SlurmClient()

    if fault == "controller-down":
        stop_slurm_daemon("ctld")
    else:
        flows_server.kill()
    try:
        cancel_through(channel, request.pk, user_client, superuser)
        assert request_status(request) == "cancelled"
        time.sleep(OUTAGE_SECONDS)  # the outage itself
        assert RequestProgress.objects.filter(pk=request.pk, cancel_carried_out_at__isnull=False).count() == 0
        if fault == "no-flow-server":  # nothing alive to carry it out: the job still runs, the intent waits
            assert slurm_state(slurm, held.slurm_job_id) is JobState.RUNNING
    finally:
        if fault == "controller-down":
            start_slurm_daemon("ctld")
        else:
            flows_server.start()
    connections.close_all()
    ended_at = time.monotonic()

    poll_until(
        lambda: RequestProgress.objects.filter(pk=request.pk, cancel_carried_out_at__isnull=False).exists(),
        timeout=120,
        what="the cancellation to be carried out once the outage ended",
    )
    carried_out_after = time.monotonic() - ended_at
    for job in ClusterJob.objects.filter(request=request).exclude(slurm_job_id=None):
        assert slurm_state(slurm, job.slurm_job_id) is JobState.CANCELLED, job
    poll_until(
        lambda: flow_run_of(request).state.is_cancelled(), timeout=90, what="Prefect to cancel the run"
    )
    assert request_status(request) == "cancelled"
    print(f"{fault}: cancellation carried out {carried_out_after:.1f} s after the outage ended")
