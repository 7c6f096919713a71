"""The service loop of serve_flows: dispatching never waits on Slurm."""

import threading
import time

import pytest

from tests.slurm_support import poll_until
from workflows.orchestration import service_loop


@pytest.mark.django_db(transaction=True)
def test_dispatch_goes_on_while_a_slurm_poll_hangs(monkeypatch, settings):
    """With slurmctld down, squeue hangs until its timeout (36 s measured with two attempts); the flow runs of
    requests POSTed meanwhile must not wait for it. The poller here is a stand-in whose tick hangs as that squeue
    does (a real outage is tests/chaos/test_outages.py), and dispatching is counted, not sent to Prefect."""
    settings.WORKFLOWS_DISPATCH_INTERVAL_SECONDS = 0.05
    settings.SLURM_POLL_MIN_SECONDS = 0.05
    polling = threading.Event()
    controller_back = threading.Event()

    class HangingPoller:
        holding = False

        def __init__(self, jobs) -> None:
            pass

        def due(self) -> bool:
            return True

        def tick(self) -> list:
            polling.set()
            controller_back.wait(30)
            return []

        def release(self) -> None:
            pass

    dispatched: list[float] = []
    monkeypatch.setattr(service_loop, "Poller", HangingPoller)
    monkeypatch.setattr(service_loop, "build_jobs_service", lambda: None)
    monkeypatch.setattr(
        service_loop, "dispatch_pending_triggers", lambda: dispatched.append(time.monotonic())
    )

    stop = threading.Event()
    loop = threading.Thread(target=service_loop.run_service_loop, args=(stop,), daemon=True)
    loop.start()
    try:
        poll_until(polling.is_set, timeout=30, what="the poll to start")
        before = len(dispatched)
        poll_until(
            lambda: len(dispatched) >= before + 3, timeout=10, what="dispatch rounds while the poll hangs"
        )
        assert not controller_back.is_set()
    finally:
        stop.set()
        controller_back.set()
        loop.join(timeout=30)
    assert not loop.is_alive()


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_hands_the_poller_lease_on_at_once(monkeypatch, settings):
    """`manage.py service_loop` runs the loop in its main thread, where Ctrl-C lands in the dispatch loop; the
    cluster loop must still end and release the lease, not be left to die with the process."""
    settings.SLURM_POLL_MIN_SECONDS = 0.05
    released = threading.Event()

    class RecordingPoller:
        holding = False

        def __init__(self, jobs) -> None:
            pass

        def due(self) -> bool:
            return False

        def release(self) -> None:
            released.set()

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(service_loop, "Poller", RecordingPoller)
    monkeypatch.setattr(service_loop, "build_jobs_service", lambda: None)
    monkeypatch.setattr(service_loop, "dispatch_pending_triggers", interrupted)

    with pytest.raises(KeyboardInterrupt):
        service_loop.run_service_loop(threading.Event())
    assert released.is_set()
