import django_filters
from django.db.models import Q

from analyses.models import Analysis, ProcessingStatus, Study


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

    def filter_ena_accession(self, queryset, name, value):
        return queryset.filter(Q(ena_accession=value) | Q(secondary_ena_accession=value))


class AnalysisFilter(django_filters.FilterSet):
    study = django_filters.CharFilter(
        field_name="study__accession", help_text="MGnify study accession (MGYS…)."
    )
    status = django_filters.ChoiceFilter(choices=ProcessingStatus.choices)

    class Meta:
        model = Analysis
        fields = ["study", "status"]
