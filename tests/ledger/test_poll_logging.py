"""The poller logs a job's state when it changes, and a job that runs for days only at a slow interval."""

import logging
from dataclasses import replace

import pytest

from prefect_utils.poller import Poller
from tests.ledger.specs import spec_in
from tests.slurm_support import poll_until

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]


def job_lines(caplog, job_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "prefect_utils.poller" and f"job {job_id}" in r.getMessage()
    ]


def test_a_running_job_is_logged_once_then_at_the_slow_interval(service, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="prefect_utils.poller")
    record = service.submit_once(spec_in(tmp_path, "sleep 30"))
    poller = Poller(service)  # one poller throughout: it holds the lease, so every tick polls
    poll_until(
        lambda: (
            poller.tick() and service.ledger.records([(record.key, record.attempt)])[0].state == "RUNNING"
        ),
        timeout=60,
        what="the job to run",
    )
    for _ in range(5):  # five more polls of an unchanged RUNNING job
        assert poller.tick() == []
    lines = job_lines(caplog, record.job_id)
    assert [line for line in lines if line.endswith(": RUNNING")] == [
        f"Slurm job {record.job_id}, test-job attempt 1: RUNNING"
    ]
    assert not any("still RUNNING" in line for line in lines)

    # The slow interval, shortened: the next poll reports it with how long it has run and its last output line.
    service.poll = replace(service.poll, still_running_report_seconds=0)
    poller.tick()
    (still,) = [line for line in job_lines(caplog, record.job_id) if "still RUNNING" in line]
    assert still.startswith(f"Slurm job {record.job_id} still RUNNING after 0 h 00 min; log tail: ")

    service.client.cancel([record.job_id])
    poll_until(
        lambda: (
            poller.tick() is not None
            and any("CANCELLED" in line for line in job_lines(caplog, record.job_id))
        ),
        timeout=60,
        what="the cancellation to be logged",
    )
