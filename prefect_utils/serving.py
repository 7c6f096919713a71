"""Serving deployments in this process (Prefect's `serve`), with a SIGTERM that exits quietly.

Prefect's runner answers SIGTERM by calling `Runner.stop()` from its own event loop's thread, where the call only
creates the `astop` coroutine and drops it ("coroutine 'Runner.astop' was never awaited" at every `make down`);
then it exits. Exiting is all that handler achieves, so that is all this one does. Flow-run processes are left as
after a kill: suspended runs need none, and the sweep reschedules the others.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from prefect.exceptions import TerminationSignal
from prefect.runner import Runner

__all__ = ["serve_deployments"]


class _Runner(Runner):
    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        self._logger.info("SIGTERM received, shutting down")
        sys.exit(0)


def serve_deployments(deployments: Sequence[Any], *, limit: int) -> None:
    """Serve `deployments` (RunnerDeployments) with at most `limit` flow-run processes, until SIGTERM or Ctrl-C."""
    # Not paused on the way out: another runner may serve the same deployments, and a paused one takes no runs.
    runner = _Runner(limit=limit, pause_on_shutdown=False)
    for deployment in deployments:
        runner.add_deployment(deployment)
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal) as exc:
        runner._logger.info("Received %s, shutting down", type(exc).__name__)
