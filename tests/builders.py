"""Rows that tests of several apps build: a failed request with its plan and jobs, chains of archive rows."""

import uuid
from datetime import timedelta

from django.utils import timezone

from analyses.models import (
    Analysis,
    Assembly,
    AssemblyAnalysisRequest,
    Biome,
    Run,
    Sample,
    Study,
    StudyResult,
)
from workflows.models import ClusterJob, Plan, PlanStep


def failed_request(accession: str = "ERR9000001") -> AssemblyAnalysisRequest:
    """A finished request whose read QC failed (exit code 3) after an escalated attempt; fetch completed."""
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    request.status = AssemblyAnalysisRequest.Status.FAILED
    request.request_metadata = {
        "flow_run_id": str(uuid.uuid4()),
        "succeeded_runs": [],
        "failed_runs": {accession: "read_qc exit code 3: <adapter> file missing"},
    }
    request.save()
    plan = Plan.objects.create(
        request=request,
        pipeline="assembly",
        pipeline_version="1",
        uid=uuid.uuid4().hex,
        rejected={"ERR0": "no FASTQ"},
    )
    now = timezone.now()
    keys = {}
    for position, step in enumerate(["fetch_reads", "read_qc"]):
        keys[step] = uuid.uuid4().hex
        PlanStep.objects.create(
            plan=plan, run_accession=accession, step=step, position=position, spec={}, key=keys[step]
        )
    ClusterJob.objects.create(
        key=keys["fetch_reads"],
        attempt=1,
        name=f"emgapi-fetch_reads-{accession}",
        spec={"name": "fetch"},
        slurm_job_id="101",
        state="COMPLETED",
        exit_code=0,
        request=request,
        started_at=now - timedelta(minutes=5),
        ended_at=now - timedelta(minutes=4),
    )
    first = ClusterJob.objects.create(
        key=keys["read_qc"],
        attempt=1,
        name=f"emgapi-read_qc-{accession}",
        spec={"name": "qc"},
        slurm_job_id="102",
        state="OUT_OF_MEMORY",
        request=request,
        log_tail="oom-kill event",
    )
    ClusterJob.objects.create(
        key=keys["read_qc"],
        attempt=2,
        name=f"emgapi-read_qc-{accession}",
        spec={"name": "qc", "mem": 2},
        slurm_job_id="103",
        state="FAILED",
        exit_code=3,
        request=request,
        previous_attempt=first,
        log_tail="<adapter> file missing",
    )
    return request


def populate(count: int) -> None:
    """`count` chains of biome, study, sample, run, assembly, analysis, request and study result, each row with its
    relations."""
    start = Study.objects.count()
    for i in range(start, count):
        biome = Biome.objects.create(lineage=f"root:Environmental:Aquatic:{i}")
        study = Study.objects.create(ena_accession=f"PRJEB{40000 + i}", title=f"study {i}", biome=biome)
        sample = Sample.objects.create(accession=f"SAMEA{4000000 + i}", study=study)
        run = Run.objects.create(accession=f"ERR{4000000 + i}", study=study, sample=sample)
        assembly = Assembly.objects.create(study=study)
        assembly.runs.add(run)
        Analysis.objects.create(study=study, assembly=assembly, run=run)
        request = AssemblyAnalysisRequest.objects.create(study_accession=study.ena_accession, study=study)
        StudyResult.objects.create(
            study=study, request=request, pipeline="amplicon", pipeline_version="1.0", results_directory="/r"
        )
