"""A request's jobs, retry and cancel with a reason, through the API."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analyses.models import Analysis, AssemblyAnalysisRequest, Run, Study
from tests.builders import failed_request
from workflows.models import Trigger

pytestmark = pytest.mark.django_db
REQUESTS_URL = "/api/assembly-analysis-requests/"


def mine(user) -> AssemblyAnalysisRequest:
    request = failed_request()
    AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(requester=user)
    return request


def test_a_request_links_its_jobs_with_step_run_attempt_and_state(user_client, user):
    request = mine(user)
    detail = user_client.get(f"{REQUESTS_URL}{request.pk}/").json()
    assert detail["jobs"] == f"http://testserver{REQUESTS_URL}{request.pk}/jobs/"
    jobs = user_client.get(detail["jobs"]).json()["results"]
    assert [(j["step"], j["run"], j["attempt"], j["job_id"], j["state"], j["exit_code"]) for j in jobs] == [
        ("fetch_reads", "ERR9000001", 1, "101", "COMPLETED", 0),
        ("read_qc", "ERR9000001", 1, "102", "OUT_OF_MEMORY", None),
        ("read_qc", "ERR9000001", 2, "103", "FAILED", 3),
    ]
    assert {"submitted_at", "started_at", "ended_at"} <= set(jobs[0])


def test_another_users_request_jobs_are_404_and_all_jobs_are_staff_only(
    other_client, user, user_client, staff_client
):
    request = mine(user)
    assert other_client.get(f"{REQUESTS_URL}{request.pk}/jobs/").status_code == 404
    assert user_client.get("/api/jobs/").status_code == 403
    assert staff_client.get("/api/jobs/").json()["count"] == 3
    assert staff_client.get(f"{REQUESTS_URL}{request.pk}/jobs/").json()["count"] == 3


@pytest.mark.parametrize("url", ["/api/jobs/", "jobs"])
def test_job_lists_make_the_same_queries_for_2_and_20_requests(staff_client, staff_user, url):
    def queries_with(requests: int) -> int:
        while AssemblyAnalysisRequest.objects.count() < requests:
            last = mine(staff_user)
        target = url if url.startswith("/") else f"{REQUESTS_URL}{last.pk}/jobs/"
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(target).status_code == 200
        return len(captured)

    assert queries_with(2) == queries_with(20)


def test_retry_through_the_api(user_client, user, other_client):
    request = mine(user)
    Trigger.objects.all().delete()
    assert other_client.post(f"{REQUESTS_URL}{request.pk}/retry/").status_code == 404
    response = user_client.post(f"{REQUESTS_URL}{request.pk}/retry/")
    assert response.status_code == 202 and response.json() == {"retrying": ["ERR9000001"]}
    assert Trigger.objects.count() == 1
    again = user_client.post(f"{REQUESTS_URL}{request.pk}/retry/")
    assert again.status_code == 409 and "only a finished request is retried" in again.json()["detail"]


def test_cancel_takes_a_reason(user_client, user):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    too_long = user_client.post(f"{REQUESTS_URL}{request.pk}/cancel/", {"reason": "x" * 501}, format="json")
    assert too_long.status_code == 400 and "reason" in too_long.json()
    unknown = user_client.post(f"{REQUESTS_URL}{request.pk}/cancel/", {"why": "x"}, format="json")
    assert unknown.status_code == 400 and "why" in unknown.json()
    done = user_client.post(f"{REQUESTS_URL}{request.pk}/cancel/", {"reason": "wrong study"}, format="json")
    assert done.status_code == 200 and done.json()["status_detail"] == "wrong study"


def test_a_retry_while_another_request_for_the_study_is_active_is_a_409_naming_it(user_client, user):
    request = mine(user)
    active = AssemblyAnalysisRequest.objects.create(study_accession=request.study_accession, requester=user)

    response = user_client.post(f"{REQUESTS_URL}{request.pk}/retry/")

    # The POST's shape: the conflict, and a link to the request in the way.
    posted = user_client.post(REQUESTS_URL, {"study_accession": request.study_accession}, format="json")
    assert response.status_code == posted.status_code == 409
    assert response.json().keys() == posted.json().keys() == {"detail", "existing"}
    assert response.json() == posted.json()
    assert response.json()["existing"] == f"http://testserver{REQUESTS_URL}{active.pk}/"
    request.refresh_from_db()
    assert request.status == "failed" and request.plans.count() == 1  # nothing was superseded


def test_a_request_links_its_analyses(user_client, user):
    request = mine(user)
    other = failed_request()
    study = Study.objects.create(ena_accession="PRJEB00001")
    for made_by, run in ((request, "ERR1"), (other, "ERR2")):
        run_row = Run.objects.create(accession=run, study=study)
        Analysis.objects.create(study=study, run=run_row, request=made_by, pipeline="assembly")
    detail = user_client.get(f"{REQUESTS_URL}{request.pk}/").json()
    assert detail["analyses"] == f"http://testserver/api/analyses/?request={request.pk}"
    listed = user_client.get(detail["analyses"]).json()["results"]
    assert len(listed) == 1
    bad = user_client.get("/api/analyses/?request=five")
    assert bad.status_code == 400 and "request" in bad.json()
