"""Two processes sweeping at once (a poller lease that expired under a long sweep): one new flow run a request."""

import io
import threading
import time
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from analyses.models import AssemblyAnalysisRequest
from workflows.models import Trigger
from workflows.orchestration import recovery
from workflows.orchestration.recovery import SweepReport, sweep
from workflows.orchestration.request_lock import sweep_lock
from workflows.outbox import prefect_api

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_concurrent_sweeps_start_one_new_flow_run_per_request(prefect_server, monkeypatch):
    requests = []
    for _ in range(3):
        request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
        # A run Prefect no longer knows: the sweep's answer is a new flow run under a new key.
        request.status = AssemblyAnalysisRequest.Status.RUNNING
        request.request_metadata = {"flow_run_id": str(uuid.uuid4())}
        request.save()
        requests.append(request)
    Trigger.objects.all().delete()  # the requests' own triggers would be "awaiting dispatch"

    # Both sweeps are held at their Prefect read until both reached it, or until one of them is over: so they
    # overlap as far as the code lets them. The real read still runs.
    real_read = prefect_api.read_flow_runs
    both_there = threading.Event()
    one_over = threading.Event()
    reached = []

    def read_together(ids):
        reached.append(threading.current_thread().name)
        if len(reached) == 2:
            both_there.set()
        deadline = time.monotonic() + 60
        while not (both_there.is_set() or one_over.is_set()) and time.monotonic() < deadline:
            both_there.wait(0.05)
        return real_read(ids)

    monkeypatch.setattr(recovery.prefect_api, "read_flow_runs", read_together)
    reports: dict[str, SweepReport] = {}
    errors: list[BaseException] = []

    def sweeper() -> None:
        try:
            reports[threading.current_thread().name] = sweep()
        except BaseException as exc:  # shown by the assertion below, not lost in the thread
            errors.append(exc)
        finally:
            one_over.set()
            connection.close()

    threads = [threading.Thread(target=sweeper, name=f"sweeper-{n}") for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(reports) == 2

    for request in requests:
        triggers = Trigger.objects.filter(source=f"analyses.assemblyanalysisrequest:{request.pk}")
        assert triggers.count() == 1, [t.idempotency_key for t in triggers]
        assert ":gen2:" in triggers.get().idempotency_key
    restarted = sorted(pk for report in reports.values() for pk in report.restarted)
    assert restarted == sorted(r.pk for r in requests)


def test_sweeping_by_hand_while_the_service_loop_sweeps_says_so():
    # It used to print "resumed: none" and so on, as if nothing had needed doing.
    with sweep_lock() as ours:
        assert ours
        with pytest.raises(CommandError, match="Another process is sweeping"):
            call_command("sweep_requests")
    out = io.StringIO()
    call_command("sweep_requests", stdout=out)
    assert "resumed: none" in out.getvalue()
