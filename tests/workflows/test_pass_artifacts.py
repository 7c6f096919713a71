"""What a pass shows in Prefect stays small whatever the size of the request (issue 19, item 5)."""

import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from analyses.models import AssemblyAnalysisRequest
from workflows.models import ClusterJob, RequestProgress
from workflows.pipelines.analysis.flow import SUMMARY_MAX_BYTES, artifact_key, jobs_summary, post_progress

pytestmark = pytest.mark.django_db


def test_the_summary_of_5000_jobs_stays_under_64_kb_and_counts_right():
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    states = ["COMPLETED"] * 3000 + ["FAILED"] * 1200 + ["RUNNING"] * 500 + ["PENDING"] * 299 + ["NEW"]
    ClusterJob.objects.bulk_create(
        ClusterJob(
            key=f"{n:040d}",
            spec={"output_path": f"/data/jobs/request-1/ERR{n:07d}/slurm-%j.out"},
            request=request,
            slurm_job_id=None if state == "NEW" else str(10_000 + n),
            state=state,
            state_stale=state == "RUNNING" and n % 2 == 0,
        )
        for n, state in enumerate(states)
    )
    failed = {
        f"ERR{n:07d}": f"assembly: FAILED (exit code 1) after 2 attempts; {'log tail ' * 80}"
        for n in range(1200)
    }

    summary = jobs_summary(request.pk, failed)

    assert len(summary.encode()) <= SUMMARY_MAX_BYTES == 64 * 1024
    assert "5,000 job(s)" in summary
    for state, count in [("COMPLETED", "3,000"), ("FAILED", "1,200"), ("RUNNING", "500"), ("PENDING", "299")]:
        assert f"| {state} | {count} |" in summary
    assert "| NEW | 1 |" in summary and "250 stale" in summary
    listed = [line for line in summary.splitlines() if line.startswith("- `ERR")]
    assert 0 < len(listed) < 1200 and f"and {1200 - len(listed):,} more" in summary
    assert f"/api/assembly-analysis-requests/{request.pk}/jobs/" in summary


def test_a_small_request_lists_every_failure():
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    summary = jobs_summary(request.pk, {"ERR0000002": "read_qc: FAILED (exit code 3)"})
    assert "- `ERR0000002`: read_qc: FAILED (exit code 3)" in summary and "more" not in summary


@flow(name="emgapi-test-progress")
def a_pass(request_id: int, percent: float) -> None:
    """What the assembly flow does with its progress at the end of a pass, in a flow run of its own."""
    post_progress(request_id, percent)


def test_progress_is_one_artifact_updated_in_place(prefect_server):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    flow_runs = [a_pass(request.pk, 25.0, return_state=True).state_details.flow_run_id]
    first = RequestProgress.objects.get(pk=request.pk).progress_artifact
    flow_runs.append(a_pass(request.pk, 75.0, return_state=True).state_details.flow_run_id)  # the next pass

    with get_client(sync_client=True) as client:
        # Of these two runs only: earlier test sessions left artifacts under the same key (ids restart).
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key(request.pk, "progress")]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run for run in flow_runs if run]),
            )
        )
        try:
            assert first and RequestProgress.objects.get(pk=request.pk).progress_artifact == first
            assert [(artifact.id, artifact.type, artifact.data) for artifact in artifacts] == [
                (uuid.UUID(first), "progress", 75.0)
            ]
        finally:
            for artifact in artifacts:
                client.delete_artifact(artifact.id)
            for flow_run_id in filter(None, flow_runs):
                client.delete_flow_run(flow_run_id)
