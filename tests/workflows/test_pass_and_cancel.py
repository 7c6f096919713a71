"""A cancellation that lands while a pass runs: PostgreSQL, the real Slurm and ENA's stub; no Prefect needed."""

import pytest

from analyses.models import AssemblyAnalysisRequest
from analyses.services import cancel_assembly_analysis_request
from workflows.models import ClusterJob, RequestProgress
from workflows.orchestration import reconciler
from workflows.orchestration.reconciler import reconcile
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]


# The pass reads its request without the row lock. Each moment is a call the pass makes after that read and before
# it submits; the cancel is committed there, by wrapping the call (the real one still runs).
@pytest.mark.parametrize("moment", ["record_request_state", "freeze_plan"])
def test_a_cancel_committed_during_a_pass_leaves_the_request_cancelled_with_nothing_submitted(
    pipeline_world, jobs, monkeypatch, moment
):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    real = getattr(reconciler, moment)
    cancelled: list[AssemblyAnalysisRequest] = []

    def cancel_first(*args, **kwargs):
        if not cancelled:
            cancelled.append(
                cancel_assembly_analysis_request(request, by=None, reason="Cancelled mid-pass by the test.")
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(reconciler, moment, cancel_first)
    result = reconcile(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)

    assert cancelled
    request.refresh_from_db()
    assert request.status == "cancelled" and request.status_detail == "Cancelled mid-pass by the test."
    assert not result.waiting and result.status == "cancelled"
    assert jobs.client.calls["sbatch"] == 0
    assert not ClusterJob.objects.filter(request=request, slurm_job_id__isnull=False).exists()
    # The pass holds the request lock, so it carries the cancellation out itself rather than leave it to a sweep.
    assert RequestProgress.objects.get(pk=request.pk).cancel_carried_out_at is not None


def test_a_flow_run_whose_request_was_cancelled_ends_cancelled(pipeline_world, slurm_cluster, prefect_server):
    """Its pass carries the cancellation out under the request lock, which leaves its own run to it."""
    from prefect.client.orchestration import get_client

    from workflows.pipelines.analysis.flow import assemble_and_analyse_study

    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    cancel_assembly_analysis_request(request, by=None)
    state = assemble_and_analyse_study(request.pk, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    try:
        assert state.is_cancelled(), state
    finally:
        if flow_run_id is not None:
            with get_client(sync_client=True) as client:
                client.delete_flow_run(flow_run_id)
