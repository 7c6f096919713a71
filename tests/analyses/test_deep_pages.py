"""Deep pages at archive scale (issue 19 §8): page numbers reach the first API_MAX_PAGE_DEPTH results; past them a
list goes on by a cursor (a seek from the last row seen, no OFFSET), in the same order, with the same count.

With OFFSET, PostgreSQL walks every row it skips: page 3,000 of the studies read 75,000 index entries (20 ms on a
loaded machine) for its 25 rows, and a page further on would cost more still.
"""

import base64
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analyses.models import Study
from tests.workflows.test_jobs_at_scale import request_with_jobs
from workflows.models import ClusterJob

pytestmark = pytest.mark.django_db
REQUESTS_URL = "/api/assembly-analysis-requests/"


@pytest.fixture
def shallow(settings):
    """Page numbers reach the first 6 results only."""
    settings.API_MAX_PAGE_DEPTH = 6


def make_studies(n: int, same_time: bool = False) -> list[str]:
    """`n` more studies; their accessions, newest first (the list's order). With `same_time`, all created at the
    same instant: only the id orders them."""
    start = Study.objects.count()
    made = [
        Study.objects.create(ena_accession=f"PRJEB{60000 + i}", title=f"Pond {i}")
        for i in range(start, start + n)
    ]
    if same_time:
        Study.objects.filter(pk__in=[study.pk for study in made]).update(created=timezone.now())
    return [study.accession for study in reversed(made)]


def walk(client, url: str, link: str = "next", key: str = "accession") -> tuple[list[dict], list]:
    """Every page from `url` by its `link` links: the bodies and the `key` of every result, in order."""
    pages, seen = [], []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        pages.append(response.json())
        seen += [item[key] for item in pages[-1]["results"]]
        url = pages[-1][link]
    return pages, seen


def test_past_the_depth_next_goes_on_by_cursor_in_the_same_order_with_the_count(api_client, shallow):
    accessions = make_studies(15)
    pages, seen = walk(api_client, "/api/studies/?page_size=2")
    assert seen == accessions and len(pages) == 8
    # Pages 1 to 3 hold the first 6 results; page 3's `next` is the first cursor, and so are the rest.
    assert "page=3" in pages[1]["next"] and "cursor=" not in pages[1]["next"]
    assert "cursor=" in pages[2]["next"] and "page=" not in pages[2]["next"]
    assert all("cursor=" in page["next"] and "page_size=2" in page["next"] for page in pages[2:-1])
    assert {(page["count"], page["count_is_estimate"]) for page in pages} == {(15, False)}


def test_previous_walks_back_from_the_last_cursor_page(api_client, shallow):
    accessions = make_studies(11)
    last = walk(api_client, "/api/studies/?page_size=3")[0][-1]
    back = [study["accession"] for study in last["results"]]
    pages, seen = walk(api_client, last["previous"], link="previous")
    # By cursor all the way back (the first page's `previous` is none): every study once, in order.
    assert pages[-1]["previous"] is None and all("page=" not in page["next"] for page in pages)
    before = [study["accession"] for page in reversed(pages) for study in page["results"]]
    assert before + back == accessions and len(seen) == len(before)


def test_a_cursor_pages_ties_by_id_and_follows_the_ordering_asked(api_client, shallow):
    accessions = make_studies(9, same_time=True)
    assert walk(api_client, "/api/studies/?page_size=2")[1] == accessions
    assert walk(api_client, "/api/studies/?page_size=2&ordering=accession")[1] == sorted(accessions)
    assert walk(api_client, "/api/studies/?page_size=4&ordering=-updated&search=pond")[1] == accessions


def test_a_page_past_the_depth_is_a_400_naming_page(api_client, shallow):
    make_studies(10)
    assert api_client.get("/api/studies/?page_size=2&page=3").status_code == 200
    response = api_client.get("/api/studies/?page_size=2&page=4")
    assert response.status_code == 400, response.content
    (message,) = response.json()["page"]
    assert "first 6 results" in message and "pages 1 to 3" in message and "`next`" in message


