"""The pipelines as the reconciler sees them: a request's plan over its runs' routes, and what a run records.

Every run data QA lets through has a route (catalogue.py): the first pipeline that takes it, then the pipelines
chained from it. The plan holds every step of the route, frozen with its job spec, its `when:` and the metrics
it records; a chained pipeline's first step waits for the step of its parent named in the chain. When all steps
of one pipeline of a run have completed or been skipped, the run's analysis by that pipeline is recorded: an
`Analysis` with the pipeline's name and version and its steps' metrics as the summary, then the pipeline's own
`ingest_function` if it names one.
"""

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from analyses.models import Analysis, AssemblyAnalysisRequest, ProcessingStatus, Run
from prefect_utils.job_spec import JobSpec
from prefect_utils.policy import ResubmitPolicy
from workflows.ena.client import EnaClient, EnaReadRun, EnaStudyNotFound
from workflows.ena.runs import run_inputs
from workflows.ena.study_sync import sync_study
from workflows.models import PlanStep
from workflows.orchestration.plans import PlannedStep, PlanningFailed, PlanProposal
from workflows.pipelines.catalogue import Catalogue, load_catalogue
from workflows.pipelines.engine import PipelineConfig, PipelineDefinition
from workflows.pipelines.metrics import MetricValue
from workflows.pipelines.spec import ENA_FASTQ


@functools.cache
def _catalogue(extra_dirs: tuple[str, ...]) -> Catalogue:
    return load_catalogue(extra_dirs)


def catalogue() -> Catalogue:
    """This package's pipelines and the site's (`PIPELINE_DIRS`), read once per process."""
    return _catalogue(tuple(map(str, settings.PIPELINE_DIRS)))


def all_step_names() -> set[str]:
    return {step for pipeline in catalogue().pipelines.values() for step in pipeline.steps}


def pipeline_config(
    pipeline: PipelineDefinition, request_resources: Mapping[str, Any] | None = None
) -> PipelineConfig:
    """spec.yaml's defaults, then the site's settings (`PIPELINE_CONFIG[<pipeline>]`), then what the request asked
    for (its `resources`, by step name: a step of that name in any pipeline of the route)."""
    site = pipeline.config(
        {
            "partition": settings.SLURM_PARTITION,
            "job_path": settings.PIPELINE_JOB_PATH,
            **settings.PIPELINE_CONFIG.get(pipeline.name, {}),
        }
    )
    unknown = set(request_resources or {}) - all_step_names()
    if unknown:
        raise ValueError(
            f"a request's resources name pipeline steps ({', '.join(sorted(all_step_names()))}), "
            f"not {sorted(unknown)}"
        )
    own = {step: value for step, value in (request_resources or {}).items() if step in pipeline.steps}
    return site.with_settings(own)


def step_policy(pipeline: PipelineDefinition, step: str) -> ResubmitPolicy:
    """spec.yaml's escalation for OOM and TIMEOUT, under the site's ceilings; a node failure is retried as it was."""
    spec = pipeline.spec.step(step)
    return ResubmitPolicy(
        max_escalations=spec.escalation.max_escalations,
        factor=spec.escalation.factor,
        max_memory_mb=settings.SLURM_MAX_MEMORY_MB,
        max_time_limit_minutes=settings.SLURM_MAX_TIME_MINUTES,
        # A tool that sizes itself from a variable (MEGAHIT's --memory) must grow with the job's limit.
        memory_environment=dict(spec.memory_environment),
    )


