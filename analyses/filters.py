from collections.abc import Iterable

import django_filters
from django.db.models import Q, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.filters import BaseFilterBackend, OrderingFilter
from rest_framework.request import Request

from analyses.models import Analysis, ProcessingStatus, Study


class RejectUnknownQueryParameters(BaseFilterBackend):
    """A list answers 400 naming a query parameter it does not know (a misspelt filter, `page_size` where there
    is none): ignoring it would answer another question than the one asked, and a `next` link would echo it.

    What a list knows is exactly what its other filter backends and its paginator put in the OpenAPI schema,
    so the schema and the behaviour cannot drift apart.
    """

    always_known = frozenset({"format"})  # DRF's URL_FORMAT_OVERRIDE (?format=json, ?format=api)

    def filter_queryset(self, request: Request, queryset: QuerySet, view) -> QuerySet:
        if getattr(view, "action", "list") != "list":
            return queryset
        known = self.known(view, queryset)
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            takes = ", ".join(sorted(known - self.always_known)) or "none"
            raise ValidationError(
                {name: [f"Unknown query parameter; this list takes: {takes}."] for name in unknown}
            )
        return queryset

    def known(self, view, queryset: QuerySet) -> frozenset[str]:
        names = set(self.always_known)
        for backend_class in view.filter_backends:
            backend = backend_class()
            if isinstance(backend, DjangoFilterBackend):
                # django-filter left its schema to drf-spectacular, which documents exactly these.
                filterset = backend.get_filterset_class(view, queryset)
                names.update(filterset.base_filters if filterset else ())
            elif not isinstance(backend, type(self)):
                names.update(parameter["name"] for parameter in backend.get_schema_operation_parameters(view))
        if view.paginator is not None:
            names.update(
                parameter["name"] for parameter in view.paginator.get_schema_operation_parameters(view)
            )
        return frozenset(names)


class StrictOrderingFilter(OrderingFilter):
    """`?ordering=` naming a field the list cannot be ordered by is a 400, not the default order in disguise."""

    def remove_invalid_fields(
        self, queryset: QuerySet, fields: Iterable[str], view, request: Request
    ) -> list[str]:
        fields = list(fields)
        valid = super().remove_invalid_fields(queryset, fields, view, request)
        if len(valid) != len([field for field in fields if field]):
            allowed = ", ".join(
                name for name, _ in self.get_valid_fields(queryset, view, {"request": request})
            )
            raise ValidationError(
                {self.ordering_param: [f"Order by one of: {allowed} (a leading - reverses)."]}
            )
        return valid


class StudyFilter(django_filters.FilterSet):
    ena_accession = django_filters.CharFilter(
        method="filter_ena_accession", help_text="ENA project or study accession (either of the pair)."
    )
    biome = django_filters.CharFilter(
        field_name="biome__lineage",
        lookup_expr="startswith",
        help_text="Biome lineage or a prefix of it, e.g. root:Environmental:Aquatic.",
    )

    class Meta:
        model = Study
        fields = ["ena_accession", "biome"]

    def filter_ena_accession(self, queryset: QuerySet[Study], name: str, value: str) -> QuerySet[Study]:
        return queryset.filter(Q(ena_accession=value) | Q(secondary_ena_accession=value))


class AnalysisFilter(django_filters.FilterSet):
    study = django_filters.CharFilter(
        field_name="study__accession", help_text="MGnify study accession (MGYS…)."
    )
    status = django_filters.ChoiceFilter(choices=ProcessingStatus.choices)
    pipeline = django_filters.CharFilter(help_text="The pipeline that made it (amplicon, assembly, ...).")
    request = django_filters.NumberFilter(
        field_name="request_id", help_text="The assembly-analysis request that made it (its id)."
    )

    class Meta:
        model = Analysis
        fields = ["study", "status", "pipeline", "request"]
