"""Pagination of the API's lists: page numbers where a client jumps to a page, cursors where it only follows `next`.

Both take a real `page_size` (1 to MAX_PAGE_SIZE); anything else is a 400 naming it, never silently ignored, and
so is a `page` that is not a page number.
"""

import json
from typing import Any

from django.conf import settings
from django.core.paginator import EmptyPage, Page, Paginator
from django.db.models import QuerySet
from django.utils.functional import cached_property
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, CursorPagination, PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

MAX_PAGE_SIZE = 100


def page_size_from(request: Request, param: str, default: int | None) -> int | None:
    raw = request.query_params.get(param)
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError({param: [f"Enter a whole number from 1 to {MAX_PAGE_SIZE}."]})
    return size


class KeysFirstPaginator(Paginator):
    """Finds a page's primary keys first, then reads (and annotates) only those rows: a "deferred join".

    With OFFSET, PostgreSQL computes every skipped row in full, the study list's correlated counts included:
    page 3,000 of the studies cost 0.4 s. The keys of the page come from the ordering's index alone (an
    index-only scan), and the rows and their counts are computed for the page's 25 only. Still one query.
    """

    object_list: QuerySet[Any]  # DRF pages the view's queryset

    def page(self, number: int | str) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        keys = self.object_list.values("pk")[bottom:top]
        # Django's hook for making the Page; django-stubs does not declare it.
        return self._get_page(self.object_list.filter(pk__in=keys), number, self)  # type: ignore[attr-defined]


def planner_estimate(queryset: QuerySet[Any]) -> int:
    """How many rows PostgreSQL's planner expects `queryset` to return: an EXPLAIN, planned and never run."""
    plan = json.loads(queryset.order_by().values("pk").explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedPage(Page):
    """A page of a list whose count is an estimate: whether another page follows is read, not computed."""

    def __init__(self, object_list: list[Any], number: int, paginator: Paginator, more: bool) -> None:
        super().__init__(object_list, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more


class BoundedCountPaginator(KeysFirstPaginator):
    """Counts exactly up to `API_EXACT_COUNT_LIMIT` rows; past that, `count` is the planner's estimate.

    COUNT(*) reads every row that matches: 14 ms for 200,000 analyses, 40 ms for a title search that matches a
    third of 100,000 studies, on every page. Counting through `LIMIT limit + 1` stops early, and past the limit an
    EXPLAIN of the list says about how many (the statistics ANALYZE keeps; never fewer than limit + 1). The pages
    past an estimate are still served: such a page reads one row more than it shows to know if another follows.
    """

    count_is_estimate = False

    @cached_property
    def count(self) -> int:
        limit = settings.API_EXACT_COUNT_LIMIT
        counted = self.object_list.order_by().values("pk")[: limit + 1].count()
        if counted <= limit:
            return counted
        self.count_is_estimate = True
        return max(limit + 1, planner_estimate(self.object_list))

    def validate_number(self, number: int | float | str) -> int:
        try:
            return super().validate_number(number)
        except EmptyPage:
            # Past the estimate there may be rows still: page() reads them to find out.
            if self.count_is_estimate and int(number) > 1:
                return int(number)
            raise

    def page(self, number: int | str) -> Page:
        count = self.count  # counting decides whether the count is an estimate
        if not self.count_is_estimate:
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        keys = self.object_list.values("pk")[bottom : bottom + self.per_page + 1]
        rows = list(self.object_list.filter(pk__in=keys))
        if not rows and number > 1:
            raise EmptyPage("That page contains no results")
        # The rows seen are a floor for the estimate (the statistics may be older than the rows).
        self.__dict__["count"] = max(count, bottom + len(rows))
        return EstimatedPage(rows[: self.per_page], number, self, more=len(rows) > self.per_page)


class BoundedPageSize(BasePagination):
    """`page_size` between 1 and MAX_PAGE_SIZE, a bad one a 400 naming it, and the schema saying so."""

    page_size_query_param: str | None = "page_size"
    max_page_size: int | None = MAX_PAGE_SIZE
    page_size: int | None  # the pagination class's: settings.REST_FRAMEWORK["PAGE_SIZE"]

    def get_page_size(self, request: Request) -> int | None:
        if self.page_size_query_param is None:  # a subclass that takes no page size from the client
            return self.page_size
        return page_size_from(request, self.page_size_query_param, self.page_size)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": MAX_PAGE_SIZE})
        return parameters


class PageNumbers(BoundedPageSize, PageNumberPagination):
    """`?page=N&page_size=M`, with `count` and `count_is_estimate`: for the lists a person browses (studies,
    analyses, requests, jobs). `count` is exact up to `API_EXACT_COUNT_LIMIT` rows and an estimate past it."""

    django_paginator_class = BoundedCountPaginator
    last_page_strings = ()  # `page=last` would land on the estimate's last page, which may not be the last
    page: Page

    def get_page_number(self, request: Request, paginator: Paginator) -> int:
        raw = request.query_params.get(self.page_query_param, "1")
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise ValidationError({self.page_query_param: ["Enter a whole number from 1."]})
        return int(raw)

    def get_paginated_response(self, data: Any) -> Response:
        paginator = self.page.paginator
        return Response(
            {
                "count": paginator.count,
                "count_is_estimate": getattr(paginator, "count_is_estimate", False),
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        response = super().get_paginated_response_schema(schema)
        properties = response["properties"]
        properties["count"]["description"] = (
            "How many results: exact while `count_is_estimate` is false, else about that many."
        )
        response["properties"] = {
            "count": properties.pop("count"),
            "count_is_estimate": {
                "type": "boolean",
                "description": (
                    "True when more results match than the site counts exactly (API_EXACT_COUNT_LIMIT, 1,000 by "
                    "default): `count` is then PostgreSQL's estimate, at least that limit + 1. Follow `next` "
                    "to the end for every result."
                ),
            },
            **properties,
        }
        response["required"] = ["count", "count_is_estimate", "results"]
        return response

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters


class Cursor(BoundedPageSize, CursorPagination):
    """`?cursor=…`, no count: constant cost at any depth, for the long lists a program walks to the end.

    Ordered by a unique column, so a row added meanwhile is neither skipped nor repeated.
    """

    ordering = "-id"


class RunsByAccession(Cursor):
    ordering = "accession"


class AnalysesByAccession(Cursor):
    ordering = "accession"
