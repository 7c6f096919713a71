"""Assembly-analysis requests through the API: idempotency, who may change a request, the schema's statuses."""

import threading

import pytest
import yaml
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analyses.models import AssemblyAnalysisRequest, IdempotencyKey
from analyses.services import submit_assembly_analysis_request
from tests.conftest import token_client
from tests.workflows.test_admin import failed_request
from workflows.models import Trigger

pytestmark = pytest.mark.django_db
REQUESTS_URL = "/api/assembly-analysis-requests/"
BODY = {"study_accession": "PRJEB12345"}


def post(client, body=BODY, key: str | None = "key-1"):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return client.post(REQUESTS_URL, body, format="json", **headers)


# --- Idempotency-Key -----------------------------------------------------------------------------------------


def test_the_same_key_and_body_answer_200_with_the_first_request(user_client):
    first = post(user_client)
    assert first.status_code == 201, first.content
    assert first.headers["Location"] == f"http://testserver{REQUESTS_URL}{first.json()['id']}/"
    again = post(user_client, {"study_accession": "PRJEB12345", "force": False})  # same meaning, same body
    assert again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert AssemblyAnalysisRequest.objects.count() == 1
    assert Trigger.objects.count() == 1  # nothing new dispatched


def test_the_same_key_with_another_body_is_422_naming_the_header(user_client):
    first = post(user_client)
    other = post(user_client, {"study_accession": "PRJEB12346"})
    assert other.status_code == 422
    body = other.json()
    assert "Idempotency-Key" in body["detail"]
    assert body["existing"].endswith(f"{REQUESTS_URL}{first.json()['id']}/")
    assert post(user_client, {"study_accession": "PRJEB12345", "force": True}).status_code == 422
    assert AssemblyAnalysisRequest.objects.count() == 1


def test_keys_are_per_requester_and_a_new_key_is_a_new_request(user_client, other_client):
    mine = post(user_client)
    theirs = post(other_client)  # bob's "key-1" is not alice's
    assert theirs.status_code == 201 and theirs.json()["id"] != mine.json()["id"]
    # A new key for the same study is a new request, so the one-active-request rule answers.
    assert post(user_client, key="key-2").status_code == 409
    assert not IdempotencyKey.objects.filter(key="key-2").exists()  # stored with a request, or not at all
    assert post(user_client, {"study_accession": "PRJEB12346"}, key="key-2").status_code == 201


def test_without_a_key_a_second_post_is_the_one_active_request_rule(user_client):
    assert post(user_client, key=None).status_code == 201
    assert post(user_client, key=None).status_code == 409
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve"])
def test_a_bad_key_is_400_naming_the_header(user_client, key):
    response = post(user_client, key=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert not AssemblyAnalysisRequest.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_with_one_key_create_one_request(user):
    barrier, outcomes = threading.Barrier(4), []

    def submit() -> None:
        barrier.wait()
        try:
            submission = submit_assembly_analysis_request(
                study_accession="PRJEB12347", requester=user, force=True, idempotency_key="same"
            )
            outcomes.append((submission.request.pk, submission.replayed))
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({pk for pk, _ in outcomes}) == 1
    assert sorted(replayed for _, replayed in outcomes) == [False, True, True, True]
    assert AssemblyAnalysisRequest.objects.count() == 1


# --- who may create, cancel, retry ---------------------------------------------------------------------------


def test_a_user_without_the_add_permission_gets_403(user_without_permission):
    response = post(token_client(user_without_permission))
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


# --- query counts --------------------------------------------------------------------------------------------


def test_the_request_list_makes_the_same_queries_for_2_and_20_requests(user_client, user):
    def queries_with(rows: int) -> int:
        while AssemblyAnalysisRequest.objects.count() < rows:
            n = AssemblyAnalysisRequest.objects.count()
            AssemblyAnalysisRequest.objects.create(
                study_accession=f"PRJEB{10000 + n}",
                requester=user,
                request_metadata={"succeeded_runs": ["ERR1"], "failed_runs": {"ERR2": "boom"}},
            )
        with CaptureQueriesContext(connection) as captured:
            response = user_client.get(REQUESTS_URL)
        assert response.status_code == 200 and response.json()["count"] == rows
        return len(captured)

    assert queries_with(2) == queries_with(20)


# --- the schema ----------------------------------------------------------------------------------------------

EXPECTED_STATUSES = {
    # Lists: 400 for a bad or unknown query parameter, 404 for a page past the end (or a cursor not given out).
    ("/api/assembly-analysis-requests/", "get"): {"200", "400", "401", "404"},
    # 415: a body that is not JSON (or a form).
    ("/api/assembly-analysis-requests/", "post"): {
        "200", "201", "400", "401", "403", "409", "413", "415", "422", "429",
    },
    ("/api/assembly-analysis-requests/{id}/", "get"): {"200", "401", "404"},
    ("/api/assembly-analysis-requests/{id}/cancel/", "post"): {
        "200", "400", "401", "403", "404", "409", "413", "415",
    },
    ("/api/assembly-analysis-requests/{id}/retry/", "post"): {"202", "401", "403", "404", "409", "413"},
    ("/api/assembly-analysis-requests/{id}/jobs/", "get"): {"200", "400", "401", "404"},
    ("/api/jobs/", "get"): {"200", "400", "401", "403", "404"},
    ("/api/jobs/{id}/", "get"): {"200", "401", "403", "404"},
    ("/api/studies/", "get"): {"200", "400", "404"},
    ("/api/studies/{accession}/", "get"): {"200", "404"},
    ("/api/studies/{accession}/runs/", "get"): {"200", "400", "404"},
    ("/api/studies/{accession}/analyses/", "get"): {"200", "400", "404"},
    ("/api/analyses/", "get"): {"200", "400", "404"},
    ("/api/analyses/{accession}/", "get"): {"200", "404"},
}  # fmt: skip


def test_the_schema_is_valid_warning_free_and_lists_every_status(tmp_path):
    schema_file = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(schema_file))
    schema = yaml.safe_load(schema_file.read_text())
    for (path, method), statuses in EXPECTED_STATUSES.items():
        assert set(schema["paths"][path][method]["responses"]) == statuses, (path, method)
    create = schema["paths"]["/api/assembly-analysis-requests/"]["post"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in create["parameters"])


# --- the migration -------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_constraint_migration_marks_older_active_duplicates_forced(django_user_model):
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        ("analyses", "0002_ingestion_unique_per_request_run"),
        ("analyses", "0003_one_active_request_per_study"),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        Request = executor.loader.project_state([before]).apps.get_model(
            "analyses", "AssemblyAnalysisRequest"
        )
        alice = django_user_model.objects.create_user("alice-before")
        older, newer, done = (
            Request.objects.create(study_accession="PRJEB1", requester_id=alice.pk, status=status)
            for status in ("pending", "running", "completed")
        )
        executor = MigrationExecutor(connection)
        executor.migrate([after])
        forced = dict(AssemblyAnalysisRequest.objects.values_list("pk", "forced"))
        assert forced == {older.pk: True, newer.pk: False, done.pk: False}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
