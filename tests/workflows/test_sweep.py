"""The recovery sweep against the real Prefect server: every state a request's flow run can be left in."""

import contextlib
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from django.conf import settings
from django.utils import timezone
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Completed, Crashed, Failed, Late, Pending, Running, Suspended

from analyses.models import AssemblyAnalysisRequest
from workflows.models import ClusterJob, RequestProgress, Trigger
from workflows.orchestration.recovery import sweep, wake_requests
from workflows.orchestration.request_lock import request_lock
from workflows.outbox import deployments, prefect_api

pytestmark = pytest.mark.django_db(transaction=True)


@flow(name="emgapi-test-sweep")
def unserved(request_id: int = 0, environment: str | None = None) -> None:
    """A deployment nobody serves: its flow runs stay in whatever state a test puts them."""


@pytest.fixture(scope="module")
def deployment_id(prefect_server) -> uuid.UUID:
    # Called outside an event loop, these return their values (their types say "or a coroutine").
    deployment = cast(RunnerDeployment, unserved.to_deployment(name="sweep-tests"))
    return cast(uuid.UUID, deployment.apply())


@pytest.fixture
def request_with_run(settings, deployment_id):
    """A running request whose flow run (of the unserved deployment) the test sets to a state."""
    created: list[uuid.UUID] = []

    def make(state, environment: str | None = "ours") -> tuple[AssemblyAnalysisRequest, uuid.UUID]:
        request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
        Trigger.objects.all().delete()  # the request's own trigger would be "awaiting dispatch"
        parameters: dict[str, Any] = {"request_id": request.pk}
        if environment is not None:
            parameters["environment"] = deployments.environment() if environment == "ours" else environment
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
            client.set_flow_run_state(flow_run.id, state, force=True)
        created.append(flow_run.id)
        request.status = AssemblyAnalysisRequest.Status.RUNNING
        request.request_metadata = {"flow_run_id": str(flow_run.id)}
        request.save()
        return request, flow_run.id

    yield make
    with get_client(sync_client=True) as client:
        for flow_run_id in created:
            with contextlib.suppress(ObjectNotFound):  # a test may have deleted it
                client.delete_flow_run(flow_run_id)


def state_of(flow_run_id: uuid.UUID):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def later() -> datetime:
    return timezone.now() + timedelta(seconds=settings.WORKFLOWS_STALL_SECONDS + 1)


def test_a_run_left_pending_by_a_killed_runner_is_rescheduled(request_with_run):
    request, flow_run_id = request_with_run(Pending())
    assert sweep().rescheduled == []  # not stalled yet: a runner may be starting its process
    assert sweep(now=later()).rescheduled == [request.pk]
    assert state_of(flow_run_id).type.value == "SCHEDULED"
    progress = RequestProgress.objects.get(pk=request.pk)
    assert progress.total_recoveries == 1 and "PENDING" in progress.last_recovery


def test_a_running_run_is_left_alone_while_its_pass_holds_the_lock(request_with_run):
    request, _flow_run_id = request_with_run(Running())
    with request_lock(request.pk):
        assert sweep(now=later()).rescheduled == []
    assert sweep(now=later()).rescheduled == [request.pk]  # its process died: no one holds the lock


def test_a_run_whose_process_keeps_dying_goes_back_at_once_every_time(request_with_run):
    request, flow_run_id = request_with_run(Crashed())
    for _ in range(4):
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(), force=True)
        assert sweep().rescheduled == [request.pk]
        assert state_of(flow_run_id).state_details.scheduled_time <= timezone.now()
    assert RequestProgress.objects.get(pk=request.pk).recoveries == 4


def test_crashed_and_failed_runs_are_rescheduled_with_backoff(request_with_run):
    request, flow_run_id = request_with_run(Crashed())
    assert sweep().rescheduled == [request.pk]
    first = state_of(flow_run_id)
    assert first.type.value == "SCHEDULED" and first.state_details.scheduled_time <= timezone.now()

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Failed(message="database went away"), force=True)
    assert sweep().rescheduled == [request.pk]
    second = state_of(flow_run_id)
    # A second recovery in a row waits before the run starts again.
    assert second.state_details.scheduled_time > timezone.now() + timedelta(seconds=5)
    assert RequestProgress.objects.get(pk=request.pk).recoveries == 2


