"""Approval of costly requests: held before their first job, approved or rejected by a holder of the approve
permission (API here; the admin in tests/browser), each decision told. Real passes, real Slurm, ENA's stub."""

import pytest
from rest_framework.test import APIClient

from analyses.models import AssemblyAnalysisRequest, Notification
from workflows.models import ClusterJob
from workflows.orchestration.approval import reviewed_since_last_pass
from workflows.orchestration.reconciler import reconcile_once
from workflows.orchestration.recovery import carry_out_cancellation
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]
AWAITING = AssemblyAnalysisRequest.Status.AWAITING_APPROVAL
URL = "/api/assembly-analysis-requests/"


def post(client: APIClient, **body) -> AssemblyAnalysisRequest:
    answer = client.post(URL, {"study_accession": "PRJEB00001", **body}, format="json")
    assert answer.status_code == 201, answer.json()
    return AssemblyAnalysisRequest.objects.get(pk=answer.json()["id"])


def a_pass(request: AssemblyAnalysisRequest, jobs):
    result = reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    request.refresh_from_db()
    return result


def events(request: AssemblyAnalysisRequest) -> list[str]:
    return list(
        Notification.objects.filter(request=request).order_by("created").values_list("event", flat=True)
    )


def test_a_request_over_the_threshold_waits_for_approval_then_runs(
    pipeline_world, jobs, user_client, approver_client
):
    pipeline_world.APPROVAL_THRESHOLD_CPU_HOURS = 1
    request = post(user_client)

    for _ in range(2):  # a rerun of the pass (a resume with no decision yet) holds it still
        result = a_pass(request, jobs)
        assert result.waiting and result.status == AWAITING and not result.submitted
        assert request.status == AWAITING and not ClusterJob.objects.filter(request=request).exists()
    assert request.estimated_cpu_hours and request.estimated_cpu_hours > 1
    assert "over the 1.0 a request may spend unasked" in request.status_detail
    assert events(request) == ["awaiting_approval"]
    assert reviewed_since_last_pass() == []

    shown = user_client.get(f"{URL}{request.pk}/").json()
    assert (shown["status"], shown["estimated_cpu_hours"]) == (
        "awaiting_approval",
        request.estimated_cpu_hours,
    )
    # The requester may not approve their own request; the approver sees it although it is not theirs.
    assert user_client.post(f"{URL}{request.pk}/approve/", {}, format="json").status_code == 403
    answer = approver_client.post(f"{URL}{request.pk}/approve/", {"reason": "budget agreed"}, format="json")
    assert answer.status_code == 200, answer.json()
    assert (answer.json()["status"], answer.json()["reviewed_by"]) == ("running", "erin")
    assert answer.json()["status_detail"] == "Approved by erin: budget agreed"
    assert reviewed_since_last_pass() == [request.pk]  # the service loop resumes its flow run
    # Decided once: a second decision is a conflict, saying the status.
    again = approver_client.post(f"{URL}{request.pk}/reject/", {"reason": "late"}, format="json")
    assert again.status_code == 409 and again.json()["status"] == "running"

    result = a_pass(request, jobs)
    try:
        assert result.waiting and len(result.submitted) == 2  # the first step of both runs
        assert request.status == "running" and reviewed_since_last_pass() == []
        assert events(request) == ["awaiting_approval", "approved"]
    finally:
        carry_out_cancellation(request.pk)


def test_a_rejected_request_ends_with_the_reason_and_no_job(
    pipeline_world, jobs, user_client, approver_client
):
    pipeline_world.APPROVAL_THRESHOLD_CPU_HOURS = 1
    request = post(user_client)
    a_pass(request, jobs)
    assert request.status == AWAITING

    answer = approver_client.post(f"{URL}{request.pk}/reject/", {}, format="json")
    assert answer.status_code == 400 and "reason" in answer.json()
    answer = approver_client.post(
        f"{URL}{request.pk}/reject/", {"reason": "5,000 runs: ask for a subset"}, format="json"
    )
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    assert reviewed_since_last_pass() == [request.pk]  # resumed, its flow run ends

    result = a_pass(request, jobs)
    assert (result.status, result.waiting) == ("rejected", False)
    assert request.status_detail == "Rejected by erin: 5,000 runs: ask for a subset"
    assert not ClusterJob.objects.filter(request=request).exists()
    assert events(request) == ["awaiting_approval", "rejected"]
    assert reviewed_since_last_pass() == []
    # Rejected is over: the requester may ask again.
    post(user_client)


def test_resources_over_the_sites_caps_wait_for_approval(pipeline_world, jobs, user_client):
    pipeline_world.REQUEST_RESOURCE_CAPS = {"cpus": 4, "memory_mb": 2048, "time_limit_minutes": 600}
    request = post(user_client, resources={"assembly": {"cpus": 8, "memory_mb": 2048}})
    assert user_client.get(f"{URL}{request.pk}/").json()["resources"] == {
        "assembly": {"cpus": 8, "memory_mb": 2048}
    }
    a_pass(request, jobs)
    assert request.status == AWAITING
    assert "resources over the site's caps (assembly.cpus 8 > 4)" in request.status_detail


def test_a_request_under_the_threshold_and_caps_runs_unasked(pipeline_world, jobs, user_client):
    request = post(user_client, resources={"assembly": {"memory_mb": 2048}})
    result = a_pass(request, jobs)
    try:
        assert request.status == "running" and result.submitted
        assert (
            request.estimated_cpu_hours
            and request.estimated_cpu_hours < pipeline_world.APPROVAL_THRESHOLD_CPU_HOURS
        )
        assert events(request) == []
    finally:
        carry_out_cancellation(request.pk)


@pytest.mark.parametrize(
    "resources, says",
    [
        ({"assembly": {"memory_mb": 10**7}}, "assembly.memory_mb: 10000000 is over the cluster's ceiling"),
        ({"assemble": {"cpus": 2}}, "assemble: no pipeline has this step"),
        ({"assembly": {"gpus": 1}}, "assembly.gpus: unknown"),
        ({"assembly": {"cpus": "8"}}, "assembly.cpus: give an integer of at least 1"),
        (["assembly"], "Give an object of steps"),
    ],
)
def test_bad_resources_are_a_400_naming_the_step(user_client, resources, says):
    answer = user_client.post(URL, {"study_accession": "PRJEB00001", "resources": resources}, format="json")
    assert answer.status_code == 400
    assert any(says in message for message in answer.json()["resources"]), answer.json()
    assert not AssemblyAnalysisRequest.objects.exists()


def test_only_a_request_awaiting_approval_can_be_approved(user, user_client, approver_client, other_client):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=user)
    answer = approver_client.post(f"{URL}{request.pk}/approve/", {}, format="json")
    assert answer.status_code == 409 and answer.json()["status"] == "pending"
    assert other_client.post(f"{URL}{request.pk}/approve/", {}, format="json").status_code == 403
