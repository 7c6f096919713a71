"""Lists that stay honest and fast (issue 9 §2 and §3): sub-resources, page sizes, unknown parameters, a schema that
tells the truth, and query counts that do not grow with the rows."""

import uuid
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers

from analyses.models import Analysis, AssemblyAnalysisRequest, Biome, Run, Sample, Study
from analyses.serializers import (
    AnalysisSerializer,
    AnalysisSummarySerializer,
    AssemblyAnalysisRequestSerializer,
    RunSummarySerializer,
    StudyDetailSerializer,
    StudySerializer,
)
from analyses.views import AnalysisViewSet, StudyViewSet, newest_plan_rejected
from tests.builders import failed_request
from workflows.models import ClusterJob, Plan
from workflows.operations.serializers import ClusterJobSerializer
from workflows.selectors import jobs_with_step_and_run

pytestmark = pytest.mark.django_db
REQUESTS_URL = "/api/assembly-analysis-requests/"


def make_studies(n: int, runs_each: int = 2) -> list[Study]:
    """`n` studies (after those present), each with a sample and `runs_each` runs and analyses."""
    biome, _ = Biome.objects.get_or_create(lineage="root:Environmental:Aquatic:Marine")
    start = Study.objects.count()
    studies = []
    for i in range(start, start + n):
        study = Study.objects.create(ena_accession=f"PRJEB{70000 + i}", title=f"Ocean {i}", biome=biome)
        sample = Sample.objects.create(accession=f"SAMEA{7000000 + i}", study=study)
        for j in range(runs_each):
            run = Run.objects.create(accession=f"ERR{7000000 + i * 100 + j}", study=study, sample=sample)
            Analysis.objects.create(study=study, run=run)
        studies.append(study)
    return studies


# --- sub-resources ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("children", ["runs", "analyses"])
def test_a_studys_runs_and_analyses_are_pages_of_their_own(api_client, children):
    (study,) = make_studies(1, runs_each=12)
    url, seen = api_client.get(f"/api/studies/{study.accession}/").json()[children], []
    url += "?page_size=5"
    while url:
        body = api_client.get(url).json()
        assert "count" not in body and len(body["results"]) <= 5
        seen += [item["accession"] for item in body["results"]]
        url = body["next"]
    expected = Run if children == "runs" else Analysis
    assert seen == sorted(expected.objects.filter(study=study).values_list("accession", flat=True))
    assert api_client.get(f"/api/studies/MGYS99999999/{children}/").status_code == 404
    assert api_client.get(f"/api/studies/{study.accession}/{children}/?cursor=bogus").status_code == 404


def test_study_detail_no_longer_inlines_runs(api_client):
    (study,) = make_studies(1, runs_each=3)
    body = api_client.get(f"/api/studies/{study.accession}/").json()
    assert body["runs"].endswith(f"/api/studies/{study.accession}/runs/") and body["runs_count"] == 3


# --- query parameters ---------------------------------------------------------------------------------------------


def test_page_size_is_real_up_to_100(api_client):
    make_studies(3, runs_each=0)
    body = api_client.get("/api/studies/", {"page_size": 2}).json()
    assert len(body["results"]) == 2 and body["count"] == 3 and "page_size=2" in body["next"]
    for bad in ("0", "101", "ten"):
        response = api_client.get("/api/studies/", {"page_size": bad})
        assert response.status_code == 400 and "1 to 100" in response.json()["page_size"][0]


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/api/analyses/?search=ocean", "search"),  # analyses do not search: saying so beats ignoring it
        ("/api/studies/?colour=blue", "colour"),
        ("/api/studies/?page_sise=2", "page_sise"),
        (f"{REQUESTS_URL}?study=PRJEB1", "study"),
        ("/api/jobs/?page=1&after=x", "after"),
    ],
)
def test_a_query_parameter_a_list_does_not_take_is_400_naming_it(staff_client, url, parameter):
    response = staff_client.get(url)
    assert response.status_code == 400
    assert list(response.json()) == [parameter] and "this list takes" in response.json()[parameter][0]


def test_format_is_always_accepted(api_client):
    assert api_client.get("/api/studies/", {"format": "json"}).status_code == 200


