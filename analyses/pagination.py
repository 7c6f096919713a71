"""Pagination of the API's lists: page numbers where a client jumps to a page, cursors where it only follows `next`.

Both take a real `page_size` (1 to MAX_PAGE_SIZE); anything else is a 400 naming it, never silently ignored, and
so is a `page` that is not a page number, a page past API_MAX_PAGE_DEPTH results, or a cursor the list did not give.
"""

import base64
import binascii
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import EmptyPage, Page, Paginator
from django.db.models import Field, Model, Q, QuerySet
from django.utils.functional import cached_property
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, CursorPagination, PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

if TYPE_CHECKING:  # the stubs' type of the browsable API's pagination context
    from rest_framework.pagination import HtmlContextWithPageLinks

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


# --- seeking: the rows after (or before) a row, along the list's order, without OFFSET ------------------------------


@dataclass(frozen=True)
class OrderColumn:
    field: Field
    descending: bool

    @property
    def name(self) -> str:
        return f"{'-' if self.descending else ''}{self.field.name}"


def total_order(queryset: QuerySet[Any]) -> list[OrderColumn]:
    """The queryset's order, the primary key last (in the direction of the column before it) unless already there:
    a seek needs an order in which no two rows tie, and page numbers and cursors must agree on it.

    The lists order by their own columns (`-created`, `-id`; `?ordering=` names one of its fields); a relation or
    an expression is not something a cursor can hold, so it is a configuration error.
    """
    meta = queryset.model._meta
    names = list(queryset.query.order_by or (meta.ordering if queryset.query.default_ordering else ()))
    columns = []
    for name in names:
        if not isinstance(name, str) or "__" in name:
            raise ImproperlyConfigured(f"a page-number list orders by its own columns, not by {name!r}")
        bare = name.lstrip("-")
        try:
            field = meta.pk if bare == "pk" else meta.get_field(bare)
        except FieldDoesNotExist as exc:
            raise ImproperlyConfigured(f"{meta.label} has no column {bare!r} to order by") from exc
        if field.is_relation or not field.concrete:
            raise ImproperlyConfigured(f"a page-number list cannot order by the relation {bare!r}")
        columns.append(OrderColumn(field, name.startswith("-")))
    if not any(column.field.primary_key for column in columns):
        columns.append(OrderColumn(meta.pk, columns[-1].descending if columns else False))
    return columns


def _beyond(column: OrderColumn, value: Any, descending: bool) -> Q:
    """Rows strictly past `value` in the column's order, as PostgreSQL sorts: NULLs last ascending, first
    descending."""
    name = column.field.attname
    if value is None:
        return Q(**{f"{name}__isnull": False}) if descending else Q(pk__in=[])
    past = Q(**{f"{name}__{'lt' if descending else 'gt'}": value})
    if column.field.null and not descending:
        past |= Q(**{f"{name}__isnull": True})
    return past


def _same(column: OrderColumn, value: Any) -> Q:
    name = column.field.attname
    return Q(**{f"{name}__isnull": True}) if value is None else Q(**{name: value})


def seek(order: list[OrderColumn], values: list[Any], forward: bool) -> Q:
    """The rows after the row with `values` (or before it when not `forward`), along `order`: (a past x) or
    (a = x and b past y) or ..., plus the bound on the first column alone, which is what PostgreSQL can walk an
    index from (the rest filters the few rows that tie with x)."""
    alternatives = []
    for i, column in enumerate(order):
        condition = _beyond(column, values[i], column.descending == forward)
        for before, value in zip(order[:i], values[:i], strict=False):
            condition &= _same(before, value)
        alternatives.append(condition)
    condition = reduce(operator.or_, alternatives)
    first, value = order[0], values[0]
    if value is not None and not first.field.null:
        condition &= Q(**{f"{first.field.attname}__{'lte' if first.descending == forward else 'gte'}": value})
    return condition


