"""The work directories of a finished request: removed by the sweep after the retention, only for runs whose
every pipeline completed (results moved) or was skipped; a failed run's directory is kept for a retry."""

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from prefect_utils.job_spec import JobSpec
from workflows.models import Plan, PlanStep, RequestProgress
from workflows.orchestration.cleanup import clean_work_directories

pytestmark = pytest.mark.django_db

SKIPPED = "skipped: assembly_stats.total_length 11,978 < 20,000"


def finished_request(root: Path, outcomes: dict[str, dict[str, str]]) -> tuple[AssemblyAnalysisRequest, dict]:
    request = AssemblyAnalysisRequest.objects.create(
        study_accession="PRJEB00001",
        status="completed",
        request_metadata={
            "outcomes": {run: {"route": "assembly", "pipelines": p} for run, p in outcomes.items()}
        },
    )
    plan = Plan.objects.create(
        request=request, pipeline="analysis", pipeline_version="x", uid=uuid.uuid4().hex
    )
    workdirs = {}
    for position, run in enumerate(outcomes):
        workdirs[run] = root / f"request-{request.pk}" / run
        (workdirs[run] / "assembly" / "megahit").mkdir(parents=True)
        (workdirs[run] / "assembly" / "megahit" / "final.contigs.fa").write_text(">c\nACGT\n")
        spec = JobSpec(name=f"emgapi-assembly-{run}", script="true", workdir=str(workdirs[run]))
        PlanStep.objects.create(
            plan=plan,
            run_accession=run,
            step="assembly",
            position=position,
            spec=spec.canonical(),
            key=f"k{position}",
        )
    return request, workdirs


def test_after_the_retention_only_runs_whose_results_are_all_in_the_store_lose_their_directory(
    settings, tmp_path
):
    settings.WORK_DIRECTORY_RETENTION_DAYS = 7
    request, workdirs = finished_request(
        tmp_path,
        {
            "ERR1": {"assembly": "completed", "assembly_analysis": "completed"},
            "ERR2": {"assembly": "completed", "assembly_analysis": SKIPPED},
            "ERR3": {"assembly": "completed", "assembly_analysis": "failed: Slurm job 4 ... exit code 1"},
        },
    )
    now = timezone.now()
    assert clean_work_directories(now) == []  # finished just now: kept for the retention
    assert all(path.is_dir() for path in workdirs.values())

    later = now + timedelta(days=7, minutes=1)
    assert clean_work_directories(later) == [request.pk]
    assert not workdirs["ERR1"].exists() and not workdirs["ERR2"].exists()
    assert (
        workdirs["ERR3"] / "assembly" / "megahit" / "final.contigs.fa"
    ).is_file()  # for a person, and a retry
    assert RequestProgress.objects.get(pk=request.pk).work_cleaned_at == later
    assert clean_work_directories(later + timedelta(days=1)) == []  # looked at once


def test_an_active_request_is_never_cleaned(settings, tmp_path):
    settings.WORK_DIRECTORY_RETENTION_DAYS = 0
    request, workdirs = finished_request(tmp_path, {"ERR1": {"assembly": "completed"}})
    AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(status="running")
    assert clean_work_directories(timezone.now() + timedelta(days=30)) == []
    assert workdirs["ERR1"].is_dir()
