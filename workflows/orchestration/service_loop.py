"""What `serve_flows` runs beside the served deployments: the trigger dispatcher and the notifications (mail,
webhooks); the poller and the sweep."""

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from prefect_utils.poller import Poller
from workflows.orchestration.cluster import build_jobs_service
from workflows.orchestration.recovery import (
    carry_out_pending_cancellations,
    resume_reviewed_requests,
    sweep,
    wake_requests,
)
from workflows.outbox.dispatch import dispatch_pending_triggers
from workflows.outbox.notify import send_due_notifications
from workflows.outbox.wakeup import WakeUps
from workflows.outbox.webhooks import deliver_due_webhooks

logger = logging.getLogger(__name__)


def run_service_loop(stop: threading.Event) -> None:
    """Until `stop`, two loops in two threads that never wait on each other.

    The dispatch loop starts the flow runs of due triggers (every process, at once when a save wakes it). The
    cluster loop carries out cancellations, polls Slurm, resumes the requests whose jobs changed and sweeps
    (polling and sweeping only in the process holding the poller lease, so two hosts never poll or sweep twice).
    They are apart because a Slurm command hangs until its timeout while the controller is down: in one loop, a
    request POSTed during the outage waited 36 s for its flow run behind a poll (tests/chaos/test_outages.py).
    """
    cluster = threading.Thread(target=_cluster_loop, args=(stop,), name="service-loop-cluster", daemon=True)
    cluster.start()
    try:
        _dispatch_loop(stop)
    finally:
        # Whatever ended the dispatch loop (`stop`, or Ctrl-C in `manage.py service_loop`) ends the cluster loop,
        # which hands the poller lease on; give it the time of one Slurm command.
        stop.set()
        cluster.join(timeout=30)


def _dispatch_loop(stop: threading.Event) -> None:
    wakeups = WakeUps(stop).start()
    while not stop.is_set():
        close_old_connections()  # a restarted PostgreSQL leaves broken connections: drop them each round
        _guarded(dispatch_pending_triggers)
        _guarded(send_due_notifications)
        _guarded(deliver_due_webhooks)
        wakeups.wait(settings.WORKFLOWS_DISPATCH_INTERVAL_SECONDS)


def _cluster_loop(stop: threading.Event) -> None:
    poller = Poller(build_jobs_service())
    wakeups = WakeUps(stop).start()
    next_sweep = 0.0
    woken = False
    # How often the loop wakes to see what is due; polling itself follows the poller's adaptive interval.
    step = settings.SLURM_POLL_MIN_SECONDS
    try:
        while not stop.is_set():
            close_old_connections()
            now = time.monotonic()
            if woken:
                _guarded(carry_out_pending_cancellations)
                _guarded(resume_reviewed_requests)
            if _guarded(poller.due):
                changed = _guarded(poller.tick)
                ended = {r.labels.get("request_id") for r in changed or () if r.is_terminal} - {None}
                if ended:
                    _guarded(wake_requests, ended)
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
