"""What `serve_flows` runs beside the served deployments: the trigger dispatcher, the poller, the sweep."""

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from prefect_utils.jobs import Poller
from workflows.dispatch import dispatch_pending_triggers
from workflows.recovery import carry_out_pending_cancellations, resume_requests, sweep
from workflows.services import build_jobs_service
from workflows.wakeup import WakeUps

logger = logging.getLogger(__name__)


def run_service_loop(stop: threading.Event) -> None:
    """Until `stop`: dispatch due triggers and carry out cancellations (every process, at once when a save wakes
    it); poll Slurm, resume the requests whose jobs changed and sweep (only the process holding the poller
    lease, so two hosts never poll or sweep twice)."""
    poller = Poller(build_jobs_service())
    wakeups = WakeUps(stop).start()
    next_dispatch = next_sweep = 0.0
    woken = False
    # How often the loop wakes to see what is due; polling itself follows the poller's adaptive interval.
    step = min(settings.SLURM_POLL_MIN_SECONDS, settings.WORKFLOWS_DISPATCH_INTERVAL_SECONDS)
    try:
        while not stop.is_set():
            close_old_connections()  # a restarted PostgreSQL leaves broken connections: drop them each round
            now = time.monotonic()
            if woken or now >= next_dispatch:
                _guarded(dispatch_pending_triggers)
                next_dispatch = now + settings.WORKFLOWS_DISPATCH_INTERVAL_SECONDS
            if woken:
                _guarded(carry_out_pending_cancellations)
            if _guarded(poller.due):
                changed = _guarded(poller.tick)
                ended = {r.labels.get("request_id") for r in changed or () if r.is_terminal} - {None}
                if ended:
                    _guarded(resume_requests, ended)
            if poller.holding and now >= next_sweep:
                _guarded(sweep)
                next_sweep = now + settings.WORKFLOWS_SWEEP_INTERVAL_SECONDS
            woken = wakeups.wait(step)
    finally:
        _guarded(poller.release)


def _guarded(function, *args):
    try:
        return function(*args)
    except Exception:  # one bad round (PostgreSQL or Prefect restarting, say) must not end the loop
        logger.exception("%s failed; retrying next round", function.__name__)
        return None