def test_a_suspended_run_is_resumed_when_a_job_changed_after_its_last_pass(request_with_run):
    request, flow_run_id = request_with_run(Suspended(timeout_seconds=None))
    read_at = timezone.now()
    RequestProgress.objects.create(request=request, last_read_at=read_at)
    ClusterJob.objects.create(
        key="k" * 40, spec={}, request=request, slurm_job_id="1", state="RUNNING", state_changed_at=read_at
    )
    assert sweep().resumed == []  # nothing happened since the pass: it waits on a running job

    ClusterJob.objects.filter(request=request).update(state="COMPLETED", state_changed_at=timezone.now())
    assert sweep().resumed == [request.pk]  # the poller's wake-up was lost: the sweep makes up for it
    assert state_of(flow_run_id).name == "Resuming"
    assert RequestProgress.objects.get(pk=request.pk).resumes == 1


def test_a_suspended_run_whose_steps_never_reached_the_cluster_is_resumed(request_with_run):
    request, _flow_run_id = request_with_run(Suspended(timeout_seconds=None))
    RequestProgress.objects.create(request=request, last_read_at=timezone.now())
    # The controller stopped answering mid-batch: a row waits for a pass to submit it, no job will wake it.
    ClusterJob.objects.create(key="n" * 40, spec={}, request=request, state="NEW")
    assert sweep().resumed == [request.pk]


def test_one_free_slot_resumes_one_waiting_request_not_all_of_them(request_with_run, settings):
    settings.SLURM_MAX_ACTIVE_JOBS = 1
    waiting = [request_with_run(Suspended(timeout_seconds=None))[0] for _ in range(5)]
    read_at = timezone.now()
    for request in waiting:
        RequestProgress.objects.create(
            request=request, last_read_at=read_at, capacity_wanted=2, capacity_waiting_since=read_at
        )
    # Each started a process that found no slot and suspended again, and runs left PENDING by that load were then
    # rescheduled as stalled: resume only the request the free slot is granted to.
    assert sweep().resumed == [waiting[0].pk]
    assert sweep().resumed == []  # the slot stays reserved for that request's pass


def test_a_run_queued_behind_the_runners_process_limit_is_left_waiting(request_with_run):
    # A runner at WORKFLOWS_MAX_FLOW_PROCESSES leaves runs SCHEDULED (Late, once past their time) until a process
    # slot frees: they are queued, not stalled, and a new flow run or a reschedule would only add to the queue.
    request, flow_run_id = request_with_run(Late(scheduled_time=timezone.now() - timedelta(minutes=30)))
    report = sweep(now=later() + timedelta(hours=1))
    assert request.pk not in report.rescheduled + report.restarted + report.resumed
    assert state_of(flow_run_id).name == "Late"


def test_a_run_cancelled_in_prefect_cancels_the_request(request_with_run):
    request, _ = request_with_run(Cancelled())
    assert sweep().cancelled == [request.pk]
    request.refresh_from_db()
    assert request.status == "cancelled" and request.status_detail == "Flow run cancelled in Prefect."
    assert RequestProgress.objects.get(pk=request.pk).cancel_carried_out_at is not None


def test_a_request_finished_while_the_sweep_reads_prefect_gets_no_new_run(request_with_run, monkeypatch):
    """The race bench/prefect_down.py met: the pass finishes the request and its run completes between the sweep's
    read of the requests and its read of Prefect. Injected by wrapping the Prefect read (the real one still runs)."""
    request, _ = request_with_run(Completed())
    real_read = prefect_api.read_flow_runs

    def read_while_the_pass_finishes(ids):
        AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(status="completed")
        return real_read(ids)

    monkeypatch.setattr(prefect_api, "read_flow_runs", read_while_the_pass_finishes)
    assert sweep().restarted == []
    assert not Trigger.objects.exists()


def test_a_deleted_run_is_replaced_by_a_new_one_under_a_new_key(request_with_run):
    request, flow_run_id = request_with_run(Suspended(timeout_seconds=None))
    with get_client(sync_client=True) as client:
        client.delete_flow_run(flow_run_id)
    assert sweep().restarted == [request.pk]
    trigger = Trigger.objects.get()
    assert trigger.parameters == {"request_id": request.pk} and ":gen2:" in trigger.idempotency_key
    assert sweep().restarted == []  # its trigger awaits dispatch: not replaced twice


def test_readyz_names_a_request_that_keeps_being_recovered(request_with_run, client, staff_user):
    request, _ = request_with_run(Crashed())
    RequestProgress.objects.create(
        request=request, recoveries=3, last_recovery="flow run FAILED: database went away"
    )
    client.force_login(staff_user)
    check = client.get("/readyz").json()["checks"]["recovery"]
    assert not check["ok"]
    assert check["requests_recovering"][0]["request_id"] == request.pk
    assert "database went away" in check["requests_recovering"][0]["last_recovery"]