class StudyAnalysis:
    """The reconciler's pipeline (plans.Pipeline): every run of a study on its route."""

    name = "analysis"

    @property
    def version(self) -> str:
        """Names the catalogue the plan was made from (each step's pipeline and version are frozen with it)."""
        versions = sorted((p.name, p.version) for p in catalogue().pipelines.values())
        return hashlib.sha256(repr(versions).encode()).hexdigest()[:12]

    def check_run(self, run: EnaReadRun) -> str | None:
        return catalogue().check_run(run)

    def propose_plan(self, request: AssemblyAnalysisRequest, plan_uid: str) -> PlanProposal:
        try:
            sync = sync_study(
                request.study_accession, EnaClient(settings.ENA_PORTAL_API_URL), check_run=self.check_run
            )
        except EnaStudyNotFound as exc:
            raise PlanningFailed(str(exc)) from exc
        AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(study_id=sync.study_id)
        pipelines = catalogue()
        resources = (request.request_metadata or {}).get("resources")
        try:
            configs = {name: pipeline_config(p, resources) for name, p in pipelines.pipelines.items()}
        except ValueError as exc:
            raise PlanningFailed(f"resources: {exc}") from exc
        root = Path(settings.JOBS_ROOT) / f"request-{request.pk}-{plan_uid[:8]}"
        steps: list[PlannedStep] = []
        rejected = dict(sync.rejected)
        for run in Run.objects.filter(pk__in=sync.usable_run_ids).order_by("accession"):
            entry, refusal = pipelines.route_of(
                run.library_strategy, run.library_source, run.instrument_platform
            )
            if entry is None:  # the catalogue changed since the sync judged the run
                rejected[run.accession] = f"{run.accession}: {refusal}"
                continue
            inputs = run_inputs(run)
            route: list[tuple[PipelineDefinition, str | None, str]] = [(entry, None, "")]
            route += [
                (p, link.after, link.when.text if link.when else "")
                for link, p in pipelines.chained(entry.name)
            ]
            for pipeline, chained_after, chain_when in route:
                for step in pipeline.spec.steps:
                    first_of_chain = chained_after is not None and step.after is None
                    after = chained_after if first_of_chain else step.after
                    steps.append(
                        PlannedStep(
                            run_id=run.pk,
                            run_accession=run.accession,
                            step=step.name,
                            spec=pipeline.build_step_spec(
                                step.name,
                                inputs,
                                root / run.accession,
                                configs[pipeline.name],
                                after=chained_after if first_of_chain else None,
                            ),
                            # Later steps read what earlier ones wrote: their identity is their spec and its place.
                            inputs=dict(zip(inputs.fastq_urls, inputs.fastq_md5, strict=True))
                            if ENA_FASTQ in step.inputs
                            else {},
                            depends_on=(after,) if after else (),
                            policy=step_policy(pipeline, step.name),
                            pipeline=pipeline.name,
                            when=chain_when if first_of_chain else (step.when.text if step.when else ""),
                            metrics=tuple(m.to_dict() for m in step.metrics),
                        )
                    )
        return PlanProposal(steps=steps, rejected=rejected)

    def ingested(self, request: AssemblyAnalysisRequest) -> set[tuple[str, str]]:
        """(run accession, pipeline) of every analysis already recorded for this request."""
        return set(
            Analysis.objects.filter(request=request, status=ProcessingStatus.COMPLETED).values_list(
                "run__accession", "pipeline"
            )
        )

    def ingest(
        self,
        request: AssemblyAnalysisRequest,
        pipeline_name: str,
        steps: Sequence[PlanStep],
        metrics: Mapping[str, MetricValue],
    ) -> dict[str, Any]:
        """The analysis of one run by one pipeline whose steps all completed or were skipped; unique per (request,
        run, pipeline) in the database, so this is an upsert."""
        run_id = steps[0].run_id
        if run_id is None:  # the run was deleted since the plan was made (SET_NULL)
            raise Run.DoesNotExist(f"The run of plan step {steps[0].pk} no longer exists.")
        run = Run.objects.select_related("study").get(pk=run_id)
        pipeline = catalogue()[pipeline_name]
        workdir = Path(JobSpec.from_canonical(steps[-1].spec).workdir)
        layout = pipeline.layout(workdir, run_inputs(run))
        summary = {
            **metrics,
            "results": {name: [str(p) for p in layout.file(name)] for name in pipeline.spec.results},
        }
        with transaction.atomic():
            analysis, _ = Analysis.objects.update_or_create(
                request=request,
                run=run,
                pipeline=pipeline_name,
                defaults={
                    "study": run.study,
                    "pipeline_version": pipeline.version,
                    "status": ProcessingStatus.COMPLETED,
                    "results_directory": str(workdir),
                    "summary": summary,
                },
            )
            ingest_function = catalogue().ingest_function(pipeline_name)
            if ingest_function is not None:
                ingest_function(
                    request=request,
                    run=run,
                    analysis=analysis,
                    layout=pipeline.layout(workdir, run_inputs(run)),
                )
        return summary


STUDY_ANALYSIS = StudyAnalysis()
