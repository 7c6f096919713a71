"""Syncing a study with ENA (the stub, serving the demo's fixtures) while other passes sync it too."""

import contextlib
import threading

import pytest
from django.db import connection

from analyses.models import Run, Study
from tests.workflows.pipeline_inputs import check_run_usable
from workflows.ena import study_sync
from workflows.ena.client import EnaClient

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_syncs_of_a_new_study_make_it_once(demo_stub, monkeypatch):
    # Scenario (b) of bench/scale.py: eight first passes of requests on one new study synced it at once, and all but
    # one failed on the study's unique accession. The barrier holds each sync between its lookup of the study and
    # its insert until the other has looked too, or for 2 s if the other cannot get that far.
    _, base_url = demo_stub
    looked = threading.Barrier(2)
    real_now = study_sync.timezone.now

    def now_once_both_looked():
        with contextlib.suppress(threading.BrokenBarrierError):
            looked.wait(timeout=2)
        return real_now()

    monkeypatch.setattr(study_sync.timezone, "now", now_once_both_looked)
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            with EnaClient(base_url, retries=0) as ena:
                study_sync.sync_study("PRJEB00001", ena, check_run=check_run_usable)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sync) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Study.objects.filter(ena_accession="PRJEB00001").count() == 1
    assert Run.objects.filter(study__ena_accession="PRJEB00001").count() == 2
