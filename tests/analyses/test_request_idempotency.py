"""Idempotency-Key and the one-active-request rule through the API: a replay answers with the first request, a
conflict is refused in DRF's error shape and uses up no key, and the constraint's migration."""

import threading

import pytest
from django.db import connection

from analyses.models import AssemblyAnalysisRequest, IdempotencyKey
from analyses.services import submit_assembly_analysis_request
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


def test_a_post_refused_as_a_conflict_does_not_use_up_its_key(user_client):
    first = post(user_client, key=None)
    assert post(user_client, key="k-1").status_code == 409
    assert not IdempotencyKey.objects.exists()
    user_client.post(f"{REQUESTS_URL}{first.json()['id']}/cancel/")
    assert post(user_client, key="k-1").status_code == 201


# --- the one-active-request rule ------------------------------------------------------------------------------


def test_conflict_and_throttle_answer_in_drfs_error_shape(user_client, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"request-create": "2/hour"})
    assert post(user_client, key=None).status_code == 201
    conflict = post(user_client, key=None)
    throttled = post(user_client, {"study_accession": "PRJEB12346"}, key=None)
    assert conflict.status_code == 409 and isinstance(conflict.json()["detail"], str)
    assert throttled.status_code == 429 and set(throttled.json()) == {"detail"}


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