@pytest.mark.parametrize("environment", [None, "staging"])
def test_a_run_no_runner_of_this_environment_serves_is_replaced(request_with_run, environment):
    # None: a run made before deployments were scoped by environment, which nothing serves any more.
    request, _ = request_with_run(Suspended(), environment=environment)
    assert sweep().restarted == [request.pk]
    trigger = Trigger.objects.get()
    assert ":gen2:" in trigger.idempotency_key
    assert "not of environment" in RequestProgress.objects.get(pk=request.pk).last_recovery


def test_flow_runs_are_read_in_pages_prefect_accepts(deployment_id):
    # Prefect refuses a limit above 200: a sweep over 201 unfinished requests used to fail every round.
    with get_client(sync_client=True) as client:
        made = [client.create_flow_run_from_deployment(deployment_id, parameters={}).id for _ in range(201)]
    try:
        found = prefect_api.read_flow_runs([str(flow_run_id) for flow_run_id in made] + [str(uuid.uuid4())])
        assert set(found) == {str(flow_run_id) for flow_run_id in made}
    finally:
        with get_client(sync_client=True) as client:
            for flow_run_id in made:
                client.delete_flow_run(flow_run_id)


def fill_the_cluster(request_with_run, settings) -> AssemblyAnalysisRequest:
    """Another request's job on the cluster holds the only slot."""
    settings.SLURM_MAX_ACTIVE_JOBS = 1
    holder, _ = request_with_run(Suspended(timeout_seconds=None))
    ClusterJob.objects.create(key="h" * 40, spec={}, request=holder, slurm_job_id="7", state="RUNNING")
    return holder


def test_a_request_queued_for_capacity_is_resumed_by_its_grant_not_by_its_ended_job(
    request_with_run, settings
):
    # Scenario (b) of bench/scale.py: 30 of 52 passes submitted nothing, resumed for an ended job of a request that
    # could not get a slot. Its grant resumes it, and that pass reads the ended job too.
    holder = fill_the_cluster(request_with_run, settings)
    queued, _ = request_with_run(Suspended(timeout_seconds=None))
    read_at = timezone.now() - timedelta(seconds=5)
    RequestProgress.objects.create(
        request=queued, last_read_at=read_at, capacity_wanted=2, capacity_waiting_since=read_at
    )
    ClusterJob.objects.create(
        key="q" * 40,
        spec={},
        request=queued,
        slurm_job_id="8",
        state="COMPLETED",
        state_changed_at=timezone.now(),
    )
    assert wake_requests({queued.pk}) == []
    assert queued.pk not in sweep().resumed

    ClusterJob.objects.filter(request=holder).update(state="COMPLETED", state_changed_at=timezone.now())
    assert sorted(wake_requests({holder.pk})) == [holder.pk, queued.pk]  # the freed slot went to the queue


def test_a_grant_waiting_for_its_runs_process_does_not_lapse(request_with_run, settings):
    # Scenario (b): grants lapsed while their resumed runs queued behind the runner's process limit, and the
    # slots went round again, resuming more runs into the same queue.
    settings.SLURM_MAX_ACTIVE_JOBS = 1
    granted_at = timezone.now() - timedelta(seconds=settings.WORKFLOWS_CAPACITY_GRANT_SECONDS - 5)
    first, _ = request_with_run(Late(scheduled_time=granted_at))  # resumed, waiting for a process
    second, _ = request_with_run(Suspended(timeout_seconds=None))
    for request, granted in ((first, 1), (second, 0)):
        RequestProgress.objects.create(
            request=request,
            last_read_at=granted_at - timedelta(seconds=1),
            capacity_wanted=1,
            capacity_waiting_since=granted_at - timedelta(seconds=1),
            capacity_granted=granted,
            capacity_granted_at=granted_at if granted else None,
            capacity_served_at=granted_at if granted else None,
        )
    sweep()
    after_lapse = timezone.now() + timedelta(seconds=10)
    assert sweep(now=after_lapse).resumed == []  # the slot stays with the run queued for a process
    assert RequestProgress.objects.get(pk=first.pk).capacity_granted == 1


def test_a_run_whose_process_is_still_starting_is_not_rescheduled(request_with_run):
    # Scenario (b): 116 runs still importing after WORKFLOWS_STALL_SECONDS were rescheduled as "PENDING with no
    # live pass". A process of this host that carries the run's id (as Prefect's runners and workers start them)
    # is alive; this one stands in for a flow process importing its modules.
    request, flow_run_id = request_with_run(Pending())
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": str(flow_run_id)}
    starting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    try:
        assert sweep(now=later()).rescheduled == []
    finally:
        starting.kill()
        starting.wait()
    assert sweep(now=later()).rescheduled == [request.pk]
