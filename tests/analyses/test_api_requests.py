"""Requests through the API, beyond tests/analyses/test_requests_api.py: a refused POST keeps its key, errors in
one shape, and every kind of per-run outcome."""

import pytest

from analyses.models import AssemblyAnalysisRequest, IdempotencyKey
from tests.workflows.test_admin import failed_request

pytestmark = pytest.mark.django_db
REQUESTS_URL = "/api/assembly-analysis-requests/"


def post(client, accession: str, key: str | None = None):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(REQUESTS_URL, {"study_accession": accession}, format="json", **headers)


def test_a_post_refused_as_a_conflict_does_not_use_up_its_key(user_client):
    first = post(user_client, "PRJEB12345")
    assert post(user_client, "PRJEB12345", key="k-1").status_code == 409
    assert not IdempotencyKey.objects.exists()
    user_client.post(f"{REQUESTS_URL}{first.json()['id']}/cancel/")
    assert post(user_client, "PRJEB12345", key="k-1").status_code == 201


def test_conflict_and_throttle_answer_in_drfs_error_shape(user_client, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"request-create": "2/hour"})
    assert post(user_client, "PRJEB12345").status_code == 201
    conflict = post(user_client, "PRJEB12345")
    throttled = post(user_client, "PRJEB12346")
    assert conflict.status_code == 409 and isinstance(conflict.json()["detail"], str)
    assert throttled.status_code == 429 and set(throttled.json()) == {"detail"}


def test_a_request_shows_failed_and_rejected_runs_with_why_and_its_study(user_client, user):
    request = failed_request()
    AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(requester=user)
    body = user_client.get(f"{REQUESTS_URL}{request.pk}/").json()
    assert body["study_accession"] == "PRJEB00001"
    assert body["succeeded_runs"] == []
    assert body["failed_runs"] == [
        {"run": "ERR9000001", "reason": "read_qc exit code 3: <adapter> file missing"}
    ]
    assert body["rejected_runs"] == [{"run": "ERR0", "reason": "no FASTQ"}]
    listed = user_client.get(REQUESTS_URL).json()["results"]
    assert listed[0]["rejected_runs"] == body["rejected_runs"]
