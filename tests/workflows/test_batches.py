"""Batched steps: how ready runs are grouped (PostgreSQL only), and a batch holding one failing run, passed to the
end, then retried, on the real Slurm with the amplicon pipeline's real tools (cutadapt, vsearch)."""

import re

import pytest

from analyses.models import Analysis, AssemblyAnalysisRequest
from prefect_utils.job_spec import JobSpec
from prefect_utils.keys import job_key
from prefect_utils.policy import ResubmitPolicy
from tests.slurm_support import job_ids_with_comment
from tests.workflows.test_reconciler import run_to_the_end
from workflows.models import ClusterJob, PlanStep, StepBatch
from workflows.orchestration.batches import BatchDecisions, RequestBatches
from workflows.orchestration.recovery import retry_failed_runs

LABELS = {"request_id": 0}


def member(run: str, first_attempt: int = 1, *, step: str = "denoise") -> PlanStep:
    spec = JobSpec(
        name=f"emgapi-{step}-{run}",
        script="#!/bin/bash\ntrue\n",
        workdir=f"/jobs/request-1-abcdef12/{run}",
        environment={"RUN_ACCESSION": run},
        output_path=f"/jobs/request-1-abcdef12/{run}/{step}.log",
    )
    return PlanStep(
        run_accession=run,
        step=step,
        pipeline="amplicon",
        spec=spec.canonical(),
        policy=ResubmitPolicy().to_dict(),
        key=job_key(spec, {}),
        first_attempt=first_attempt,
        batch_max_runs=2,
    )


def decide_and_form(
    steps: list[PlanStep], batches: RequestBatches, coming: dict[tuple[str, str], int] | None = None
) -> BatchDecisions:
    """A pass's two calls for these ready steps, with no batch job in the ledger."""
    decisions, unbatched = batches.decide(steps, {}, LABELS)
    batches.form(unbatched, coming or {}, LABELS, decisions)
    return decisions


@pytest.mark.django_db
class TestGrouping:
    @pytest.fixture
    def batches(self) -> RequestBatches:
        request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00008")
        return RequestBatches(request.pk, [])

    def test_ready_runs_fill_batches_of_max_runs_in_accession_order(self, batches: RequestBatches) -> None:
        steps = [member("ERR3"), member("ERR1"), member("ERR2")]
        decisions = decide_and_form(steps, batches)

        pair, single = StepBatch.objects.order_by("-label")  # "2 runs: …" before "1 run: …"
        assert (pair.members, pair.label) == ({"ERR1": 1, "ERR2": 1}, "2 runs: ERR1 … ERR2")
        assert (single.members, single.label) == ({"ERR3": 1}, "1 run: ERR3")
        assert {member: s.key for member, s in decisions.submissions.items()} == {
            ("ERR1", "denoise"): pair.key,
            ("ERR2", "denoise"): pair.key,
            ("ERR3", "denoise"): single.key,
        }
        # The batch's job runs each member's own script, in the directory beside the runs'.
        spec = JobSpec.from_canonical(decisions.submissions[("ERR1", "denoise")].spec)
        assert spec.workdir.startswith("/jobs/request-1-abcdef12/batches/denoise-")
        assert spec.environment["BATCH_1__RUN_ACCESSION"] == "ERR1" and spec.environment["BATCH_SIZE"] == "2"

        # A rerun of the pass finds the batches frozen: the same keys, no new row.
        again = decide_and_form(steps, RequestBatches.load(batches.request_id))
        assert again.submissions == decisions.submissions and StepBatch.objects.count() == 2

    def test_a_partial_batch_waits_while_another_run_may_join(self, batches: RequestBatches) -> None:
        coming = {("amplicon", "denoise"): 1}
        decisions = decide_and_form([member("ERR1")], batches, coming)
        assert decisions.held == {("ERR1", "denoise")} and not decisions.submissions
        assert not StepBatch.objects.exists()

        # A full batch does not wait.
        decisions = decide_and_form([member("ERR1"), member("ERR2")], batches, coming)
        assert not decisions.held and len({s.key for s in decisions.submissions.values()}) == 1

    def test_the_key_covers_the_members_and_their_generation(self, batches: RequestBatches) -> None:
        first = decide_and_form([member("ERR1")], batches).submissions[("ERR1", "denoise")]
        retried = decide_and_form([member("ERR1", first_attempt=2)], batches).submissions
        other = decide_and_form([member("ERR2")], batches).submissions
        keys = {first.key, retried[("ERR1", "denoise")].key, other[("ERR2", "denoise")].key}
        assert len(keys) == 3


@pytest.mark.slurm
@pytest.mark.django_db(transaction=True)
def test_a_batch_holding_one_failing_run_fails_that_run_alone_and_a_retry_regroups_it(pipeline_world, jobs):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00008")
    run_to_the_end(request.pk, jobs)

    request.refresh_from_db()
    metadata = request.request_metadata
    assert request.status == "completed", request.status_detail
    assert metadata["succeeded_runs"] == ["ERR9000014", "ERR9000015"]
    assert set(metadata["failed_runs"]) == {"ERR9000016"}
    assert re.fullmatch(
        r"trim_primers \(batch job \d+ of 3 runs\): exit code 1: ERR9000016: no read pair starts with the "
        r"primers GTGYCAGCMGCCGCGGTAA / GGACTACNVGGGTWTCTAAT \(log .*/ERR9000016/trim_primers\.log\)",
        metadata["failed_runs"]["ERR9000016"],
    ), metadata["failed_runs"]
    batches = {row.step: row.members for row in StepBatch.objects.filter(request=request)}
    assert batches == {
        "trim_primers": {"ERR9000014": 1, "ERR9000015": 1, "ERR9000016": 1},
        "merge_and_filter": {"ERR9000014": 1, "ERR9000015": 1},
        "denoise": {"ERR9000014": 1, "ERR9000015": 1},
    }
    # A job per run to fetch, one per batch, a move per analysis, the study's step and its move.
    assert ClusterJob.objects.filter(request=request).count() == 3 + 3 + 2 + 2
    for job in ClusterJob.objects.filter(request=request):
        assert job.state == "COMPLETED" and job_ids_with_comment(job.submission_key) == {job.slurm_job_id}
    completed = Analysis.objects.filter(request=request, status="completed", run__isnull=False)
    figures = {a.run.accession: a.summary for a in completed.select_related("run") if a.run}
    assert figures["ERR9000014"]["asvs"] == 5 and figures["ERR9000015"]["asvs"] == 3

    sbatch = jobs.client.calls["sbatch"]
    assert retry_failed_runs(request.pk) == ["ERR9000016"]
    run_to_the_end(request.pk, jobs)
    request.refresh_from_db()
    # The failed run alone was batched again (a new key, its step's second attempt), and failed again.
    assert jobs.client.calls["sbatch"] == sbatch + 1
    trim = StepBatch.objects.filter(request=request, step="trim_primers").order_by("created")
    assert [row.members for row in trim] == [
        {"ERR9000014": 1, "ERR9000015": 1, "ERR9000016": 1},
        {"ERR9000016": 2},
    ]
    assert set(request.request_metadata["failed_runs"]) == {"ERR9000016"}
    assert request.request_metadata["succeeded_runs"] == ["ERR9000014", "ERR9000015"]
