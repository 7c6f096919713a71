import operator
from collections.abc import Callable
from datetime import tzinfo
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject
from rest_framework.reverse import reverse

from analyses import webhooks
from analyses.models import (
    Analysis,
    AssemblyAnalysisRequest,
    Notification,
    Run,
    Study,
    StudyChange,
    StudyResult,
    WebhookDelivery,
    WebhookEndpoint,
)
from analyses.resources import resources_errors
from analyses.selectors import analyses_by_pipeline
from analyses.services import MAX_CANCEL_REASON, MAX_REVIEW_REASON


class DefaultZoneDateTimeField(serializers.DateTimeField):
    """A time as DRF writes it (ISO 8601, "Z" for UTC), in the site's TIME_ZONE without asking for the zone active
    in this thread for every value: that look-up was 40 % of the time of serialising a page of 100 jobs. The API
    never activates another zone, so the output is the same."""

    def default_timezone(self) -> tzinfo | None:
        return timezone.get_default_timezone() if settings.USE_TZ else None


_BY_DRF = object()  # a value read DRF's way
URL_ID_MARKER = 987654321987654321  # stands for a row's id in a link reversed once for a page of rows


def _reader(field: serializers.Field) -> Callable[[Any], Any]:
    """How to read `field`'s value from an instance: an attribute getter where DRF's reading comes to that (a
    model column, a dotted path, the instance itself for a method field), else a marker to read it DRF's way."""
    if type(field).get_attribute is not serializers.Field.get_attribute:  # a relation, a nested serializer
        return lambda instance: _BY_DRF
    if not field.source_attrs:  # source="*"
        return lambda instance: instance
    return operator.attrgetter(".".join(field.source_attrs))


class ApiModelSerializer(serializers.ModelSerializer):
    """The API's model serializers: a model's DateTimeFields become DefaultZoneDateTimeField, and a row is read
    with plain attribute getters.

    DRF reads every field of every row through `fields.get_attribute` (a Mapping check, a callable check, per
    path element) and a generator of the readable fields: 40 % of serialising a page of 100 jobs. The getters
    give the same values; whatever they cannot read (a missing attribute, for a `default`; a callable; a
    relation) is read DRF's way, so the output is DRF's (tests/analyses/test_api_reads.py compares them).
    """

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.DateTimeField: DefaultZoneDateTimeField,
    }

    @cached_property
    def _readers(self) -> list[tuple[str, serializers.Field, Callable[[Any], Any]]]:
        # Built once per serializer: a list serializer's child serialises every row of the page.
        return [(str(field.field_name), field, _reader(field)) for field in self._readable_fields]

    def to_representation(self, instance: Any) -> dict[str, Any]:
        representation: dict[str, Any] = {}
        for name, field, read in self._readers:
            try:
                value = read(instance)
            except (AttributeError, ObjectDoesNotExist):
                value = _BY_DRF
            if value is _BY_DRF or callable(value):
                try:
                    value = field.get_attribute(instance)
                except SkipField:
                    continue
                if isinstance(value, PKOnlyObject):
                    value = None if value.pk is None else value
            representation[name] = None if value is None else field.to_representation(value)
        return representation


