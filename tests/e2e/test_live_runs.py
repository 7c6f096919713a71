"""The sweep never takes a live flow run for a dead one, and a run whose suspension is refused ends quietly.

Every flow process here stops itself (SIGSTOP, PREFECT_UTILS_FAULT_POINT=before_suspend:stop) just before it
suspends: after its last pass and its artifacts, the moment the sweep once rescheduled live runs in (issue 19).
"""

import os
import signal
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from prefect.client.orchestration import get_client

from analyses.models import AssemblyAnalysisRequest
from tests.slurm_support import poll_until
from tests.stack import FlowsServer, flow_run_logs, flow_run_of, post_request, request_status, suspended
from workflows.orchestration.recovery import sweep
from workflows.outbox import prefect_api

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


@pytest.fixture
def flows_server_env(flows_server_env):
    return {
        **flows_server_env,
        "PREFECT_UTILS_FAULT_POINT": "before_suspend:stop",
        # serve_flows sweeps once as it starts, then leaves the sweeping to the test.
        "WORKFLOWS_SWEEP_INTERVAL_SECONDS": "3600",
    }


def stopped_flow_process(server: FlowsServer, *, not_pid: int | None = None) -> int | None:
    for pid in server.flow_processes():
        if pid == not_pid:
            continue
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            continue
        if state == "T":
            return pid
    return None


def states_of(request: AssemblyAnalysisRequest) -> list[str]:
    """Every state the request's flow run has been in."""
    with get_client(sync_client=True) as client:
        return [state.type.value for state in client.read_flow_run_states(uuid.UUID(request.flow_run_id))]


def test_a_run_between_its_last_pass_and_its_suspension_is_not_rescheduled(flows_server, user_client):
    request = post_request(user_client, "PRJEB00001")
    pid = poll_until(
        lambda: stopped_flow_process(flows_server), timeout=120, what="the run to reach its suspend"
    )
    try:
        # As late as a sweep can come: the run has been RUNNING for longer than the stall time.
        report = sweep(now=timezone.now() + timedelta(seconds=settings.WORKFLOWS_STALL_SECONDS + 1))
        assert report.rescheduled == []
        assert flow_run_of(request).state.type.value == "RUNNING"
    finally:
        os.kill(pid, signal.SIGCONT)
    poll_until(lambda: suspended(request), timeout=60, what="the run to suspend")
    assert "FAILED" not in states_of(request)


def test_a_run_whose_suspension_is_refused_exits_quietly_and_runs_again(flows_server, user_client):
    request = post_request(user_client, "PRJEB00002")
    first = poll_until(
        lambda: stopped_flow_process(flows_server), timeout=120, what="the run to reach its suspend"
    )
    # What the sweep did to live runs before this was fixed (or an operator in the Prefect UI): the run goes back
    # to the queue under its process, whose suspension Prefect then refuses.
    prefect_api.reschedule_flow_run(str(request.flow_run_id), "rescheduled under a live process by the test")
    os.kill(first, signal.SIGCONT)

    # The refused run's process leaves the run as it found it; the runner starts the run again, and that pass
    # reaches its own suspension, or finishes the request if its last job ended meanwhile (a loaded machine).
    def started_again() -> str | None:
        second = stopped_flow_process(flows_server, not_pid=first)
        if second is not None:
            os.kill(second, signal.SIGCONT)
            return "suspending"
        return "finished" if request_status(request) == "completed" else None

    if poll_until(started_again, timeout=120, what="the run to start again") == "suspending":
        poll_until(lambda: suspended(request), timeout=60, what="the run to suspend")
    assert not {"FAILED", "CRASHED"} & set(states_of(request))
    logs = flow_run_logs(request)
    assert not [log.message for log in logs if log.level >= 40 or "Traceback" in log.message]
