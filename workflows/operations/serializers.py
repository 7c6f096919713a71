from functools import cache

from rest_framework import serializers

from analyses.serializers import ApiModelSerializer
from workflows.models import ClusterJob


class ClusterJobSerializer(ApiModelSerializer):
    """One Slurm job of a request: which step of which run, which attempt, and what Slurm last said."""

    step = serializers.CharField(read_only=True, help_text="The plan step this job runs.")
    run = serializers.CharField(read_only=True, help_text="The run accession it works on.")
    job_id = serializers.CharField(source="slurm_job_id", allow_null=True, read_only=True)
    request = serializers.IntegerField(source="request_id", allow_null=True, read_only=True)

    class Meta:
        model = ClusterJob
        fields = [
            "id",
            "request",
            "step",
            "run",
            "attempt",
            "job_id",
            "state",
            "state_stale",
            "exit_code",
            "reason",
            "submitted_at",
            "started_at",
            "ended_at",
        ]
        read_only_fields = fields


@cache
def columns_shown() -> list[str]:
    """The ledger columns the serializer shows (`step` and `run` are annotations): what a list reads, and not the
    spec, the log tail or the labels of each row."""
    columns = {field.attname for field in ClusterJob._meta.concrete_fields}
    return [field.source for field in ClusterJobSerializer().fields.values() if field.source in columns]
