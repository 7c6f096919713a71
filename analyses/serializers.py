from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from analyses.models import Analysis, AssemblyAnalysisRequest, Run, Study


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


class RunSummarySerializer(serializers.ModelSerializer):
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
            "qa_reason",
        ]


class AnalysisSummarySerializer(serializers.ModelSerializer):
    run = serializers.CharField(source="run.accession", default=None, read_only=True)

    class Meta:
        model = Analysis
        fields = ["accession", "run", "status", "pipeline_version", "summary", "created"]


class StudySerializer(serializers.ModelSerializer):
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


class StudyDetailSerializer(StudySerializer):
    """A study with links to its runs and analyses: a study may have thousands, so they are lists of their own."""

    runs = serializers.SerializerMethodField()
    analyses = serializers.SerializerMethodField()

    class Meta(StudySerializer.Meta):
        fields = [*StudySerializer.Meta.fields, "description", "runs", "analyses"]

    @extend_schema_field(serializers.URLField())
    def get_runs(self, obj: Study) -> str:
        """Its runs, a page at a time (`runs_count` says how many)."""
        return reverse("study-runs", args=[obj.accession], request=self.context.get("request"))

    @extend_schema_field(serializers.URLField())
    def get_analyses(self, obj: Study) -> str:
        """Its analyses, a page at a time (`analyses_count` says how many)."""
        return reverse("study-analyses", args=[obj.accession], request=self.context.get("request"))


class AnalysisSerializer(serializers.ModelSerializer):
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
            "pipeline_version",
            "status",
            "results_directory",
            "summary",
            "created",
            "updated",
        ]


class RunOutcomeSerializer(serializers.Serializer):
    run = serializers.CharField()
    reason = serializers.CharField()


class AssemblyAnalysisRequestSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    flow_run_id = serializers.SerializerMethodField()
    study = serializers.CharField(source="study.accession", default=None, read_only=True)
    requester = serializers.CharField(source="requester.get_username", default=None, read_only=True)
    force = serializers.BooleanField(
        write_only=True,
        required=False,
        default=False,
        help_text="Start another request even though one for this study is pending or running.",
    )
    succeeded_runs = serializers.SerializerMethodField()
    failed_runs = serializers.SerializerMethodField()
    rejected_runs = serializers.SerializerMethodField()
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
            "jobs",
            "force",
            "forced",
            "created",
            "updated",
            "cancelled_at",
        ]
        read_only_fields = ["status", "status_detail", "cancelled_at", "forced"]

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_flow_run_id(self, obj: AssemblyAnalysisRequest) -> str | None:
        return obj.flow_run_id

    @extend_schema_field(serializers.URLField())
    def get_jobs(self, obj: AssemblyAnalysisRequest) -> str:
        """Its Slurm jobs (step, run, attempt, job id, state, exit code, times)."""
        # By name: the jobs are the workflow layer's, and the domain does not import it.
        return reverse("assembly-analysis-request-jobs", args=[obj.pk], request=self.context.get("request"))

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_succeeded_runs(self, obj: AssemblyAnalysisRequest) -> list[str]:
        """Runs assembled and analysed, as the last finished pass recorded them."""
        return list((obj.request_metadata or {}).get("succeeded_runs", []))

    @extend_schema_field(RunOutcomeSerializer(many=True))
    def get_failed_runs(self, obj: AssemblyAnalysisRequest) -> list[dict[str, str]]:
        """Runs that did not go through, each with why (the failed step, its exit code and log lines)."""
        failed = (obj.request_metadata or {}).get("failed_runs", {})
        return [{"run": run, "reason": reason} for run, reason in failed.items()]

    @extend_schema_field(RunOutcomeSerializer(many=True))
    def get_rejected_runs(self, obj: AssemblyAnalysisRequest) -> list[dict[str, str]]:
        """Runs data QA turned away when the current plan was made (no FASTQ, not metagenomic, ...), with why."""
        # `plans` is the workflow layer's reverse relation, prefetched by the view (newest generation first).
        plans = list(obj.plans.all()) if hasattr(obj, "plans") else []
        rejected = plans[0].rejected if plans else {}
        return [{"run": run, "reason": reason} for run, reason in rejected.items()]


class CancelSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    reason = StrictCharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="Why; shown as the request's status detail.",
    )
