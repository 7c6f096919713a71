"""A request with thousands of jobs (issue 19): its admin page and its API pages do a bounded amount of work."""

import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analyses.models import AssemblyAnalysisRequest
from tests.workflows.pipeline_inputs import STEPS
from workflows.models import ClusterJob, Plan, PlanStep
from workflows.selectors import jobs_with_step_and_run, request_jobs

pytestmark = pytest.mark.django_db
REQUESTS_URL = "/api/assembly-analysis-requests/"


def request_with_jobs(
    total: int, failed: int = 0, running: int = 0, requester=None
) -> AssemblyAnalysisRequest:
    """A running request whose plan has `total` steps, one job each: the first `failed` FAILED, the last
    `running` RUNNING, the rest COMPLETED. Made with bulk_create, as a 5,000-run study's ledger would be big."""
    request = AssemblyAnalysisRequest.objects.create(
        study_accession="PRJEB00001", status=AssemblyAnalysisRequest.Status.RUNNING, requester=requester
    )
    plan = Plan.objects.create(
        request=request, pipeline="assembly", pipeline_version="1", uid=uuid.uuid4().hex
    )
    keys = [f"{request.pk:08d}{n:056x}" for n in range(total)]
    PlanStep.objects.bulk_create(
        PlanStep(
            plan=plan,
            run_accession=f"ERR{9000000 + n // len(STEPS)}",
            step=STEPS[n % len(STEPS)],
            position=n % len(STEPS),
            spec={},
            key=keys[n],
        )
        for n in range(total)
    )
    states = ["FAILED"] * failed + ["COMPLETED"] * (total - failed - running) + ["RUNNING"] * running
    ClusterJob.objects.bulk_create(
        ClusterJob(
            key=keys[n],
            name=f"emgapi-{STEPS[n % len(STEPS)]}-ERR{9000000 + n // len(STEPS)}",
            spec={"name": "x" * 200},
            slurm_job_id=str(request.pk * 100000 + n),
            state=state,
            exit_code={"FAILED": 1, "COMPLETED": 0}.get(state),
            log_tail="the last lines" if state == "FAILED" else "",
            request=request,
        )
        for n, state in enumerate(states)
    )
    return request


def table(page: str, css_class: str) -> str:
    """The page's table of that class ("" when there is none)."""
    found = re.search(rf'<table class="{css_class}">(.*?)</table>', page, re.S)
    return found.group(1) if found else ""


def table_rows(page: str, css_class: str) -> int:
    return table(page, css_class).count("<tr><td>")


# --- the admin's request page -----------------------------------------------------------------------------------


def test_a_request_page_with_2000_jobs_shows_counts_failures_and_the_last_jobs_in_bounded_work(admin_client):
    def page_of(request: AssemblyAnalysisRequest) -> tuple[str, int]:
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(f"/admin/analyses/assemblyanalysisrequest/{request.pk}/change/")
        assert response.status_code == 200
        return response.content.decode(), len(captured)

    few = request_with_jobs(20, failed=2, running=3)
    page_of(few)  # the session's first page caches what every later page reuses
    few_page, _ = page_of(few)
    _, some_queries = page_of(request_with_jobs(200, failed=2, running=3))
    request = request_with_jobs(2000, failed=30, running=40)
    page, queries = page_of(request)

    assert queries == some_queries, f"{some_queries} queries for 200 jobs, {queries} for 2,000"
    # A request's jobs all fit: every one is listed, as before, and its failures are among them.
    assert table_rows(few_page, "emgapi-jobs") == 20 and table_rows(few_page, "emgapi-job-failures") == 0
    assert table_rows(page, "emgapi-jobs") == 50
    assert table_rows(page, "emgapi-job-failures") == 20
    for state, count in {"COMPLETED": "1,930", "FAILED": "30", "RUNNING": "40"}.items():
        assert f'&amp;state__exact={state}">{state}: {count}</a>' in page, state
    assert "2,000 jobs" in page and "the 20 newest of 30 failures" in page
    # The last 50 are the newest: all the running ones, and the 10 completed before them.
    assert table(page, "emgapi-jobs").count("RUNNING") == 40
    # The full list is a paginated changelist (and the API's jobs list), filtered to the request.
    changelist = f"/admin/workflows/clusterjob/?request__id__exact={request.pk}"
    assert f'href="{changelist}"' in page and f'href="{REQUESTS_URL}{request.pk}/jobs/"' in page
    listing = admin_client.get(changelist)
    # Past API_EXACT_COUNT_LIMIT (1,000) the changelist's count is the planner's estimate.
    assert listing.status_code == 200 and listing.context["cl"].result_count > 1000