@pytest.mark.parametrize(
    "cursor",
    [
        "bogus",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(
            json.dumps({"d": "after", "o": ["-created", "-id"], "v": ["x", 1]}).encode()
        ).decode(),
        # An id no bigint holds: refused before it reaches PostgreSQL.
        base64.urlsafe_b64encode(
            json.dumps(
                {"d": "after", "o": ["-created", "-id"], "v": ["2026-01-01T00:00:00+00:00", 2**70]}
            ).encode()
        ).decode(),
        # A cursor of another ordering (the client changed `ordering` and kept the cursor).
        base64.urlsafe_b64encode(
            json.dumps({"d": "after", "o": ["accession", "id"], "v": ["MGYS1", 1]}).encode()
        ).decode(),
    ],
)
def test_a_cursor_this_list_did_not_give_out_is_a_400_naming_it(api_client, shallow, cursor):
    make_studies(3)
    response = api_client.get("/api/studies/", {"cursor": cursor})
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["cursor"] and "follow" in response.json()["cursor"][0]


def test_page_and_cursor_together_is_a_400_naming_cursor(api_client, shallow):
    make_studies(9)
    cursor_page = walk(api_client, "/api/studies/?page_size=2")[0][3]["next"]
    response = api_client.get(cursor_page + "&page=2")
    assert response.status_code == 400 and "not both" in response.json()["cursor"][0]


def test_a_cursor_page_seeks_without_offset_in_as_many_queries_as_a_numbered_page(api_client, shallow):
    make_studies(20)
    pages = walk(api_client, "/api/studies/?page_size=2")[0]
    counts = []
    for url in ("/api/studies/?page_size=2&page=2", pages[5]["next"]):
        with CaptureQueriesContext(connection) as captured:
            assert api_client.get(url).status_code == 200
        counts.append(len(captured))
    assert counts[0] == counts[1]
    (rows,) = [query["sql"] for query in captured if '"analyses_study"."title"' in query["sql"]]
    assert "OFFSET" not in rows and '"analyses_study"."created" <=' in rows


def test_the_schema_documents_the_cursor_and_the_depth(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    parameters = {p["name"]: p for p in schema["paths"]["/api/studies/"]["get"]["parameters"]}
    assert parameters["cursor"]["schema"]["type"] == "string"
    assert "10,000" in parameters["page"]["description"] and "cursor" in parameters["page"]["description"]


# --- the ledger's lists -------------------------------------------------------------------------------------------


def test_a_requests_jobs_go_on_by_cursor_oldest_first_ties_by_id(user_client, user, shallow):
    request = request_with_jobs(13, requester=user)
    # Made in one statement: several jobs may share a `created`; the id orders them.
    ClusterJob.objects.filter(request=request).update(created=timezone.now())
    expected = list(ClusterJob.objects.filter(request=request).order_by("id").values_list("id", flat=True))
    pages, seen = walk(user_client, f"{REQUESTS_URL}{request.pk}/jobs/?page_size=4", key="id")
    assert seen == expected and "cursor=" in pages[1]["next"]


def test_the_staff_jobs_list_goes_on_by_cursor_over_a_nullable_ordering(staff_client, shallow):
    request = request_with_jobs(9)
    now = timezone.now()
    for n, job in enumerate(ClusterJob.objects.filter(request=request).order_by("id")):
        # Every third job has not ended (NULL: PostgreSQL puts it last ascending, first descending).
        job.ended_at = None if n % 3 == 0 else now - timedelta(minutes=n % 4)
        job.save(update_fields=["ended_at"])
    for ordering, then in (("ended_at", "id"), ("-ended_at", "-id")):
        expected = list(ClusterJob.objects.order_by(ordering, then).values_list("id", flat=True))
        seen = walk(staff_client, f"/api/jobs/?page_size=2&ordering={ordering}", key="id")[1]
        assert seen == expected, ordering