def encode_cursor(order: list[OrderColumn], row: Model, forward: bool) -> str:
    """The cursor of the rows after `row` (before it, when not `forward`): its order and its values, in base64."""
    values = [
        None if getattr(row, column.field.attname) is None else column.field.value_to_string(row)
        for column in order
    ]
    body = {"d": "after" if forward else "before", "o": [column.name for column in order], "v": values}
    return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


def decode_cursor(order: list[OrderColumn], cursor: str) -> tuple[list[Any], bool]:
    """The values and direction of a cursor of this order; a ValueError when it is not one."""
    try:
        body = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        direction, names, raw = body["d"], body["o"], body["v"]
    except (UnicodeError, binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise ValueError("not a cursor") from exc
    if direction not in ("after", "before") or names != [column.name for column in order]:
        raise ValueError("a cursor of another list or order")
    if not isinstance(raw, list) or len(raw) != len(order):
        raise ValueError("not a cursor")
    values = []
    for column, value in zip(order, raw, strict=True):
        if value is None and not column.field.null:
            raise ValueError("not a cursor")
        try:
            value = None if value is None else column.field.to_python(value)
            if value is not None:  # a length or an integer's range the column cannot hold
                column.field.run_validators(value)
        except (DjangoValidationError, TypeError) as exc:
            raise ValueError("not a cursor") from exc
        values.append(value)
    return values, direction == "after"


def with_columns(queryset: QuerySet[Any], order: list[OrderColumn]) -> QuerySet[Any]:
    """The queryset, loading the order's columns too when `only()` left them out: a cursor is made of a row's
    values, and a deferred one would cost a query of its own."""
    names, deferring = queryset.query.deferred_loading
    wanted = {column.field.name for column in order}
    if not names:
        return queryset
    if deferring:
        return queryset.defer(None).defer(*(set(names) - wanted)) if wanted & set(names) else queryset
    return queryset if wanted <= set(names) else queryset.only(*names, *wanted)


class SeekPage(Page):
    """The rows a cursor points at (it has no number): whether others follow or precede them is read, not
    counted."""

    def __init__(self, rows: list[Any], paginator: Paginator, has_next: bool, has_previous: bool) -> None:
        super().__init__(rows, 0, paginator)
        self.more_after = has_next and bool(rows)
        self.more_before = has_previous and bool(rows)

    def has_next(self) -> bool:
        return self.more_after

    def has_previous(self) -> bool:
        return self.more_before


def read_seek_page(
    queryset: QuerySet[Any], order: list[OrderColumn], values: list[Any], forward: bool, size: int
) -> tuple[list[Any], bool]:
    """Up to `size` rows after (or before) `values`, in the list's order, and whether more lie that way: one more
    row is read to know. An index range from the row, whatever its depth."""
    rows = queryset.filter(seek(order, values, forward))
    if not forward:
        rows = rows.order_by(*(f"{'' if column.descending else '-'}{column.field.name}" for column in order))
    found = list(rows[: size + 1])
    more = len(found) > size
    found = found[:size]
    return (found if forward else found[::-1]), more


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
    analyses, requests, jobs). `count` is exact up to `API_EXACT_COUNT_LIMIT` rows and an estimate past it.

    Page numbers reach the first `API_MAX_PAGE_DEPTH` results; the last such page's `next` is a cursor, and so is
    every link from there on (`?cursor=…`): the rows after the last one shown, found by a seek along the list's
    order (an index range) instead of an OFFSET that walks every row it skips. Same order, same count, same shape.
    """

    django_paginator_class = BoundedCountPaginator
    last_page_strings = ()  # `page=last` would land on the estimate's last page, which may not be the last
    cursor_query_param = "cursor"
    page: Page
    order: list[OrderColumn]
    url: str  # this request's, which the links vary

    @staticmethod
    def deepest_page(per_page: int) -> int:
        return max(1, -(-settings.API_MAX_PAGE_DEPTH // per_page))

    def paginate_queryset(
        self, queryset: QuerySet[Any] | Sequence[Any], request: Request, view: APIView | None = None
    ) -> list[Any] | None:
        if not isinstance(queryset, QuerySet):
            raise ImproperlyConfigured("a page-number list pages a queryset, in an order it can seek along")
        self.url = request.build_absolute_uri()
        self.order = total_order(queryset)
        queryset = with_columns(queryset.order_by(*(column.name for column in self.order)), self.order)
        cursor = request.query_params.get(self.cursor_query_param)
        if cursor is None:
            return super().paginate_queryset(queryset, request, view)
        if self.page_query_param in request.query_params:
            raise ValidationError({self.cursor_query_param: ["Give `page` or `cursor`, not both."]})
        try:
            values, forward = decode_cursor(self.order, cursor)
        except ValueError:
            message = "Not a cursor of this list and order: follow `next` or `previous`."
            raise ValidationError({self.cursor_query_param: [message]}) from None
        size = self.get_page_size(request) or MAX_PAGE_SIZE
        rows, more = read_seek_page(queryset, self.order, values, forward, size)
        self.request = request
        self.page = SeekPage(
            rows,
            self.django_paginator_class(queryset, size),
            has_next=more or not forward,
            has_previous=more or forward,
        )
        self.display_page_controls = self.template is not None
        return rows

    def get_page_number(self, request: Request, paginator: Paginator) -> int:
        raw = request.query_params.get(self.page_query_param, "1")
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise ValidationError({self.page_query_param: ["Enter a whole number from 1."]})
        deepest = self.deepest_page(paginator.per_page)
        if int(raw) > deepest:
            raise ValidationError(
                {
                    self.page_query_param: [
                        f"Page numbers reach the first {settings.API_MAX_PAGE_DEPTH:,} results (pages 1 to "
                        f"{deepest:,} at {paginator.per_page} a page); past them, follow `next`, which goes on "
                        "by cursor."
                    ]
                }
            )
        return int(raw)

    def get_next_link(self) -> str | None:
        if not self.page.has_next():
            return None
        if not isinstance(self.page, SeekPage) and self.page.number < self.deepest_page(
            self.page.paginator.per_page
        ):
            return super().get_next_link()
        return replace_query_param(
            remove_query_param(self.url, self.page_query_param),
            self.cursor_query_param,
            encode_cursor(self.order, self.page[-1], forward=True),
        )

    def get_previous_link(self) -> str | None:
        if not isinstance(self.page, SeekPage):
            return super().get_previous_link()
        if not self.page.has_previous():
            return None
        return replace_query_param(
            self.url, self.cursor_query_param, encode_cursor(self.order, self.page[0], forward=False)
        )

    def get_html_context(self) -> "HtmlContextWithPageLinks":
        """The browsable API's links: page numbers as far as they reach, then `next` and `previous` only."""
        if isinstance(self.page, SeekPage):  # no number: DRF's page links need one
            return {
                "previous_url": self.get_previous_link(),  # type: ignore[typeddict-item]  # None: no link
                "next_url": self.get_next_link(),  # type: ignore[typeddict-item]
                "page_links": [],
            }
        context = super().get_html_context()
        deepest = self.deepest_page(self.page.paginator.per_page)
        context["page_links"] = [
            link for link in context["page_links"] if link.is_break or (link.number or 0) <= deepest
        ]
        return context

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
                parameter["description"] = (
                    f"A page number, up to the page holding result {settings.API_MAX_PAGE_DEPTH:,} "
                    "(API_MAX_PAGE_DEPTH); past it, follow `next`, which goes on by `cursor`."
                )
        parameters.append(
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": (
                    "Where a page of a `next` or `previous` link starts, past the pages numbers reach: give it "
                    "as the link does, instead of `page`."
                ),
                "schema": {"type": "string"},
            }
        )
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
