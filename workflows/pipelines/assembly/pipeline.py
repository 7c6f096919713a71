"""The assembly pipeline as the reconciler sees it: how a request's plan is proposed, how a run is ingested."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from analyses.models import Analysis, Assembly, AssemblyAnalysisRequest, ProcessingStatus, Run
from prefect_utils.job_spec import JobSpec
from prefect_utils.policy import ResubmitPolicy
from workflows.ena.client import EnaClient, EnaStudyNotFound
from workflows.ena.runs import run_inputs
from workflows.ena.study_sync import sync_study
from workflows.models import PlanStep
from workflows.orchestration.plans import PlannedStep, PlanningFailed, PlanProposal
from workflows.pipelines.assembly.steps import (
    SPEC,
    STEPS,
    PipelineConfig,
    build_step_spec,
    check_run_usable,
    read_assembly_stats,
    run_layout,
)

VERSION = SPEC.version


def pipeline_config(request_resources: Mapping[str, Any] | None = None) -> PipelineConfig:
    """spec.yaml's defaults, then the site's settings, then what the request asked for (its `resources`)."""
    site = PipelineConfig.from_mapping(
        {
            "partition": settings.SLURM_PARTITION,
            "job_path": settings.PIPELINE_JOB_PATH,
            **settings.PIPELINE_CONFIG,
        }
    )
    unknown = set(request_resources or {}) - set(STEPS)
    if unknown:
        raise ValueError(
            f"a request's resources name pipeline steps ({', '.join(STEPS)}), not {sorted(unknown)}"
        )
    return PipelineConfig.from_mapping(request_resources or {}, base=site)


def step_policy(step: str) -> ResubmitPolicy:
    """spec.yaml's escalation for OOM and TIMEOUT, under the site's ceilings; a node failure is retried as it was."""
    spec = SPEC.step(step)
    return ResubmitPolicy(
        max_escalations=spec.escalation.max_escalations,
        factor=spec.escalation.factor,
        max_memory_mb=settings.SLURM_MAX_MEMORY_MB,
        max_time_limit_minutes=settings.SLURM_MAX_TIME_MINUTES,
        # A tool that sizes itself from a variable (MEGAHIT's --memory) must grow with the job's limit.
        memory_environment=dict(spec.memory_environment),
    )


class AssemblyPipeline:
    name = "assembly"
    version = VERSION
    check_run = staticmethod(check_run_usable)

    def propose_plan(self, request: AssemblyAnalysisRequest, plan_uid: str) -> PlanProposal:
        try:
            sync = sync_study(
                request.study_accession, EnaClient(settings.ENA_PORTAL_API_URL), check_run=self.check_run
            )
        except EnaStudyNotFound as exc:
            raise PlanningFailed(str(exc)) from exc
        AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(study_id=sync.study_id)
        try:
            config = pipeline_config((request.request_metadata or {}).get("resources"))
        except ValueError as exc:
            raise PlanningFailed(f"resources: {exc}") from exc
        root = Path(settings.JOBS_ROOT) / f"request-{request.pk}-{plan_uid[:8]}"
        steps = []
        for run in Run.objects.filter(pk__in=sync.usable_run_ids).order_by("accession"):
            inputs = run_inputs(run)
            for index, step in enumerate(STEPS):
                steps.append(
                    PlannedStep(
                        run_id=run.pk,
                        run_accession=run.accession,
                        step=step,
                        spec=build_step_spec(step, inputs, root / run.accession, config),
                        # Later steps read what earlier ones wrote: their identity is their spec and its place.
                        inputs=dict(zip(inputs.fastq_urls, inputs.fastq_md5, strict=True))
                        if index == 0
                        else {},
                        depends_on=(STEPS[index - 1],) if index else (),
                        policy=step_policy(step),
                    )
                )
        return PlanProposal(steps=steps, rejected=sync.rejected)

    def ingested_runs(self, request: AssemblyAnalysisRequest) -> set[str]:
        return set(
            Analysis.objects.filter(request=request, status=ProcessingStatus.COMPLETED).values_list(
                "run__accession", flat=True
            )
        )

    def ingest(self, request: AssemblyAnalysisRequest, steps: Sequence[PlanStep]) -> dict[str, Any]:
        """Assembly and Analysis of one run; unique per (request, run) in the database, so this is an upsert."""
        run_id = steps[0].run_id
        if run_id is None:  # the run was deleted since the plan was made (SET_NULL)
            raise Run.DoesNotExist(f"The run of plan step {steps[0].pk} no longer exists.")
        run = Run.objects.select_related("study").get(pk=run_id)
        workdir = Path(JobSpec.from_canonical(steps[-1].spec).workdir)
        layout = run_layout(workdir, run_inputs(run))
        stats = read_assembly_stats(layout.stats_tsv)
        summary = {
            "contigs": stats.contigs,
            "total_length": stats.total_length,
            "n50": stats.n50,
            "largest_contig": stats.largest,
        }
        with transaction.atomic():
            assembly, _ = Assembly.objects.update_or_create(
                request=request,
                run=run,
                defaults={
                    "study": run.study,
                    "directory": str(layout.megahit_dir),
                    "status": ProcessingStatus.COMPLETED,
                },
            )
            assembly.runs.add(run)
            Analysis.objects.update_or_create(
                request=request,
                run=run,
                defaults={
                    "assembly": assembly,
                    "study": run.study,
                    "pipeline_version": VERSION,
                    "status": ProcessingStatus.COMPLETED,
                    "results_directory": str(workdir),
                    "summary": summary,
                },
            )
        return summary


ASSEMBLY = AssemblyPipeline()