def test_ordering_by_a_field_a_list_cannot_be_ordered_by_is_400(api_client):
    make_studies(2, runs_each=0)
    assert api_client.get("/api/studies/", {"ordering": "-accession"}).status_code == 200
    response = api_client.get("/api/studies/", {"ordering": "title"})
    assert response.status_code == 400 and "accession" in response.json()["ordering"][0]


# --- the schema tells the truth -----------------------------------------------------------------------------------


@pytest.fixture
def schema(api_client) -> dict:
    return api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()


def test_the_schema_advertises_search_only_where_a_list_searches(schema):
    searching = [
        path
        for path, operations in schema["paths"].items()
        for operation in operations.values()
        if any(parameter["name"] == "search" for parameter in operation.get("parameters", []))
    ]
    assert searching == ["/api/studies/"]


def test_every_status_an_endpoint_answers_is_in_the_schema_as_drfs_error(
    schema, api_client, user_client, staff_client, user
):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB1111", requester=user)
    (study,) = make_studies(1, runs_each=1)
    answered = {
        ("get", "/api/studies/", api_client.get("/api/studies/?page=9").status_code),
        ("get", "/api/studies/", api_client.get("/api/studies/?page_size=0").status_code),
        (
            "get",
            "/api/studies/{accession}/runs/",
            api_client.get(f"/api/studies/{study.accession}/runs/?x=1").status_code,
        ),
        ("get", "/api/studies/{accession}/", api_client.get("/api/studies/MGYS00000000/").status_code),
        ("get", "/api/assembly-analysis-requests/", api_client.get(REQUESTS_URL).status_code),
        ("get", "/api/jobs/", user_client.get("/api/jobs/").status_code),
        (
            "post",
            "/api/assembly-analysis-requests/",
            user_client.post(REQUESTS_URL, {}, format="json").status_code,
        ),
        (
            "post",
            "/api/assembly-analysis-requests/",
            user_client.post(REQUESTS_URL, {"study_accession": "PRJEB1111"}, format="json").status_code,
        ),
        (
            "post",
            "/api/assembly-analysis-requests/",
            user_client.post(REQUESTS_URL, "x", content_type="text/plain").status_code,
        ),
        (
            "post",
            "/api/assembly-analysis-requests/{id}/cancel/",
            staff_client.post(f"{REQUESTS_URL}{request.pk}/cancel/").status_code,
        ),
        (
            "post",
            "/api/assembly-analysis-requests/{id}/retry/",
            user_client.post(f"{REQUESTS_URL}{request.pk}/retry/").status_code,
        ),
    }
    assert {status for _, _, status in answered} == {400, 401, 403, 404, 409, 415}
    error = {"$ref": "#/components/schemas/Error"}
    for method, path, status in answered:
        response = schema["paths"][path][method]["responses"].get(str(status))
        assert response is not None, (method, path, status)
        assert response["content"]["application/json"]["schema"] == error


def test_the_schema_validates_without_a_warning(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    schema = (tmp_path / "schema.yml").read_text()
    for path in ("/api/studies/{accession}/runs/", "/api/studies/{accession}/analyses/"):
        assert f"  {path}:" in schema, path
    assert "Idempotency-Key" in schema and "'422':" in schema


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


# --- constant queries -------------------------------------------------------------------------------------------


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured)


@pytest.mark.parametrize(
    "url",
    [
        "/api/studies/",
        "/api/studies/?search=ocean",
        "/api/studies/?biome=root:Environmental&ordering=accession",
        "/api/analyses/",
        "/api/analyses/?status=pending",
    ],
)
def test_public_lists_make_the_same_queries_for_2_and_20_studies(api_client, url):
    make_studies(2)
    few = queries(api_client, url)
    make_studies(18)
    assert queries(api_client, url) == few


@pytest.mark.parametrize("children", ["runs", "analyses"])
def test_a_studys_children_make_the_same_queries_for_2_and_20(api_client, children):
    (study,) = make_studies(1, runs_each=2)
    url = f"/api/studies/{study.accession}/{children}/"
    few = queries(api_client, url)
    for j in range(2, 20):
        run = Run.objects.create(accession=f"ERR{8000000 + j}", study=study)
        Analysis.objects.create(study=study, run=run)
    assert queries(api_client, url) == few


