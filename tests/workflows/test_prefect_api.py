"""The web side's Prefect calls: one open client per thread, no client-side retries, flow runs read lean."""

import threading
import uuid

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES
from prefect.states import Suspended

from workflows.outbox import prefect_api


@flow(name="emgapi-test-prefect-api")
def _unserved(request_id: int = 0, environment: str = "") -> None:
    """Never run: its flow runs only carry a state."""


def test_a_thread_s_calls_share_one_open_client(prefect_server):
    with prefect_api.prefect_client() as first:
        pass
    with prefect_api.prefect_client() as again:
        assert again is first and again.hello().status_code == 200  # still open after the first block
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(prefect_api.prefect_client().__enter__()))
    thread.start()
    thread.join()
    assert other and other[0] is not first  # an httpx client is not shared between threads


def test_calls_are_not_retried_and_nothing_else_is_changed(prefect_server):
    outside = PREFECT_CLIENT_MAX_RETRIES.value()
    assert outside != 0  # else this test proves nothing
    with prefect_api.prefect_client():
        assert PREFECT_CLIENT_MAX_RETRIES.value() == 0
    assert PREFECT_CLIENT_MAX_RETRIES.value() == outside


def test_a_flow_run_is_read_with_its_state_and_parameters(prefect_server):
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(flow=_unserved, parameters={"request_id": 7, "environment": "e"})
        client.set_flow_run_state(flow_run.id, Suspended(timeout_seconds=None), force=True)
        seen = client.read_flow_run(flow_run.id).state
    try:
        runs = prefect_api.read_flow_runs([str(flow_run.id), str(uuid.uuid4())])
        assert list(runs) == [str(flow_run.id)]
        run = runs[str(flow_run.id)]
        assert seen is not None
        assert (run.state_type, run.state_timestamp) == (seen.type, seen.timestamp)
        assert run.parameters == {"request_id": 7, "environment": "e"}
    finally:
        with get_client(sync_client=True) as client:
            client.delete_flow_run(flow_run.id)
