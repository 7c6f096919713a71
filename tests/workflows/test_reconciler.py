"""Passes of the reconciler over real requests: PostgreSQL, the real Slurm, ENA's stub; no Prefect needed."""

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction

from analyses.models import Analysis, Assembly, AssemblyAnalysisRequest
from analyses.services import cancel_assembly_analysis_request
from prefect_utils.poller import Poller
from prefect_utils.submission import SlurmJobs
from tests.slurm_support import job_ids_with_comment, poll_until
from tests.workflows.pipeline_inputs import STEP_SCRIPTS, STEPS
from workflows.models import ClusterJob, Plan, PlanStep, RequestProgress
from workflows.orchestration.reconciler import PassResult, reconcile, reconcile_once
from workflows.orchestration.recovery import NothingToRetry, carry_out_cancellation, retry_failed_runs
from workflows.orchestration.request_lock import RequestBusy, request_lock, requests_with_live_pass
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS

pytestmark = [pytest.mark.slurm, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def new_request(accession: str = "PRJEB00001") -> AssemblyAnalysisRequest:
    return AssemblyAnalysisRequest.objects.create(study_accession=accession)


def until_a_job_changes(jobs: SlurmJobs, result: PassResult, timeout: float = 120) -> None:
    """What the service poller does between two passes: poll until one of the request's jobs changed state."""
    poller = Poller(jobs)

    def changed() -> bool:
        poller.tick()
        return ClusterJob.objects.filter(
            request_id=result.request_id, state_changed_at__gt=result.read_at
        ).exists()

    poll_until(changed, timeout=timeout, interval=0.3, what="a job of the request to change state")


def run_to_the_end(request_id: int, jobs: SlurmJobs, max_passes: int = 40) -> list[PassResult]:
    results = [reconcile_once(request_id, pipeline=STUDY_ANALYSIS, jobs=jobs)]
    while results[-1].waiting:
        assert len(results) < max_passes, [r.summary for r in results]
        until_a_job_changes(jobs, results[-1])
        results.append(reconcile_once(request_id, pipeline=STUDY_ANALYSIS, jobs=jobs))
    return results


def test_passes_take_a_request_from_plan_to_completed(pipeline_world, jobs):
    request = new_request()
    results = run_to_the_end(request.pk, jobs)

    request.refresh_from_db()
    assert request.status == "completed", request.status_detail
    assert results[0].submitted and len(results[0].submitted) == 2  # the first step of both runs, together
    plan = Plan.objects.get(request=request)
    # Each run's route: the assembly (4 steps), then its analysis (3), chained as its assembly is big enough;
    # each ends by moving its results to the archive's store.
    assert plan.steps.count() == 18
    assert set(plan.steps.values_list("pipeline", "step")) == {
        *(("assembly", s) for s in ("fetch_reads", "read_qc", "assembly", "assembly_stats", "move_assembly")),
        *(
            ("assembly_analysis", s)
            for s in ("gene_calling", "domain_search", "rrna_search", "move_assembly_analysis")
        ),
    }
    analyses = Analysis.objects.filter(request=request)
    assert (
        analyses.filter(pipeline="assembly").count() == 2
        and Assembly.objects.filter(request=request).count() == 2
    )
    for analysis in analyses.filter(pipeline="assembly"):
        assert analysis.summary["contigs"] >= 1 and analysis.summary["n50"] > 1000 and analysis.assembly_id
    # Random demo genomes: prodigal calls genes in any long sequence; no profile and no rRNA matches them.
    for analysis in analyses.filter(pipeline="assembly_analysis"):
        assert (
            analysis.summary["cds"] > 0
            and analysis.summary["domain_hits"] == 0
            and analysis.summary["rrnas"] == 0
        )
    assert analyses.count() == 4
    for analysis in analyses:
        store = Path(analysis.results_directory)
        assert store == pipeline_world.RESULTS_ROOT / analysis.study.accession / analysis.accession
        assert analysis.files and all((store / f["path"]).stat().st_size == f["size"] for f in analysis.files)
    moved = {f["path"] for f in analyses.get(run__accession="ERR9000001", pipeline="assembly").files}
    assert moved == {"assembly/megahit/final.contigs.fa", "assembly/contigs.stats.tsv", "qc/fastp.json"}
    outcomes = request.request_metadata["outcomes"]
    assert outcomes["ERR9000001"] == {
        "route": "assembly",
        "pipelines": {"assembly": "completed", "assembly_analysis": "completed"},
    }
    jobs_of_request = ClusterJob.objects.filter(request=request)
    assert jobs_of_request.count() == 18 and set(jobs_of_request.values_list("state", flat=True)) == {
        "COMPLETED"
    }
    for job in jobs_of_request:
        assert job_ids_with_comment(job.submission_key) == {job.slurm_job_id}
    assert RequestProgress.objects.get(pk=request.pk).passes == len(results)

    # A pass over a finished request changes nothing.
    sbatch = jobs.client.calls["sbatch"]
    again = reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    assert not again.waiting and again.status == "completed" and jobs.client.calls["sbatch"] == sbatch


def test_a_second_pass_in_a_row_changes_nothing(pipeline_world, jobs):
    request = new_request()
    first = reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    assert first.waiting and len(first.submitted) == 2
    rows = list(ClusterJob.objects.order_by("pk").values_list("key", "attempt", "slurm_job_id"))
    sbatch = jobs.client.calls["sbatch"]

    second = reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    assert second.waiting and second.submitted == []
    assert jobs.client.calls["sbatch"] == sbatch
    assert list(ClusterJob.objects.order_by("pk").values_list("key", "attempt", "slurm_job_id")) == rows
    assert Plan.objects.filter(request=request).count() == 1


def test_the_plan_is_frozen_against_new_settings_code_and_ena(pipeline_world, jobs, tmp_path, monkeypatch):
    request = new_request()
    first = reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    planned = {step.key: step.spec for step in PlanStep.objects.filter(plan__request=request)}
    submitted = set(ClusterJob.objects.values_list("key", flat=True))

    # Between the crash and the rerun: a redeploy with other resources and paths, and ENA gone.
    pipeline_world.PIPELINE_CONFIG = {
        "assembly": {"fetch_reads": {"memory_mb": 768}, "assembly": {"cpus": 1}}
    }
    pipeline_world.JOBS_ROOT = tmp_path / "elsewhere"
    pipeline_world.ENA_PORTAL_API_URL = "http://127.0.0.1:9/ena/portal/api"
    for step in STEPS:  # and new step scripts, which would fail every job
        monkeypatch.setitem(STEP_SCRIPTS, step, "#!/bin/bash\necho 'a script of the new release'\nexit 99\n")
    sbatch = jobs.client.calls["sbatch"]
    second = reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    assert second.submitted == [] and jobs.client.calls["sbatch"] == sbatch

    until_a_job_changes(jobs, first)
    run_to_the_end(request.pk, jobs)
    request.refresh_from_db()
    assert request.status == "completed", request.status_detail
    assert submitted <= set(planned)
    for job in ClusterJob.objects.filter(request=request):
        assert job.key in planned and job.spec == planned[job.key]
        assert job_ids_with_comment(job.submission_key) == {job.slurm_job_id}
    assert not (tmp_path / "elsewhere").exists()


def test_ingestion_is_an_upsert_under_a_constraint(pipeline_world, jobs):
    request = new_request()
    run_to_the_end(request.pk, jobs)
    plan = Plan.objects.get(request=request)
    first_step = plan.steps.first()
    assert first_step is not None
    run_steps = list(plan.steps.filter(run_accession=first_step.run_accession, pipeline="assembly"))
    analyses = Analysis.objects.filter(request=request)
    before = analyses.count()
    STUDY_ANALYSIS.ingest(request, "assembly", run_steps, {"contigs": 3})
    STUDY_ANALYSIS.ingest(request, "assembly", run_steps, {"contigs": 3})
    assert analyses.count() == before
    analysis = analyses.filter(run=first_step.run, pipeline="assembly").first()
    assert analysis is not None
    with pytest.raises(IntegrityError), transaction.atomic():
        Analysis.objects.create(
            study=analysis.study,
            run=analysis.run,
            request=request,
            assembly=analysis.assembly,
            pipeline="assembly",
        )


def test_qa_rejections_and_a_study_unknown_to_ena(pipeline_world, jobs):
    missing = new_request("PRJEB99999")
    result = reconcile_once(missing.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    missing.refresh_from_db()
    assert not result.waiting and missing.status == "failed" and "PRJEB99999" in missing.status_detail

    partial = new_request("PRJEB00002")
    run_to_the_end(partial.pk, jobs)
    partial.refresh_from_db()
    assert partial.status == "completed"
    assert partial.request_metadata["failed_runs"] == {}  # ERR9000004 was rejected by data QA: not a failure
    assert "1 rejected by data QA" in partial.status_detail
    assert Analysis.objects.filter(request=partial, pipeline="assembly").count() == 1


def test_cancellation_scancels_and_no_pass_submits_afterwards(pipeline_world, jobs):
    request = new_request()
    first = reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    assert first.waiting
    cancel_assembly_analysis_request(request, by=None, reason="test")
    poll_until(lambda: carry_out_cancellation(request.pk), timeout=60, what="Slurm to confirm the scancel")
    assert set(ClusterJob.objects.filter(request=request).values_list("state", flat=True)) == {"CANCELLED"}
    sbatch = jobs.client.calls["sbatch"]
    after = reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
    assert not after.waiting and after.status == "cancelled" and jobs.client.calls["sbatch"] == sbatch


def test_lingering_pass_goes_on_in_process_when_jobs_are_short(pipeline_world, jobs):
    import threading

    from django.db import connection

    request = new_request()
    stop = threading.Event()

    def poll() -> None:  # the service poller, in another thread as it would be in another process
        poller = Poller(jobs)
        while not stop.wait(0.3):
            poller.tick()
        connection.close()

    poller_thread = threading.Thread(target=poll)
    poller_thread.start()
    try:
        result = reconcile(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs, linger_seconds=300)
    finally:
        stop.set()
        poller_thread.join()
    assert not result.waiting and result.status == "completed"
    assert RequestProgress.objects.get(pk=request.pk).passes >= 4


def live_passes() -> set[int]:
    found = requests_with_live_pass()
    assert found is not None, "PostgreSQL always knows"
    return found


def test_the_request_lock_is_one_pass_at_a_time_and_dies_with_its_process(db):
    def another_pass() -> None:
        with request_lock(7, wait_seconds=0.5):
            pass

    with request_lock(7):
        assert 7 in live_passes()
        with ThreadPoolExecutor(1) as other, pytest.raises(RequestBusy):
            other.submit(another_pass).result()
        # The holder's own thread re-enters it (a flow holds it around its passes), and still holds it after.
        with request_lock(7, wait_seconds=0):
            pass
        assert 7 in live_passes()
    assert 7 not in live_passes()

    # A process that holds the lock and is killed with -9 holds it no longer: no lease to wait out.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import django, sys, time; django.setup();"
            "from workflows.orchestration.request_lock import request_lock\n"
            "with request_lock(8):\n    print('held', flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "emgapi.settings", **_database_env()},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert 8 in live_passes()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    poll_until(lambda: 8 not in live_passes(), timeout=30, what="PostgreSQL to drop the lock")
    with request_lock(8, wait_seconds=0):
        pass


def _database_env() -> dict[str, str]:
    from django.db import connection

    db = connection.settings_dict
    return {
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    }


def test_retrying_failed_runs_supersedes_the_plan_and_reuses_completed_steps(
    pipeline_world, jobs, monkeypatch, tmp_path
):
    allow = tmp_path / "allow-stats"
    gate = f"[ -e {allow} ] || {{ echo 'stats refused for now' >&2; exit 3; }}\n"
    script = STEP_SCRIPTS["assembly_stats"].replace("set -euo pipefail\n", "set -euo pipefail\n" + gate, 1)
    monkeypatch.setitem(STEP_SCRIPTS, "assembly_stats", script)
    request = new_request()
    run_to_the_end(request.pk, jobs)
    request.refresh_from_db()
    assert request.status == "failed"
    reason = request.request_metadata["failed_runs"]["ERR9000001"]
    assert (
        "exit code 3" in reason and "stats refused for now" in reason
    )  # an exit code is reported, not retried
    assert not ClusterJob.objects.filter(request=request, attempt__gt=1).exists()

    sbatch = jobs.client.calls["sbatch"]
    allow.touch()
    assert retry_failed_runs(request.pk) == ["ERR9000001", "ERR9000002"]
    request.refresh_from_db()
    assert request.status == "pending"
    run_to_the_end(request.pk, jobs)
    request.refresh_from_db()
    assert request.status == "completed", request.request_metadata
    # The two stats steps ran again, then what their failure had held back: the moves, and the analysis chained.
    assert jobs.client.calls["sbatch"] == sbatch + 2 + 2 + 8
    assert set(
        ClusterJob.objects.filter(request=request, attempt=2).values_list("spec__name", flat=True)
    ) == {"emgapi-assembly_stats-ERR9000001", "emgapi-assembly_stats-ERR9000002"}
    first, second = Plan.objects.filter(request=request).order_by("generation")
    assert set(first.steps.values_list("first_attempt", flat=True)) == {1}  # superseded, not edited
    assert sorted(second.steps.values_list("first_attempt", flat=True)) == [1] * 16 + [2, 2]
    assert Analysis.objects.filter(request=request, pipeline="assembly").count() == 2
    with pytest.raises(NothingToRetry):
        retry_failed_runs(request.pk)
