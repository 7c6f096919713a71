"""What the service's waiting rests on, asked of the real Prefect server and a served deployment (PLATFORM-FACTS.md:
suspend / resume): each test names the behaviour, so an upgrade of Prefect that changes one fails by its name.

- a key that already fired makes `suspend_flow_run` return at once: every suspension needs a fresh key;
- a resumed run starts its body from the top, in a new process, under the same flow run id;
- resuming a run that is not suspended is refused, not an error (the service's `resume_flow_run` says False);
- cancelling a suspended run ends it CANCELLED at once and runs no `on_cancellation` hook (no process has it);
- a suspension with a timeout that expires ends the run FAILED, with no `on_failure` hook; the service suspends
  with none.
"""

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from tests.slurm_support import ROOT, poll_until
from workflows.outbox import prefect_api

pytestmark = pytest.mark.prefect_server
FLOW = "emgapi-platform-suspend"


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory) -> Iterator[str]:
    """The suspending flow served by a runner of its own; the deployment's full name."""
    suffix = uuid.uuid4().hex[:8]
    log = (tmp_path_factory.mktemp("runner") / "runner.log").open("w")
    runner = subprocess.Popen(
        [sys.executable, "-m", "tests.prefect_platform.suspending_flows", suffix],
        cwd=ROOT,
        env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    name = f"{FLOW}/suspend-{suffix}"

    def registered() -> bool:
        with get_client(sync_client=True) as client:
            try:
                client.read_deployment_by_name(name)
            except Exception:  # not yet
                return False
        return True

    try:
        poll_until(registered, timeout=90, what="the test runner to register its deployment")
        yield name
    finally:
        os.killpg(runner.pid, signal.SIGTERM)
        runner.wait(timeout=30)
        log.close()


def start(deployment: str, trace: Path, **parameters) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        run = client.create_flow_run_from_deployment(found.id, parameters={"trace": str(trace), **parameters})
    return str(run.id)


def flow_run(run_id: str) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def until(run_id: str, what: str, check, timeout: float = 90) -> FlowRun:
    return poll_until(lambda: (run := flow_run(run_id)) and check(run) and run, timeout=timeout, what=what)


def suspended(run: FlowRun) -> bool:
    return bool(run.state and run.state.type.value == "PAUSED" and run.state.name == "Suspended")


def lines(trace: Path) -> list[str]:
    return trace.read_text().splitlines() if trace.exists() else []


def test_a_key_that_already_fired_returns_at_once_so_each_suspension_needs_a_fresh_key(served, tmp_path):
    fixed, fresh = tmp_path / "fixed", tmp_path / "fresh"
    with_fixed = start(served, fixed, key="wait")
    with_fresh = start(served, fresh)
    for run_id in (with_fixed, with_fresh):
        until(run_id, "the run to suspend", suspended)
        assert prefect_api.resume_flow_run(run_id)
    # Resumed, each body starts from the top in a new process: under the key that fired, the suspension returns at
    # once and the run goes on past its wait; under a fresh key it suspends again, as a reconciler must.
    until(with_fixed, "the fixed-key run to finish", lambda run: run.state and run.state.is_completed())
    assert lines(fixed) == ["start", "start", "went on"]
    rerun = until(
        with_fresh,
        "the fresh-key run to suspend again",
        lambda run: suspended(run) and len(lines(fresh)) == 2,
    )
    assert (
        lines(fresh) == ["start", "start"] and str(rerun.id) == with_fresh
    )  # same flow run, body from the top


def test_resuming_a_run_that_is_not_suspended_is_refused_not_an_error(served, tmp_path):
    run_id = start(served, tmp_path / "trace", key="wait")
    until(run_id, "the run to suspend", suspended)
    assert prefect_api.resume_flow_run(run_id) is True
    assert prefect_api.resume_flow_run(run_id) is False  # resumed already: the sweep's second resume
    until(run_id, "the run to finish", lambda run: run.state and run.state.is_completed())
    assert prefect_api.resume_flow_run(run_id) is False  # finished


def test_cancelling_a_suspended_run_ends_it_at_once_and_runs_no_cancellation_hook(served, tmp_path):
    trace = tmp_path / "trace"
    run_id = start(served, trace)
    until(run_id, "the run to suspend", suspended)
    prefect_api.cancel_flow_run(run_id)
    until(run_id, "the run to be cancelled", lambda run: run.state and run.state.is_cancelled(), timeout=30)
    assert lines(trace) == ["start"]  # no process ran the hook: the service's cleanup cannot live in one


def test_a_suspension_that_times_out_fails_the_run_without_its_failure_hook(served, tmp_path):
    trace = tmp_path / "trace"
    run_id = start(served, trace, timeout=1)
    until(run_id, "the run to suspend", suspended)
    failed = until(
        run_id, "the suspension to expire", lambda run: run.state and run.state.is_failed(), timeout=120
    )
    assert failed.state and "never resumed" in (failed.state.message or "")
    assert lines(trace) == ["start"]  # the service suspends with no timeout: a waiting request never fails so
