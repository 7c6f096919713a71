"""Outages of every component while a request waits, against the real stack: nothing fails, every request ends.

Each fault lasts OUTAGE_SECONDS (CHAOS_OUTAGE_SECONDS), and for the faults squeue sees, until the poller has
reported the outage.
The fetch job is held RUNNING by the stub's gate, the flow run suspends, then the fault begins, the job ends
during it, and the fault ends: the request must complete with every step on its first attempt (no job marked
failed because the orchestrator had a bad minute) and one Slurm job per submission key.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from django.db import connections

from analyses.models import Analysis, AssemblyAnalysisRequest
from tests.faults import OUTAGE_SECONDS, restart_postgres, start_slurm_daemon, stop_slurm_daemon
from tests.slurm_support import poll_until
from tests.stack import (
    assert_one_slurm_job_per_key,
    linger_past_a_held_job,
    post_request,
    request_status,
    running_job,
    suspended,
)
from workflows.models import ClusterJob, PollerLease

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.disruptive, linger_past_a_held_job]


@contextmanager
def daemon_down(daemon: str) -> Iterator[None]:
    stop_slurm_daemon(daemon)
    try:
        yield
    finally:
        start_slurm_daemon(daemon)


@contextmanager
def postgres_restarted() -> Iterator[None]:
    restart_postgres()
    yield


# Faults the poller must see (squeue fails): the test proves the outage was met, not slept through.
SEEN_BY_THE_POLLER = {"munge-restart"}

FAULTS: dict[str, Callable[[], AbstractContextManager[None]]] = {
    "postgres-restart": postgres_restarted,
    "slurmdbd-down": lambda: daemon_down("dbd"),
    "munge-restart": lambda: daemon_down("munge"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_an_outage_while_a_request_waits_fails_nothing(fault, flows_server, gated_stub, user_client):
    stub, _ = gated_stub
    stub.fastq_gate.clear()  # the fetch job blocks in curl: RUNNING on Slurm until the gate opens
    request = post_request(user_client, "PRJEB00002")
    held = poll_until(lambda: running_job(request), timeout=120, what="the fetch job to run")
    poll_until(lambda: suspended(request), timeout=60, what="the flow run to suspend while its job runs")

    with FAULTS[fault]():
        began = time.monotonic()
        stub.fastq_gate.set()  # the job ends during the outage
        if fault in SEEN_BY_THE_POLLER:
            poll_until(
                lambda: PollerLease.objects.exclude(last_error="").exists(),
                timeout=120,  # a poll retries an outage (SLURM_COMMAND_RETRIES) before it reports it
                what="the poller to meet the outage",
            )
        # The length of the outage is the fault itself, not a wait for anything.
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
    connections.close_all()  # the test's own connection may have been cut with the others
    ended_at, outage = time.monotonic(), time.monotonic() - began

    poll_until(
        lambda: request_status(request) in {"completed", "failed"}, timeout=400, what="the request to finish"
    )
    print(f"{fault}: down {outage:.1f} s; request finished {time.monotonic() - ended_at:.1f} s after")
    assert request.status == "completed", request.status_detail
    held.refresh_from_db()
    assert held.state == "COMPLETED" and held.attempt == 1
    jobs = ClusterJob.objects.filter(request=request)
    assert set(jobs.values_list("state", flat=True)) == {"COMPLETED"}
    assert not jobs.filter(attempt__gt=1).exists()
    assert_one_slurm_job_per_key(request)
    assert Analysis.objects.filter(request=request).count() == 2  # by the assembly and the analysis chained


def test_a_controller_outage_fails_no_waiting_step_and_holds_submission_back(
    flows_server, gated_stub, user_client
):
    """slurmctld down while one request waits on a job that ends meanwhile, and another request's first step is
    due: the first job is not failed, the second step waits (back-pressure, not a refusal), both complete."""
    stub, _ = gated_stub
    stub.fastq_gate.clear()
    waiting = post_request(user_client, "PRJEB00002")
    held = poll_until(lambda: running_job(waiting), timeout=120, what="the fetch job to run")
    poll_until(lambda: suspended(waiting), timeout=60, what="the flow run to suspend while its job runs")

    stop_slurm_daemon("ctld")
    began = time.monotonic()
    try:
        stub.fastq_gate.set()  # the waiting request's job ends during the outage
        submitting = post_request(user_client, "PRJEB00001")
        poll_until(
            lambda: ClusterJob.objects.filter(request=submitting).exists(),
            timeout=120,
            what="the second request's first steps to be recorded in the ledger",
        )
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))  # the outage itself
        assert not ClusterJob.objects.filter(request__in=[waiting, submitting], state="FAILED").exists()
        # Its steps met the outage: recorded, not on the cluster (an sbatch that got through would have an id).
        assert not ClusterJob.objects.filter(request=submitting).exclude(slurm_job_id=None).exists()
        assert request_status(submitting) in {"pending", "running"}, submitting.status_detail
    finally:
        start_slurm_daemon("ctld")
    ended_at, outage = time.monotonic(), time.monotonic() - began

    # Each run is analysed by the assembly and by the analysis chained after it.
    for request, analyses in ((waiting, 2), (submitting, 4)):

        def finished(request: AssemblyAnalysisRequest = request) -> bool:
            return request_status(request) in {"completed", "failed"}

        poll_until(finished, timeout=400, what="the request to finish")
        assert request.status == "completed", request.status_detail
        jobs = ClusterJob.objects.filter(request=request)
        assert set(jobs.values_list("state", flat=True)) == {"COMPLETED"}
        assert not jobs.filter(attempt__gt=1).exists()
        assert_one_slurm_job_per_key(request)
        assert Analysis.objects.filter(request=request).count() == analyses
    held.refresh_from_db()
    assert held.attempt == 1
    print(
        f"slurmctld-down: down {outage:.1f} s; both requests finished {time.monotonic() - ended_at:.1f} s after"
    )
