"""Who may create, cancel and retry a request through the API (the requester, or a holder of the model's change
permission; being staff is not enough), and what a malformed cancel reason answers."""

import pytest

from analyses.models import AssemblyAnalysisRequest
from tests.builders import failed_request
from tests.conftest import token_client

pytestmark = pytest.mark.django_db
REQUESTS_URL = "/api/assembly-analysis-requests/"


def test_a_user_without_the_add_permission_gets_403(user_without_permission):
    response = token_client(user_without_permission).post(
        REQUESTS_URL, {"study_accession": "PRJEB12345"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1"
    )
    assert response.status_code == 403
    assert "analyses.add_assemblyanalysisrequest" in response.json()["detail"]
    assert not AssemblyAnalysisRequest.objects.exists()


def test_cancel_needs_the_requester_or_the_change_permission(user, staff_client, operator, other_client):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    url = f"{REQUESTS_URL}{request.pk}/cancel/"
    assert other_client.post(url).status_code == 404  # not even visible to another submitter
    refused = staff_client.post(url)  # staff see it, but seeing is not changing
    assert refused.status_code == 403 and "change_assemblyanalysisrequest" in refused.json()["detail"]
    request.refresh_from_db()
    assert request.status == "pending"
    operator_client = token_client(operator)
    assert operator_client.get(f"{REQUESTS_URL}{request.pk}/").status_code == 404  # reads stay the owner's
    response = operator_client.post(url, {"reason": "cluster maintenance"}, format="json")
    assert response.status_code == 200 and response.json()["status_detail"] == "cluster maintenance"


def test_retry_needs_the_requester_or_the_change_permission(user, user_client, staff_client, operator):
    request = failed_request()
    AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(requester=user)
    url = f"{REQUESTS_URL}{request.pk}/retry/"
    assert staff_client.post(url).status_code == 403
    assert token_client(operator).post(url).status_code == 202
    again = user_client.post(url)  # the requester may; nothing is left to retry until this attempt ends
    assert again.status_code == 409 and again.json()["detail"]


@pytest.mark.parametrize("reason", [["a list"], {"an": "object"}, 42, "x" * 501])
def test_a_bad_cancel_reason_is_400_naming_the_field(user_client, user, reason):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    response = user_client.post(f"{REQUESTS_URL}{request.pk}/cancel/", {"reason": reason}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    request.refresh_from_db()
    assert request.status == "pending"