class RejectUnknownFieldsMixin(serializers.Serializer):
    """A typo in a field name, or a read-only field sent, is a 400 naming it rather than silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            errors = {
                name: ["This field is read-only."] if name in self.fields else ["Unknown field."]
                for name in data
                if name not in self.fields or self.fields[name].read_only
            }
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string, not a number DRF would turn into one."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class RunSummarySerializer(ApiModelSerializer):
    sample_accession = serializers.CharField(source="sample.accession", default=None, read_only=True)

    class Meta:
        model = Run
        fields = [
            "accession",
            "sample_accession",
            "instrument_model",
            "library_strategy",
            "library_layout",
            "read_count",
            "qa_status",
            "withdrawn_at",
            "qa_reason",
        ]


class AnalysisSummarySerializer(ApiModelSerializer):
    run = serializers.CharField(source="run.accession", default=None, read_only=True)

    class Meta:
        model = Analysis
        fields = ["accession", "run", "status", "pipeline", "pipeline_version", "summary", "created"]


class StudySerializer(ApiModelSerializer):
    biome = serializers.CharField(source="biome.lineage", default=None, read_only=True)
    runs_count = serializers.IntegerField(read_only=True)
    analyses_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Study
        fields = [
            "accession",
            "ena_accession",
            "secondary_ena_accession",
            "title",
            "biome",
            "runs_count",
            "analyses_count",
            "last_synced_with_ena",
            "created",
            "updated",
        ]


class StudyChangeSerializer(ApiModelSerializer):
    class Meta:
        model = StudyChange
        fields = ["kind", "run_accession", "detail", "synced_at"]


class PipelineAnalysesSerializer(serializers.Serializer):
    pipeline = serializers.CharField()
    analyses = serializers.IntegerField()
    url = serializers.URLField(help_text="Its analyses of this study, a page at a time.")


class StudyResultSerializer(ApiModelSerializer):
    request = serializers.IntegerField(source="request_id", default=None, read_only=True)

    class Meta:
        model = StudyResult
        fields = [
            "pipeline",
            "pipeline_version",
            "request",
            "results_directory",
            "files",
            "summary",
            "created",
        ]


class StudyDetailSerializer(StudySerializer):
    """A study with links to its runs and analyses: a study may have thousands, so they are lists of their own."""

    runs = serializers.SerializerMethodField()
    analyses = serializers.SerializerMethodField()
    analyses_by_pipeline = serializers.SerializerMethodField()
    results = StudyResultSerializer(many=True, read_only=True)
    watched_by = serializers.CharField(source="watched_by.username", default=None, read_only=True)
    changes = serializers.SerializerMethodField()

    class Meta(StudySerializer.Meta):
        fields = [
            *StudySerializer.Meta.fields,
            "description",
            "runs",
            "analyses",
            "analyses_by_pipeline",
            "results",
            "watched_by",
            "changes",
        ]

    @extend_schema_field(serializers.URLField())
    def get_changes(self, obj: Study) -> str:
        """Its change log: what each sync with ENA found changed (runs added, withdrawn, checksums, metadata)."""
        return reverse("study-changes", args=[obj.accession], request=self.context.get("request"))

    @extend_schema_field(PipelineAnalysesSerializer(many=True))
    def get_analyses_by_pipeline(self, obj: Study) -> list[dict[str, Any]]:
        """Its analyses grouped by the pipeline that made them (amplicon, assembly, assembly_analysis, ...)."""
        base = reverse("analysis-list", request=self.context.get("request"))
        return [
            {
                "pipeline": pipeline,
                "analyses": count,
                "url": f"{base}?{urlencode({'study': obj.accession, 'pipeline': pipeline})}",
            }
            for pipeline, count in analyses_by_pipeline(obj)
        ]

    @extend_schema_field(serializers.URLField())
    def get_runs(self, obj: Study) -> str:
        """Its runs, a page at a time (`runs_count` says how many)."""
        return reverse("study-runs", args=[obj.accession], request=self.context.get("request"))

    @extend_schema_field(serializers.URLField())
    def get_analyses(self, obj: Study) -> str:
        """Its analyses, a page at a time (`analyses_count` says how many)."""
        return reverse("study-analyses", args=[obj.accession], request=self.context.get("request"))


class AnalysisSerializer(ApiModelSerializer):
    study = serializers.CharField(source="study.accession", read_only=True)
    run = serializers.CharField(source="run.accession", default=None, read_only=True)
    assembly = serializers.IntegerField(source="assembly_id", default=None, read_only=True)
    request = serializers.IntegerField(source="request_id", default=None, read_only=True)

    class Meta:
        model = Analysis
        fields = [
            "accession",
            "study",
            "run",
            "assembly",
            "request",
            "pipeline",
            "pipeline_version",
            "status",
            "results_directory",
            "files",
            "summary",
            "created",
            "updated",
        ]


class RunOutcomeSerializer(serializers.Serializer):
    run = serializers.CharField()
    reason = serializers.CharField()


class RunRouteSerializer(serializers.Serializer):
    run = serializers.CharField()
    route = serializers.CharField(help_text="The first pipeline of the run's route (data QA chose it).")
    pipelines = serializers.DictField(
        child=serializers.CharField(),
        help_text="Each pipeline of the route: completed, skipped (with why), failed (with why) or not run.",
    )


class RequestResourcesField(serializers.JSONField):
    """What the request asked for per step: sent as a field, kept in its metadata (where planning reads it)."""

    def get_attribute(self, instance: AssemblyAnalysisRequest) -> dict[str, Any]:
        return (instance.request_metadata or {}).get("resources") or {}


class AssemblyAnalysisRequestSerializer(RejectUnknownFieldsMixin, ApiModelSerializer):
    flow_run_id = serializers.SerializerMethodField()
    study = serializers.CharField(source="study.accession", default=None, read_only=True)
    requester = serializers.CharField(source="requester.username", default=None, read_only=True)
    force = serializers.BooleanField(
        write_only=True,
        required=False,
        default=False,
        help_text="Start another request even though one for this study is pending or running.",
    )
    resources = RequestResourcesField(
        required=False,
        help_text=(
            'Per step, CPUs, memory and time limit over the pipeline\'s, e.g. {"assembly": {"memory_mb": 16000}}. '
            "Over the site's caps, the request waits for approval; over the cluster's ceilings, a 400."
        ),
    )
    reviewed_by = serializers.CharField(source="reviewed_by.username", default=None, read_only=True)
    succeeded_runs = serializers.SerializerMethodField()
    failed_runs = serializers.SerializerMethodField()
    rejected_runs = serializers.SerializerMethodField()
    outcomes = serializers.SerializerMethodField()
    analyses = serializers.SerializerMethodField()
    jobs = serializers.SerializerMethodField()

    class Meta:
        model = AssemblyAnalysisRequest
        fields = [
            "id",
            "study_accession",
            "study",
            "status",
            "status_detail",
            "flow_run_id",
            "requester",
            "succeeded_runs",
            "failed_runs",
            "rejected_runs",
            "outcomes",
            "analyses",
            "jobs",
            "force",
            "forced",
            "resources",
            "estimated_cpu_hours",
            "reviewed_at",
            "reviewed_by",
            "created",
            "updated",
            "cancelled_at",
        ]
        read_only_fields = [
            "status",
            "status_detail",
            "cancelled_at",
            "forced",
            "estimated_cpu_hours",
            "reviewed_at",
        ]

    def validate_resources(self, value: Any) -> dict[str, dict[str, int]]:
        if errors := resources_errors(value):
            raise serializers.ValidationError(errors)
        return value

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_flow_run_id(self, obj: AssemblyAnalysisRequest) -> str | None:
        return obj.flow_run_id

    @extend_schema_field(serializers.URLField())
    def get_jobs(self, obj: AssemblyAnalysisRequest) -> str:
        """Its Slurm jobs (step, run, attempt, job id, state, exit code, times)."""
        return self._jobs_url.replace(str(URL_ID_MARKER), str(obj.pk))

    @extend_schema_field(serializers.URLField())
    def get_analyses(self, obj: AssemblyAnalysisRequest) -> str:
        """Its analyses and their figures (contigs, N50, ASVs, ...): the analyses list filtered to this request."""
        return f"{self._analyses_url}?request={obj.pk}"

    @cached_property
    def _analyses_url(self) -> str:
        return reverse("analysis-list", request=self.context.get("request"))

    @cached_property
    def _jobs_url(self) -> str:
        # Reversed once per page, the id filled in per row: a reverse() per row was 40 % of serialising the list.
        # By name: the jobs are the workflow layer's, and the domain does not import it.
        return reverse(
            "assembly-analysis-request-jobs", args=[URL_ID_MARKER], request=self.context.get("request")
        )

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_succeeded_runs(self, obj: AssemblyAnalysisRequest) -> list[str]:
        """Runs assembled and analysed, as the last finished pass recorded them."""
        return list((obj.request_metadata or {}).get("succeeded_runs", []))

    @extend_schema_field(RunOutcomeSerializer(many=True))
    def get_failed_runs(self, obj: AssemblyAnalysisRequest) -> list[dict[str, str]]:
        """Runs that did not go through, each with why (the failed step, its exit code and log lines)."""
        failed = (obj.request_metadata or {}).get("failed_runs", {})
        return [{"run": run, "reason": reason} for run, reason in failed.items()]

    @extend_schema_field(RunRouteSerializer(many=True))
    def get_outcomes(self, obj: AssemblyAnalysisRequest) -> list[dict[str, Any]]:
        """Per run, once the request has finished: its route and what became of each pipeline of it."""
        outcomes = (obj.request_metadata or {}).get("outcomes", {})
        return [{"run": run, **outcome} for run, outcome in outcomes.items()]

    @extend_schema_field(RunOutcomeSerializer(many=True))
    def get_rejected_runs(self, obj: AssemblyAnalysisRequest) -> list[dict[str, str]]:
        """Runs data QA turned away when the current plan was made (no FASTQ, not metagenomic, ...), with why."""
        if hasattr(obj, "newest_plan_rejected"):  # annotated by the view's queryset
            rejected = obj.newest_plan_rejected or {}
        else:  # a request just made or changed: `plans`, the workflow layer's relation, newest generation first
            newest = obj.plans.first() if hasattr(obj, "plans") else None
            rejected = newest.rejected if newest else {}
        return [{"run": run, "reason": reason} for run, reason in rejected.items()]


class CancelSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = StrictCharField(
        max_length=MAX_CANCEL_REASON,
        required=False,
        allow_blank=True,
        help_text="Why; shown as the request's status detail.",
    )


class ReviewSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = StrictCharField(
        max_length=MAX_REVIEW_REASON,
        required=False,
        allow_blank=True,
        help_text="Why; shown as the request's status detail and told to its requester (a rejection needs one).",
    )


class WebhookEndpointSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    url = serializers.URLField(
        max_length=2000,
        help_text="http or https; a host resolving to a private, loopback or link-local address is refused.",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=Notification.Event.choices),
        allow_empty=False,
        required=False,
        help_text="The events sent here; all of them if not given.",
    )
    deliveries = serializers.HyperlinkedIdentityField(view_name="webhook-deliveries", read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "active", "disabled_reason", "created", "updated", "deliveries"]
        read_only_fields = ["disabled_reason", "created", "updated"]

    def validate_url(self, value: str) -> str:
        try:
            webhooks.check_url(value)
        except webhooks.WebhookUrlRefused as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        return sorted(set(value))

    def create(self, validated_data: dict[str, Any]) -> WebhookEndpoint:
        validated_data.setdefault("events", sorted(Notification.Event.values))
        return super().create(validated_data)

    def update(self, instance: WebhookEndpoint, validated_data: dict[str, Any]) -> WebhookEndpoint:
        if validated_data.get("active"):
            instance.disabled_reason = ""  # set active again by its owner: the old reason no longer holds
        return super().update(instance, validated_data)


class WebhookSecretSerializer(WebhookEndpointSerializer):
    """An endpoint with its secret: answered once, to the POST that registers it or rotates its secret."""

    secret = serializers.CharField(read_only=True, help_text="Shown this once: keep it to verify signatures.")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event = serializers.CharField(source="notification.event", read_only=True)
    request = serializers.IntegerField(source="notification.request_id", read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "delivery_id",
            "event",
            "request",
            "status",
            "attempts",
            "response_status",
            "last_error",
            "next_attempt_at",
            "delivered_at",
            "created",
        ]
        read_only_fields = fields
