import json

import pytest
from django.test import override_settings

from analyses.models import Analysis, AssemblyAnalysisRequest, Biome, Run, Sample, Study
from tests.builders import failed_request

pytestmark = pytest.mark.django_db

REQUESTS_URL = "/api/assembly-analysis-requests/"


@pytest.fixture
def marine_study():
    biome = Biome.objects.create(lineage="root:Environmental:Aquatic:Marine")
    study = Study.objects.create(
        ena_accession="PRJEB20001",
        secondary_ena_accession="ERP200001",
        title="Ocean sampling day",
        biome=biome,
    )
    sample = Sample.objects.create(accession="SAMEA2000001", study=study)
    run = Run.objects.create(
        accession="ERR2000001", study=study, sample=sample, library_strategy="WGS", library_layout="PAIRED"
    )
    Analysis.objects.create(study=study, run=run, status="completed", summary={"n50": 1200})
    return study


@pytest.fixture
def soil_study():
    biome = Biome.objects.create(lineage="root:Environmental:Terrestrial:Soil")
    return Study.objects.create(ena_accession="SRP200002", title="Forest soil", biome=biome)


# --- studies -------------------------------------------------------------------------------------------------


def test_study_list_is_public_and_paginated(api_client, marine_study, soil_study):
    response = api_client.get("/api/studies/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert {s["accession"] for s in body["results"]} == {marine_study.accession, soil_study.accession}
    marine = next(s for s in body["results"] if s["accession"] == marine_study.accession)
    assert marine["runs_count"] == 1 and marine["analyses_count"] == 1
    assert marine["biome"] == "root:Environmental:Aquatic:Marine"


def test_study_list_filters(api_client, marine_study, soil_study):
    by_ena = api_client.get("/api/studies/", {"ena_accession": "PRJEB20001"}).json()
    assert [s["accession"] for s in by_ena["results"]] == [marine_study.accession]
    by_secondary = api_client.get("/api/studies/", {"ena_accession": "ERP200001"}).json()
    assert [s["accession"] for s in by_secondary["results"]] == [marine_study.accession]
    by_biome = api_client.get("/api/studies/", {"biome": "root:Environmental:Terrestrial"}).json()
    assert [s["accession"] for s in by_biome["results"]] == [soil_study.accession]
    by_title = api_client.get("/api/studies/", {"search": "ocean"}).json()
    assert [s["accession"] for s in by_title["results"]] == [marine_study.accession]


def test_study_detail_counts_its_runs_and_analyses_and_links_them(api_client, marine_study):
    response = api_client.get(f"/api/studies/{marine_study.accession}/")
    assert response.status_code == 200
    body = response.json()
    assert body["ena_accession"] == "PRJEB20001"
    assert body["runs_count"] == 1 and body["analyses_count"] == 1
    runs = api_client.get(body["runs"]).json()["results"]
    assert runs[0]["accession"] == "ERR2000001" and runs[0]["sample_accession"] == "SAMEA2000001"
    analyses = api_client.get(body["analyses"]).json()["results"]
    assert analyses[0]["summary"] == {"n50": 1200} and analyses[0]["run"] == "ERR2000001"


def test_unknown_study_is_404(api_client):
    assert api_client.get("/api/studies/MGYS99999999/").status_code == 404


def test_studies_are_read_only(user_client):
    assert user_client.post("/api/studies/", {"ena_accession": "PRJEB1"}, format="json").status_code == 405


# --- analyses ------------------------------------------------------------------------------------------------


def test_analysis_list_filters_by_study_and_status(api_client, marine_study, soil_study):
    body = api_client.get("/api/analyses/", {"study": marine_study.accession}).json()
    assert body["count"] == 1
    analysis = body["results"][0]
    assert analysis["study"] == marine_study.accession and analysis["run"] == "ERR2000001"
    assert api_client.get("/api/analyses/", {"status": "failed"}).json()["count"] == 0
    assert api_client.get("/api/analyses/", {"study": soil_study.accession}).json()["count"] == 0
    detail = api_client.get(f"/api/analyses/{analysis['accession']}/")
    assert detail.status_code == 200 and detail.json()["status"] == "completed"


def test_a_studys_analyses_are_grouped_by_pipeline_and_listed_by_pipeline(api_client, marine_study):
    run = marine_study.runs.get()
    Analysis.objects.create(study=marine_study, run=run, pipeline="assembly_analysis", summary={"cds": 12})
    body = api_client.get(f"/api/studies/{marine_study.accession}/").json()
    groups = {group["pipeline"]: group for group in body["analyses_by_pipeline"]}
    assert {name: group["analyses"] for name, group in groups.items()} == {
        "assembly": 1,
        "assembly_analysis": 1,
    }
    listed = api_client.get(groups["assembly_analysis"]["url"]).json()
    assert listed["count"] == 1
    assert listed["results"][0]["pipeline"] == "assembly_analysis" and listed["results"][0]["summary"] == {
        "cds": 12
    }
    assert api_client.get("/api/analyses/", {"pipeline": "amplicon"}).json()["count"] == 0


def test_analysis_filter_rejects_unknown_status_naming_the_field(api_client):
    response = api_client.get("/api/analyses/", {"status": "exploded"})
    assert response.status_code == 400
    assert "status" in response.json()


# --- assembly-analysis requests ------------------------------------------------------------------------------


def test_create_request(user_client, user):
    response = user_client.post(REQUESTS_URL, {"study_accession": "PRJEB12345"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["study_accession"] == "PRJEB12345"
    assert body["status"] == "pending"
    assert body["flow_run_id"] is None
    assert body["id"] and body["created"]
    saved = AssemblyAnalysisRequest.objects.get(pk=body["id"])
    assert saved.requester == user


def test_session_auth_works_for_the_browsable_api(api_client, user):
    api_client.login(username="alice", password="alice-password")
    response = api_client.post(REQUESTS_URL, {"study_accession": "ERP123456"}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"study_accession": "PRJEB"}, "study_accession"),
        ({"study_accession": "ERR1234567"}, "study_accession"),
        ({"study_accession": "PRJEB1234; rm -rf /"}, "study_accession"),
        ({}, "study_accession"),
        ({"study_accession": 12345}, "study_accession"),
        ({"study_accession": ["PRJEB12345"]}, "study_accession"),
        ({"study_accession": None}, "study_accession"),
        ({"study_accession": "PRJEB12345", "priority": "high"}, "priority"),
        ({"study_accession": "PRJEB12345", "status": "completed"}, "status"),
    ],
)
def test_create_request_rejects_bad_input_naming_the_field(user_client, payload, field):
    response = user_client.post(REQUESTS_URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not AssemblyAnalysisRequest.objects.exists()


def test_create_request_rejects_malformed_json(user_client):
    response = user_client.post(REQUESTS_URL, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_create_request_rejects_a_non_object_body(user_client):
    response = user_client.post(
        REQUESTS_URL, data=json.dumps(["PRJEB12345"]), content_type="application/json"
    )
    assert response.status_code == 400


@override_settings(API_MAX_BODY_BYTES=1024)
def test_oversize_body_is_413(user_client):
    payload = {"study_accession": "PRJEB12345", "padding": "x" * 2048}
    response = user_client.post(REQUESTS_URL, payload, format="json")
    assert response.status_code == 413
    assert not AssemblyAnalysisRequest.objects.exists()


@override_settings(API_MAX_BODY_BYTES=1024)
def test_the_api_body_limit_does_not_apply_to_the_admin(client, superuser):
    client.force_login(superuser)
    response = client.post(
        "/admin/analyses/biome/add/", {"lineage": "root:Environmental", "name": "x" * 2048}
    )
    assert response.status_code != 413
    assert response.status_code in (200, 302)


def test_anonymous_write_is_401(api_client):
    response = api_client.post(REQUESTS_URL, {"study_accession": "PRJEB12345"}, format="json")
    assert response.status_code == 401
    assert response.has_header("WWW-Authenticate")


def test_anonymous_cannot_list_requests(api_client):
    assert api_client.get(REQUESTS_URL).status_code == 401


def test_users_see_their_own_requests_and_staff_see_all(
    user_client, other_client, staff_client, user, other_user
):
    mine = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    theirs = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB2222", requester=other_user)
    assert [r["id"] for r in user_client.get(REQUESTS_URL).json()["results"]] == [mine.id]
    assert user_client.get(f"{REQUESTS_URL}{mine.id}/").status_code == 200
    assert user_client.get(f"{REQUESTS_URL}{theirs.id}/").status_code == 404
    assert {r["id"] for r in staff_client.get(REQUESTS_URL).json()["results"]} == {mine.id, theirs.id}


def test_request_list_filters_by_status(user_client, user):
    AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user, status="failed")
    AssemblyAnalysisRequest.objects.create(study_accession="PRJEB2222", requester=user)
    body = user_client.get(REQUESTS_URL, {"status": "failed"}).json()
    assert [r["study_accession"] for r in body["results"]] == ["PRJEB1111"]
    assert user_client.get(REQUESTS_URL, {"status": "bogus"}).status_code == 400


def test_non_numeric_request_id_is_404(user_client):
    assert user_client.get(f"{REQUESTS_URL}abc/").status_code == 404


def test_owner_cancels_request(user_client, user):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    response = user_client.post(f"{REQUESTS_URL}{request.id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    request.refresh_from_db()
    assert request.status == "cancelled" and request.cancelled_by == user and request.cancelled_at


def test_a_holder_of_the_change_permission_cancels_any_request(staff_client, staff_user, user):
    from django.contrib.auth.models import Permission

    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    assert staff_client.post(f"{REQUESTS_URL}{request.id}/cancel/").status_code == 403  # staff alone is not
    staff_user.user_permissions.add(Permission.objects.get(codename="change_assemblyanalysisrequest"))
    assert staff_client.post(f"{REQUESTS_URL}{request.id}/cancel/").status_code == 200


def test_other_user_cannot_cancel(other_client, user):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    assert other_client.post(f"{REQUESTS_URL}{request.id}/cancel/").status_code == 404
    request.refresh_from_db()
    assert request.status == "pending"


def test_cancel_finished_request_is_409(user_client, user):
    request = AssemblyAnalysisRequest.objects.create(
        study_accession="PRJEB1111", requester=user, status="completed"
    )
    response = user_client.post(f"{REQUESTS_URL}{request.id}/cancel/")
    assert response.status_code == 409
    request.refresh_from_db()
    assert request.status == "completed"


def test_anonymous_cancel_is_401(api_client, user):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    assert api_client.post(f"{REQUESTS_URL}{request.id}/cancel/").status_code == 401


# --- schema, docs, health ------------------------------------------------------------------------------------


def test_schema_documents_every_endpoint(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/studies/",
        "/api/studies/{accession}/",
        "/api/analyses/",
        "/api/analyses/{accession}/",
        "/api/assembly-analysis-requests/",
        "/api/assembly-analysis-requests/{id}/",
        "/api/assembly-analysis-requests/{id}/cancel/",
    ]:
        assert path in paths, path


def test_swagger_ui_is_served(api_client):
    response = api_client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_a_second_active_request_for_a_study_is_409_naming_the_first(user_client, user, other_client):
    first = user_client.post(REQUESTS_URL, {"study_accession": "PRJEB12345"}, format="json")
    assert first.status_code == 201
    again = user_client.post(REQUESTS_URL, {"study_accession": "PRJEB12345"}, format="json")
    assert again.status_code == 409
    body = again.json()
    assert body["existing"] == f"http://testserver{REQUESTS_URL}{first.json()['id']}/"
    assert "force" in body["detail"]
    # Someone else's request, another study, or force: each is a new request.
    assert (
        other_client.post(REQUESTS_URL, {"study_accession": "PRJEB12345"}, format="json").status_code == 201
    )
    assert user_client.post(REQUESTS_URL, {"study_accession": "PRJEB12346"}, format="json").status_code == 201
    forced = user_client.post(REQUESTS_URL, {"study_accession": "PRJEB12345", "force": True}, format="json")
    assert forced.status_code == 201 and forced.json()["forced"] is True
    # Once the first has finished, a new one is welcome.
    AssemblyAnalysisRequest.objects.filter(pk=first.json()["id"]).update(status="completed")
    assert user_client.post(REQUESTS_URL, {"study_accession": "PRJEB12345"}, format="json").status_code == 201


@pytest.mark.django_db(transaction=True)
def test_the_rule_is_the_databases_so_concurrent_posts_cannot_both_win(user):
    import threading

    from django.db import connection

    from analyses.services import ActiveRequestExists, create_assembly_analysis_request

    barrier = threading.Barrier(4)
    outcomes: list[int | str] = []

    def post() -> None:
        barrier.wait()
        try:
            outcomes.append(create_assembly_analysis_request(study_accession="PRJEB12347", requester=user).pk)
        except ActiveRequestExists as exc:
            outcomes.append(f"conflict with {exc.existing.pk}")
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (winner,) = [outcome for outcome in outcomes if isinstance(outcome, int)]
    assert sorted(outcome for outcome in outcomes if outcome != winner) == [f"conflict with {winner}"] * 3
    assert AssemblyAnalysisRequest.objects.filter(study_accession="PRJEB12347").count() == 1


def test_request_detail_shows_per_run_outcomes(user_client, user):
    request = AssemblyAnalysisRequest.objects.create(
        study_accession="PRJEB1111",
        requester=user,
        status="completed",
        request_metadata={"succeeded_runs": ["ERR1"], "failed_runs": {"ERR2": "assembly exit code 1: boom"}},
    )
    body = user_client.get(f"{REQUESTS_URL}{request.pk}/").json()
    assert body["succeeded_runs"] == ["ERR1"]
    assert body["failed_runs"] == [{"run": "ERR2", "reason": "assembly exit code 1: boom"}]
    assert "force" not in body


def test_a_finished_request_shows_each_runs_route_and_pipelines(user_client, user):
    skipped = "skipped: assembly_stats.total_length 12,345 < 20,000"
    outcomes = {
        "ERR1": {"route": "assembly", "pipelines": {"assembly": "completed", "assembly_analysis": skipped}},
        "ERR2": {"route": "amplicon", "pipelines": {"amplicon": "completed"}},
    }
    request = AssemblyAnalysisRequest.objects.create(
        study_accession="PRJEB1112",
        requester=user,
        status="completed",
        request_metadata={"outcomes": outcomes},
    )
    body = user_client.get(f"{REQUESTS_URL}{request.pk}/").json()
    assert body["outcomes"] == [{"run": run, **outcome} for run, outcome in outcomes.items()]


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


def test_the_openapi_schema_is_valid_without_a_warning(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    schema = (tmp_path / "schema.yml").read_text()
    for path in (
        "/api/assembly-analysis-requests/{id}/jobs/",
        "/api/assembly-analysis-requests/{id}/retry/",
        "/api/jobs/",
    ):
        assert f"  {path}:" in schema, path
    assert "'409':" in schema


def test_creating_a_request_needs_the_add_permission(reader):
    from tests.conftest import token_client

    response = token_client(reader).post(REQUESTS_URL, {"study_accession": "PRJEB12345"}, format="json")
    assert response.status_code == 403
    assert "add_assemblyanalysisrequest" in response.json()["detail"]
    assert token_client(reader).get(REQUESTS_URL).status_code == 200  # reading one's own (none) is fine


def test_request_creation_is_throttled_per_user(user_client, other_client, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    # DRF reads the rates when the class is defined; the setting is what production changes.
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"request-create": "2/hour"})
    for accession in ("PRJEB12345", "PRJEB12346"):
        assert (
            user_client.post(REQUESTS_URL, {"study_accession": accession}, format="json").status_code == 201
        )
    third = user_client.post(REQUESTS_URL, {"study_accession": "PRJEB12347"}, format="json")
    assert third.status_code == 429 and "throttled" in third.json()["detail"].lower()
    assert "Retry-After" in third.headers
    assert user_client.get(REQUESTS_URL).status_code == 200  # reads are not throttled
    assert (
        other_client.post(REQUESTS_URL, {"study_accession": "PRJEB12347"}, format="json").status_code == 201
    )
