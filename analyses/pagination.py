"""Pagination of the API's lists: page numbers where a client jumps to a page, cursors where it only follows `next`.

Both take a real `page_size` (1 to MAX_PAGE_SIZE); anything else is a 400 naming it, never silently ignored.
"""

from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, CursorPagination, PageNumberPagination
from rest_framework.request import Request
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
    """`?page=N&page_size=M`, with `count`: for the lists a person browses (studies, analyses, requests)."""

    django_paginator_class = KeysFirstPaginator


class Cursor(BoundedPageSize, CursorPagination):
    """`?cursor=…`, no count: constant cost at any depth, for the long lists a program walks to the end.

    Ordered by a unique column, so a row added meanwhile is neither skipped nor repeated.
    """

    ordering = "-id"


class RunsByAccession(Cursor):
    ordering = "accession"


class AnalysesByAccession(Cursor):
    ordering = "accession"
