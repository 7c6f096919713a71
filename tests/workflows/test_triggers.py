"""Signals -> outbox -> Prefect, against the real Prefect server that `make test` starts."""

import socket
import threading
import uuid
from typing import cast

import pytest
from django.db import connection
from django.utils import timezone
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment

from analyses.models import AssemblyAnalysisRequest, Study
from tests.slurm_support import poll_until
from workflows.models import Trigger
from workflows.outbox import deployments
from workflows.outbox.dispatch import dispatch_pending_triggers, dispatch_trigger
from workflows.outbox.wakeup import CHANNEL, WakeUps

UNREACHABLE_PREFECT = "http://127.0.0.1:9/api"


@flow(name="emgapi-test-noop")
def noop(request_id: int = 0, study_id: int = 0, environment: str | None = None) -> None:
    """A deployment nobody serves: its flow runs are created and never executed."""


@pytest.fixture(scope="module")
def test_deployment(django_db_setup, prefect_server) -> str:
    # Registered under this environment's name, as serve_flows would: the dispatcher resolves it so.
    # Called outside an event loop, to_deployment returns the deployment (its type says "or a coroutine").
    cast(RunnerDeployment, noop.to_deployment(name=deployments.served_deployment_name("unit-tests"))).apply()
    return "emgapi-test-noop/unit-tests"


@pytest.fixture
def route_to_test_deployment(monkeypatch, test_deployment):
    monkeypatch.setattr(deployments, "ASSEMBLY_ANALYSIS", test_deployment)
    monkeypatch.setattr(deployments, "STUDY_SYNC", test_deployment)
    yield test_deployment
    with get_client(sync_client=True) as client:
        for trigger in Trigger.objects.exclude(flow_run_id=""):
            client.delete_flow_run(uuid.UUID(trigger.flow_run_id))


