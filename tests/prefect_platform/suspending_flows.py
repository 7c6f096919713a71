"""Flows that suspend as the service's do, served for tests/prefect_platform/test_suspend_resume.py.

    python -m tests.prefect_platform.suspending_flows <suffix>

serves them as deployments named `<flow>/suspend-<suffix>` until SIGTERM. Each flow appends a line to its `trace`
file at every start of its body and after each suspension it gets past, so a test reads what the server made of it.
"""

import sys
import uuid
from pathlib import Path
from typing import Any, cast

from prefect import flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.flow_runs import suspend_flow_run

from prefect_utils.serving import serve_deployments


def _trace(path: str, line: str) -> None:
    with Path(path).open("a") as out:
        out.write(line + "\n")


def _hook(flow, flow_run: FlowRun, state: State) -> None:
    _trace(flow_run.parameters["trace"], f"hook: {state.type.value}")


@flow(name="emgapi-platform-suspend", on_cancellation=[_hook], on_failure=[_hook])
def suspend_then_go_on(trace: str, key: str | None = None, timeout: int | None = None) -> str:
    """Suspends under `key` (a fresh one per start if None, as the service does), then records that it went on."""
    _trace(trace, "start")
    suspend_flow_run(timeout=timeout, key=key or f"wait-{uuid.uuid4().hex}")
    _trace(trace, "went on")
    return "done"


def deployments(suffix: str) -> list[RunnerDeployment]:
    return [
        cast(
            RunnerDeployment,
            suspend_then_go_on.to_deployment(
                name=f"suspend-{suffix}", paused=False, entrypoint_type=EntrypointType.MODULE_PATH
            ),
        )
    ]


def main(argv: list[str]) -> Any:
    serve_deployments(deployments(argv[0]), limit=4)


if __name__ == "__main__":
    # Through its module name: flows defined in `__main__` would be deployed with `__main__` as their entrypoint,
    # which a flow-run process cannot load.
    from tests.prefect_platform import suspending_flows

    suspending_flows.main(sys.argv[1:])