def test_the_ledgers_changelist_counts_no_further_than_the_limit_and_follows_an_index(admin_client, settings):
    settings.API_EXACT_COUNT_LIMIT = 100
    request_with_jobs(300, failed=3)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflows_clusterjob")
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get("/admin/workflows/clusterjob/")
    changelist = response.context["cl"]
    assert response.status_code == 200 and changelist.result_count > 100
    assert len(changelist.result_list) == changelist.list_per_page
    counts = [query["sql"] for query in captured if "COUNT(" in query["sql"].upper()]
    assert counts and all("LIMIT 101" in sql for sql in counts), counts
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    assert "Sort" not in changelist.queryset.values("pk")[:100].explain()
    # Filtered to one request, few enough to count: exact.
    few = request_with_jobs(20)
    filtered = admin_client.get(f"/admin/workflows/clusterjob/?request__id__exact={few.pk}")
    assert filtered.context["cl"].result_count == 20


def test_the_staff_jobs_list_follows_an_index_in_its_order():
    request_with_jobs(2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflows_clusterjob")
        cursor.execute("SET LOCAL enable_seqscan = off")
    keys = jobs_with_step_and_run().values("pk")[975:1000]
    assert "Sort" not in keys.explain(), "no index covers the ledger in the jobs list's order"


# --- the API's jobs list ----------------------------------------------------------------------------------------


def test_a_page_of_2000_jobs_reads_its_rows_only_and_counts_no_further_than_the_limit(
    user_client, user, settings
):
    settings.API_EXACT_COUNT_LIMIT = 100
    request = request_with_jobs(2000, failed=30, running=40, requester=user)
    with CaptureQueriesContext(connection) as captured:
        response = user_client.get(f"{REQUESTS_URL}{request.pk}/jobs/", {"page": 3, "page_size": 25})
    body = response.json()
    assert response.status_code == 200 and len(body["results"]) == 25
    assert body["count_is_estimate"] is True and body["count"] > 100
    assert "page=4" in body["next"] and "page=2" in body["previous"]
    counts = [query["sql"] for query in captured if "COUNT(" in query["sql"].upper()]
    assert counts and all("LIMIT 101" in sql for sql in counts), counts
    # What the serializer does not show is not read: the spec, the log tail, the labels.
    (rows,) = [query["sql"] for query in captured if '"workflows_clusterjob"."state"' in query["sql"]]
    for column in ("spec", "log_tail", "input_hashes", "labels"):
        assert f'"workflows_clusterjob"."{column}"' not in rows, column


def test_a_page_of_a_requests_jobs_follows_an_index_and_finds_each_step_by_its_key():
    request = request_with_jobs(2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflows_clusterjob, workflows_planstep, workflows_plan")
        # What the planner would do once the tables are large: an index where there is one.
        cursor.execute("SET LOCAL enable_seqscan = off")
    keys = request_jobs(request.pk).values("pk")[975:1000]
    assert "Sort" not in keys.explain(), "no index covers the request's jobs in their order"
    page = request_jobs(request.pk).filter(pk__in=keys).explain()
    assert re.search(r"Index Cond: \(.*key\)::text = ", page), page