def test_the_request_list_makes_the_same_queries_for_2_and_20_requests(user_client, user):
    def add(n: int) -> None:
        for _ in range(n):
            request = AssemblyAnalysisRequest.objects.create(
                study_accession="PRJEB1111", requester=user, status="completed"
            )
            Plan.objects.create(
                request=request,
                pipeline="assembly",
                pipeline_version="1",
                uid=uuid.uuid4().hex,
                rejected={"E": "x"},
            )

    add(2)
    few = queries(user_client, REQUESTS_URL)
    add(18)
    assert queries(user_client, REQUESTS_URL) == few


def test_the_request_list_with_run_outcomes_makes_the_same_queries_for_2_and_20(user_client, user):
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


def test_the_request_list_reads_the_newest_plans_rejected_runs_in_its_page_query(user_client, user):
    request = AssemblyAnalysisRequest.objects.create(
        study_accession="PRJEB1111", requester=user, status="completed"
    )
    for generation, rejected in ((1, {"ERR1": "an older plan"}), (2, {"ERR2": "no FASTQ"})):
        Plan.objects.create(
            request=request,
            generation=generation,
            pipeline="assembly",
            pipeline_version="1",
            uid=uuid.uuid4().hex,
            rejected=rejected,
        )
    with CaptureQueriesContext(connection) as captured:
        body = user_client.get(REQUESTS_URL).json()
    sql = [query["sql"] for query in captured]  # read now: the next request empties the log
    assert body["results"][0]["rejected_runs"] == [{"run": "ERR2", "reason": "no FASTQ"}]
    # No query of its own for the plans, and no user or study row read in full for a name and an accession.
    assert not [query for query in sql if query.startswith('SELECT "workflows_plan"')]
    (page,) = [query for query in sql if '"analyses_assemblyanalysisrequest"."status"' in query]
    assert '"auth_user"."password"' not in page and '"analyses_study"."description"' not in page
    detail = user_client.get(f"{REQUESTS_URL}{request.pk}/").json()
    assert detail["rejected_runs"] == [{"run": "ERR2", "reason": "no FASTQ"}]


def test_the_api_serializers_write_what_drfs_own_reading_writes(user):
    """ApiModelSerializer reads rows with attribute getters (analyses/serializers.py): the same dicts as DRF's
    `Serializer.to_representation`, for rows with and without their relations, annotations and defaults."""
    (study,) = make_studies(1, runs_each=2)
    Run.objects.create(accession="ERR7999999", study=study)  # no sample: `sample_accession` is its default
    failed = failed_request()  # no requester, no study; a plan with rejected runs; jobs of two attempts
    AssemblyAnalysisRequest.objects.create(study_accession=study.ena_accession, study=study, requester=user)
    ClusterJob.objects.create(key="adopted", spec={}, state="RUNNING")  # outside any request and plan
    rows: list[tuple[type[serializers.ModelSerializer], list[Any]]] = [
        (StudySerializer, list(StudyViewSet().get_queryset())),
        (StudyDetailSerializer, [*StudyViewSet().get_queryset(), study]),  # `study`: no counts
        (RunSummarySerializer, list(Run.objects.select_related("sample"))),
        (AnalysisSerializer, list(AnalysisViewSet.queryset)),
        (AnalysisSummarySerializer, list(Analysis.objects.select_related("run"))),
        (
            AssemblyAnalysisRequestSerializer,
            # `failed` not annotated: its plans are read
            [*AssemblyAnalysisRequest.objects.annotate(newest_plan_rejected=newest_plan_rejected()), failed],
        ),
        (ClusterJobSerializer, [*jobs_with_step_and_run(), *ClusterJob.objects.all()]),
    ]
    for serializer_class, instances in rows:
        serializer = serializer_class(context={})
        for instance in instances:
            drfs = serializers.ModelSerializer.to_representation(serializer, instance)
            assert serializer.to_representation(instance) == drfs, (serializer_class.__name__, instance.pk)
