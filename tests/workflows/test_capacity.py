"""Cluster capacity as a fair queue: atomic claims, round-robin grants, grants that lapse (no Slurm needed: claiming
a slot is inserting its ledger row, and the cap counts rows)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from prefect_utils.ledger import JobSubmission
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState
from prefect_utils.submission import SlurmJobs, ThrottleConfig
from workflows.models import ClusterJob, RequestProgress
from workflows.orchestration.capacity import claim_slots, grant_free_slots
from workflows.orchestration.ledger import DjangoJobLedger


def jobs_service(max_active: int) -> SlurmJobs:
    # The client is never called here: claims and grants read the ledger only.
    return SlurmJobs(DjangoJobLedger(), SlurmClient(), throttle=ThrottleConfig(max_active_jobs=max_active))


def wanting(request: AssemblyAnalysisRequest, count: int) -> list[JobSubmission]:
    return [
        JobSubmission(
            f"{request.pk:08d}{i:032d}", 1, {"name": f"step-{i}"}, labels={"request_id": request.pk}
        )
        for i in range(count)
    ]


def new_request(accession: str = "PRJEB00001") -> AssemblyAnalysisRequest:
    return AssemblyAnalysisRequest.objects.create(
        study_accession=accession, status=AssemblyAnalysisRequest.Status.RUNNING
    )


def free_one_slot(request: AssemblyAnalysisRequest) -> None:
    row = ClusterJob.objects.filter(request=request, state=JobState.NEW).first()
    assert row is not None
    ClusterJob.objects.filter(pk=row.pk).update(state=JobState.COMPLETED, state_changed_at=timezone.now())


def claimed(request: AssemblyAnalysisRequest) -> int:
    return ClusterJob.objects.filter(request=request).count()


@pytest.mark.django_db(transaction=True)
def test_concurrent_passes_never_claim_more_than_the_cap():
    requests = [new_request(f"PRJEB0000{i}") for i in range(6)]
    start = threading.Barrier(len(requests))
    errors: list[BaseException] = []

    def one_pass(request: AssemblyAnalysisRequest) -> None:
        try:
            start.wait()
            claim_slots(request.pk, wanting(request, 5), jobs_service(max_active=7), claim=f"c{request.pk}")
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)
        finally:
            connection.close()  # the thread's own connection, or the test database cannot be dropped

    threads = [threading.Thread(target=one_pass, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ClusterJob.objects.count() == 7  # six passes wanted 30 slots at once; the cap is 7
    waiting = sum(RequestProgress.objects.values_list("capacity_wanted", flat=True))
    assert waiting == 30 - 7


@pytest.mark.django_db
def test_a_small_request_after_a_big_one_gets_the_next_freed_slot_and_then_they_alternate():
    jobs = jobs_service(max_active=3)
    big = new_request("PRJEB00001")
    assert len(claim_slots(big.pk, wanting(big, 5000), jobs, claim="big")) == 3  # nobody else waits: all free
    small = new_request("PRJEB00002")
    assert (
        claim_slots(small.pk, wanting(small, 2), jobs, claim="small-1") == []
    )  # the big one waits before it

    free_one_slot(big)
    assert grant_free_slots(jobs) == [small.pk]  # never served before: first in the queue
    # The big request is resumed too (its own job ended), but another request waits: it takes no slot.
    assert claim_slots(big.pk, wanting(big, 5000)[3:], jobs, claim="big-2") == []
    assert len(claim_slots(small.pk, wanting(small, 2), jobs, claim="small-2")) == 1

    order = []
    for _ in range(4):
        free_one_slot(big)
        granted = grant_free_slots(jobs)
        assert len(granted) == 1
        order.append(granted[0])
        request = big if granted[0] == big.pk else small
        claim_slots(
            request.pk, wanting(request, 5000 if request == big else 2)[claimed(request) :], jobs, "c"
        )
    # The big one had waited longest since a grant, then the small one got its last step, then only the big one waits.
    assert order == [big.pk, small.pk, big.pk, big.pk]
    assert claimed(small) == 2
    assert RequestProgress.objects.get(pk=small.pk).capacity_wanted == 0


@pytest.mark.django_db
def test_one_free_slot_is_granted_to_one_request_however_many_wait():
    jobs = jobs_service(max_active=1)
    blocker = new_request("PRJEB00001")
    claim_slots(blocker.pk, wanting(blocker, 1), jobs, claim="blocker")
    waiting = [new_request(f"PRJEB1{i:04d}") for i in range(50)]
    for request in waiting:
        assert claim_slots(request.pk, wanting(request, 2), jobs, claim=f"w{request.pk}") == []
    assert grant_free_slots(jobs) == []  # no slot free

    free_one_slot(blocker)
    granted = grant_free_slots(jobs)
    assert granted == [waiting[0].pk]  # the longest wait
    assert (
        grant_free_slots(jobs) == []
    )  # the slot is reserved for it until its pass takes it or the grant lapses


@pytest.mark.django_db
def test_a_grant_not_taken_in_time_goes_to_the_next_request(settings):
    settings.WORKFLOWS_CAPACITY_GRANT_SECONDS = 60
    jobs = jobs_service(max_active=1)
    blocker, first, second = new_request("PRJEB00001"), new_request("PRJEB00002"), new_request("PRJEB00003")
    claim_slots(blocker.pk, wanting(blocker, 1), jobs, claim="blocker")
    claim_slots(first.pk, wanting(first, 1), jobs, claim="first")
    claim_slots(second.pk, wanting(second, 1), jobs, claim="second")
    free_one_slot(blocker)
    assert grant_free_slots(jobs) == [first.pk]

    # The first request's flow run never came to take it: past the grant's time, the slot goes round again.
    assert grant_free_slots(jobs, now=timezone.now() + timedelta(seconds=61)) == [second.pk]
    assert RequestProgress.objects.get(pk=first.pk).capacity_granted == 0
    assert RequestProgress.objects.get(pk=first.pk).capacity_wanted == 1  # still waiting, behind the others


@pytest.mark.django_db
def test_finished_requests_leave_the_queue():
    jobs = jobs_service(max_active=1)
    blocker, gone = new_request("PRJEB00001"), new_request("PRJEB00002")
    claim_slots(blocker.pk, wanting(blocker, 1), jobs, claim="blocker")
    claim_slots(gone.pk, wanting(gone, 1), jobs, claim="gone")
    AssemblyAnalysisRequest.objects.filter(pk=gone.pk).update(status=AssemblyAnalysisRequest.Status.CANCELLED)
    free_one_slot(blocker)
    assert grant_free_slots(jobs) == []
    # With nobody waiting, a pass takes the free slot itself.
    assert len(claim_slots(blocker.pk, wanting(blocker, 2)[1:], jobs, claim="again")) == 1
