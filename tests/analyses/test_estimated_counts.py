"""Page-number lists at archive scale (issue 19 §8): `count` is exact up to API_EXACT_COUNT_LIMIT and an estimate,
said so, past it; every page is still served; a page parameter that is not a page number is a 400 naming it."""

import pytest
from django.db import connection

from analyses.models import Study

pytestmark = pytest.mark.django_db


def make_studies(n: int) -> list[str]:
    """`n` more studies; their accessions, newest first (the list's order)."""
    start = Study.objects.count()
    made = [
        Study.objects.create(ena_accession=f"PRJEB{80000 + i}", title=f"Lake {i}")
        for i in range(start, start + n)
    ]
    return [study.accession for study in reversed(made)]


def walk(api_client, url: str) -> tuple[list[dict], list[str]]:
    """Every page from `url` by its `next` links: the pages' bodies and the accessions, in order."""
    pages, accessions = [], []
    while url:
        response = api_client.get(url)
        assert response.status_code == 200, response.content
        pages.append(response.json())
        accessions += [study["accession"] for study in pages[-1]["results"]]
        url = pages[-1]["next"]
    return pages, accessions


def test_up_to_the_limit_the_count_is_exact_and_said_to_be(api_client, settings):
    settings.API_EXACT_COUNT_LIMIT = 5
    accessions = make_studies(5)
    pages, seen = walk(api_client, "/api/studies/?page_size=2")
    assert list(pages[0]) == ["count", "count_is_estimate", "next", "previous", "results"]
    assert {(page["count"], page["count_is_estimate"]) for page in pages} == {(5, False)}
    assert seen == accessions and len(pages) == 3


def test_past_the_limit_the_count_is_an_estimate_and_every_page_is_still_served(api_client, settings):
    settings.API_EXACT_COUNT_LIMIT = 5
    accessions = make_studies(6)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE analyses_study")  # the statistics say 6 rows...
    accessions = make_studies(14) + accessions  # ...and are stale: the planner still estimates 6
    pages, seen = walk(api_client, "/api/studies/?page_size=5")
    first = pages[0]
    assert first["count_is_estimate"] is True and 5 < first["count"] < 20, first["count"]
    assert seen == accessions and len(pages) == 4  # pages past the estimate are served, and the last ends it
    assert pages[-1]["count"] >= 20  # a page read past the estimate raises it to the rows seen
    assert api_client.get("/api/studies/?page_size=5&page=5").status_code == 404
    assert api_client.get("/api/studies/?page_size=5&search=lake").json()["count_is_estimate"] is True
    narrow = api_client.get("/api/studies/?search=lake 2").json()  # Lake 2 and Lake 12
    assert (narrow["count"], narrow["count_is_estimate"]) == (2, False)


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", "last", ""])
def test_a_page_that_is_not_a_page_number_is_a_400_naming_it(api_client, bad):
    make_studies(3)
    response = api_client.get("/api/studies/", {"page": bad})
    assert response.status_code == 400, response.content
    assert "whole number" in response.json()["page"][0]


def test_a_page_past_the_end_is_a_404(api_client):
    make_studies(3)
    assert api_client.get("/api/studies/", {"page": 2}).status_code == 404


def test_the_schema_documents_the_estimate(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    page = schema["components"]["schemas"]["PaginatedStudyList"]
    assert page["properties"]["count_is_estimate"]["type"] == "boolean"
    assert "API_EXACT_COUNT_LIMIT" in page["properties"]["count_is_estimate"]["description"]
    assert {"count", "count_is_estimate", "results"} <= set(page["required"])
    (parameter,) = [p for p in schema["paths"]["/api/studies/"]["get"]["parameters"] if p["name"] == "page"]
    assert parameter["schema"]["minimum"] == 1