@pytest.mark.django_db
def test_created_request_writes_exactly_one_trigger(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB40001")
    trigger = Trigger.objects.get()
    assert trigger.deployment_name == deployments.ASSEMBLY_ANALYSIS
    assert trigger.parameters == {"request_id": request.pk}
    assert trigger.status == Trigger.Status.PENDING
    assert str(request.pk) in trigger.idempotency_key
    assert callbacks == []  # nothing runs in the saving thread after commit: a service loop dispatches

    request.status = AssemblyAnalysisRequest.Status.RUNNING
    request.save()
    assert Trigger.objects.count() == 1


@pytest.mark.django_db
def test_created_study_writes_a_sync_trigger(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        study = Study.objects.create(ena_accession="PRJEB40002")
    trigger = Trigger.objects.get()
    assert trigger.deployment_name == deployments.STUDY_SYNC and trigger.parameters == {"study_id": study.pk}
    assert trigger.flow_run_name == "study-PRJEB40002"


@pytest.mark.django_db
def test_study_created_from_ena_data_needs_no_sync(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        Study.objects.create(ena_accession="PRJEB40007", last_synced_with_ena=timezone.now())
    assert not Trigger.objects.exists()


@pytest.mark.django_db
def test_rolled_back_save_leaves_no_trigger():
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        AssemblyAnalysisRequest.objects.create(study_accession="PRJEB40003")
        raise RuntimeError("the caller's transaction fails")
    assert not Trigger.objects.exists()


@pytest.fixture
def wakeups():
    stop = threading.Event()
    listener = WakeUps(stop).start()
    yield listener
    stop.set()


@pytest.mark.django_db(transaction=True)
def test_a_committed_request_wakes_the_service_loops_and_dispatch_records_the_flow_run(
    route_to_test_deployment, wakeups, user_client
):
    # Let the listener connect first: a notification sent before LISTEN is not queued for it.
    _poll_until_listening()
    response = user_client.post(
        "/api/assembly-analysis-requests/", {"study_accession": "PRJEB40004"}, format="json"
    )
    assert response.status_code == 201
    assert wakeups.wait(30), "the commit never woke the listener"
    trigger = Trigger.objects.get()
    assert trigger.status == Trigger.Status.PENDING and trigger.attempts == 0

    assert dispatch_pending_triggers() == 1
    trigger.refresh_from_db()
    request = AssemblyAnalysisRequest.objects.get()
    assert trigger.status == Trigger.Status.DISPATCHED and trigger.attempts == 1
    assert request.flow_run_id == trigger.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(trigger.flow_run_id))
    assert flow_run.parameters == {"request_id": request.pk, "environment": deployments.environment()}
    assert flow_run.idempotency_key == trigger.idempotency_key


def _poll_until_listening(timeout: float = 30) -> None:
    def listening() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND pid <> pg_backend_pid()",
                [f"LISTEN {CHANNEL}"],
            )
            return cursor.fetchone()[0] > 0

    poll_until(listening, timeout=timeout, what="the wake-up listener to LISTEN")


class HangingServer:
    """Accepts connections and never answers: Prefect hung. Counts who connected."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/api"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.mark.django_db
@pytest.mark.parametrize("prefect", ["refusing", "hanging"])
def test_prefect_down_never_reaches_the_request_thread_then_one_flow_run(
    prefect, route_to_test_deployment, django_capture_on_commit_callbacks, settings, user_client
):
    hanging = HangingServer() if prefect == "hanging" else None
    settings.PREFECT_API_URL = hanging.url if hanging else UNREACHABLE_PREFECT
    settings.PREFECT_DISPATCH_TIMEOUT_SECONDS = 1
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = user_client.post(
                "/api/assembly-analysis-requests/", {"study_accession": "PRJEB40005"}, format="json"
            )
        assert response.status_code == 201
        assert response.json()["flow_run_id"] is None
        trigger = Trigger.objects.get()
        assert trigger.status == Trigger.Status.PENDING and trigger.attempts == 0
        if hanging:
            assert hanging.accepted == [], "the request thread connected to Prefect"

        # The service loop's dispatcher meets the outage: the trigger stays pending, backing off.
        assert dispatch_pending_triggers() == 0
        trigger.refresh_from_db()
        assert trigger.status == Trigger.Status.PENDING and trigger.attempts == 1
        assert trigger.last_error and trigger.next_attempt_at and trigger.next_attempt_at > timezone.now()
        assert dispatch_pending_triggers() == 0  # not due yet: backoff
    finally:
        if hanging:
            hanging.close()

    settings.PREFECT_API_URL = ""  # back to the real server
    Trigger.objects.update(next_attempt_at=timezone.now())
    assert dispatch_pending_triggers() == 1
    trigger.refresh_from_db()
    first_run = trigger.flow_run_id
    assert trigger.status == Trigger.Status.DISPATCHED and first_run
    request = AssemblyAnalysisRequest.objects.get()
    assert request.flow_run_id == first_run

    # A dispatcher that died after Prefect created the run but before recording it sends again: same run.
    Trigger.objects.update(status=Trigger.Status.PENDING, flow_run_id="")
    again = dispatch_trigger(trigger.pk)
    assert again is not None and again.flow_run_id == first_run
    assert dispatch_pending_triggers() == 0


@pytest.mark.django_db
def test_dispatched_trigger_is_not_sent_again(route_to_test_deployment):
    AssemblyAnalysisRequest.objects.create(study_accession="PRJEB40006")
    assert dispatch_pending_triggers() == 1
    trigger = Trigger.objects.get()
    assert dispatch_trigger(trigger.pk) is None
    trigger.refresh_from_db()
    assert trigger.attempts == 1


def test_deployment_names_come_from_the_registry():
    from workflows.pipelines.registry import FLOWS

    assert (
        deployments.ASSEMBLY_ANALYSIS == "Assemble and analyse a study/assembly_analysis_request_deployment"
    )
    for full_name, (flow_fn, deployment_name) in FLOWS.items():
        assert full_name == f"{flow_fn.name}/{deployment_name}"


@pytest.mark.django_db(transaction=True)
def test_a_request_created_through_the_api_path_never_commits_without_its_trigger(monkeypatch, user):
    from analyses.services import create_assembly_analysis_request

    def broken_outbox(*args, **kwargs):
        raise RuntimeError("the trigger could not be written")

    monkeypatch.setattr(Trigger.objects, "create", broken_outbox)
    with pytest.raises(RuntimeError):
        create_assembly_analysis_request(study_accession="PRJEB40003", requester=user)
    assert not AssemblyAnalysisRequest.objects.filter(study_accession="PRJEB40003").exists()


@pytest.mark.django_db(transaction=True)
def test_a_dispatched_flow_run_carries_its_environment(route_to_test_deployment):
    AssemblyAnalysisRequest.objects.create(study_accession="PRJEB40007")
    assert dispatch_pending_triggers() == 1
    trigger = Trigger.objects.get()
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(trigger.flow_run_id))
        assert flow_run.deployment_id is not None
        deployment = client.read_deployment(flow_run.deployment_id)
    assert deployment.name == f"unit-tests@{deployments.environment()}"
    assert flow_run.parameters["environment"] == deployments.environment()
    # Named after whose it is, not "aggressive-quokka".
    assert flow_run.name == trigger.flow_run_name == f"request-{trigger.parameters['request_id']}-PRJEB40007"
    assert deployments.environment_tag() in flow_run.tags
    assert trigger.idempotency_key.startswith(f"{deployments.environment()}:")
