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

from analyses.models import (
    Analysis,
    AssemblyAnalysisRequest,
    ProcessingStatus,
    Run,
    StudyResult,
    allocate_accessions,
)
from prefect_utils.job_spec import JobSpec
from prefect_utils.policy import ResubmitPolicy
from workflows.ena.client import EnaClient, EnaReadRun, EnaStudyNotFound
from workflows.ena.runs import run_inputs
from workflows.ena.study_sync import sync_study
from workflows.models import PlanStep
from workflows.orchestration.plans import (
    COMPLETED,
    SKIPPED,
    STUDY_RUN,
    PlannedStep,
    PlanningFailed,
    PlanProposal,
)
from workflows.pipelines.catalogue import Catalogue, load_catalogue
from workflows.pipelines.conditions import parse_condition
from workflows.pipelines.engine import STUDY_DIR, PipelineConfig, PipelineDefinition, datamove_step
from workflows.pipelines.metrics import MetricsSpec, MetricValue, read_metrics
from workflows.pipelines.spec import ENA_FASTQ

# One pipeline of a run's route: the pipeline, the step of its parent it waits for (None for the first) and the
# `when` of the chain that leads to it.
RouteLeg = tuple[PipelineDefinition, str | None, str]


@functools.cache
def _catalogue(extra_dirs: tuple[str, ...]) -> Catalogue:
    return load_catalogue(extra_dirs)


def catalogue() -> Catalogue:
    """This package's pipelines and the site's (`PIPELINE_DIRS`), read once per process."""
    return _catalogue(tuple(map(str, settings.PIPELINE_DIRS)))


def all_step_names() -> set[str]:
    """Every step a plan can hold: the specs' steps and the datamove ending each pipeline (and its study steps)."""
    names: set[str] = set()
    for pipeline in catalogue().pipelines.values():
        names.update(pipeline.steps)
        names.add(datamove_step(pipeline.name))
        if pipeline.study_results():
            names.add(datamove_step(pipeline.name, study=True))
    return names


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
    steps = {step for p in catalogue().pipelines.values() for step in p.steps}
    unknown = set(request_resources or {}) - steps
    if unknown:
        raise ValueError(
            f"a request's resources name pipeline steps ({', '.join(sorted(steps))}), not {sorted(unknown)}"
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


def datamove_policy() -> ResubmitPolicy:
    """A copy is not escalated: a node failure is retried as it was, under the site's ceilings."""
    return ResubmitPolicy(
        max_memory_mb=settings.SLURM_MAX_MEMORY_MB, max_time_limit_minutes=settings.SLURM_MAX_TIME_MINUTES
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

    def step_metrics(self, step: PlanStep) -> dict[str, Any]:
        environment = JobSpec.from_canonical(step.spec).environment
        values: dict[str, Any] = {}
        for declared in map(MetricsSpec.from_dict, step.metrics):
            values.update(read_metrics(declared, Path(environment[declared.file.upper()])))
        return values

    def unmet(self, when: str, metrics: Mapping[str, Any]) -> str | None:
        condition = parse_condition(when)
        return None if condition.holds(metrics) else condition.why_false(metrics)

    def propose_plan(self, request: AssemblyAnalysisRequest, plan_uid: str) -> PlanProposal:
        try:
            sync = sync_study(
                request.study_accession, EnaClient(settings.ENA_PORTAL_API_URL), check_run=self.check_run
            )
        except EnaStudyNotFound as exc:
            raise PlanningFailed(str(exc)) from exc
        AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(study_id=sync.study_id)
        request.study_id = sync.study_id
        pipelines = catalogue()
        resources = (request.request_metadata or {}).get("resources")
        try:
            configs = {name: pipeline_config(p, resources) for name, p in pipelines.pipelines.items()}
        except ValueError as exc:
            raise PlanningFailed(f"resources: {exc}") from exc
        root = Path(settings.JOBS_ROOT) / f"request-{request.pk}-{plan_uid[:8]}"
        steps: list[PlannedStep] = []
        rejected = dict(sync.rejected)
        routes: dict[int, list[RouteLeg]] = {}
        usable = Run.objects.filter(pk__in=sync.usable_run_ids)
        if (incremental := (request.request_metadata or {}).get("runs")) is not None:
            # An incremental request (a watched study's new runs): those runs only, the others are done; and any
            # newer still that this sync found (no other request would take them up for the watcher).
            only = {*incremental, *sync.added}
            usable = usable.filter(accession__in=only)
            rejected = {accession: why for accession, why in rejected.items() if accession in only}
        runs = list(usable.select_related("study").order_by("accession"))
        for run in runs:
            entry, refusal = pipelines.route_of(
                run.library_strategy, run.library_source, run.instrument_platform
            )
            if entry is None:  # the catalogue changed since the sync judged the run
                rejected[run.accession] = f"{run.accession}: {refusal}"
                continue
            routes[run.pk] = [(entry, None, "")] + [
                (p, link.after, link.when.text if link.when else "")
                for link, p in pipelines.chained(entry.name)
            ]
        accessions = analysis_accessions(
            request, [(run, p.name) for run in runs if run.pk in routes for p, _, _ in routes[run.pk]]
        )
        for run in runs:
            if run.pk in routes:
                steps += self._run_steps(run, routes[run.pk], root / run.accession, configs, accessions)
        used = {p.name: p for route in routes.values() for p, _, _ in route}
        for pipeline in sorted(used.values(), key=lambda p: p.name):
            steps += self._study_steps(request, pipeline, root, configs[pipeline.name])
        return PlanProposal(steps=steps, rejected=rejected)

    def _run_steps(
        self,
        run: Run,
        route: list[RouteLeg],
        workdir: Path,
        configs: Mapping[str, PipelineConfig],
        accessions: Mapping[tuple[int, str], str],
    ) -> list[PlannedStep]:
        """Every step of the run's route (each pipeline with the step of its parent it waits for and its `when`),
        each pipeline ended by the move of its results to RESULTS_ROOT/<MGYS>/<MGYA>/."""
        inputs = run_inputs(run)
        steps: list[PlannedStep] = []
        for pipeline, chained_after, chain_when in route:
            for step in pipeline.spec.steps:
                if step.per_study:
                    continue
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
                            workdir,
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
                        batch_max_runs=step.batch_max_runs,
                    )
                )
            # Skipped with its pipeline, as it depends on the pipeline's last step.
            results_dir = (
                Path(settings.RESULTS_ROOT) / run.study.accession / accessions[(run.pk, pipeline.name)]
            )
            steps.append(
                PlannedStep(
                    run_id=run.pk,
                    run_accession=run.accession,
                    step=datamove_step(pipeline.name),
                    spec=pipeline.build_datamove_spec(
                        inputs,
                        workdir,
                        results_dir,
                        configs[pipeline.name],
                        after=pipeline.run_steps[-1],
                        partition=settings.SLURM_DATAMOVER_PARTITION,
                    ),
                    depends_on=(pipeline.run_steps[-1],),
                    policy=datamove_policy(),
                    pipeline=pipeline.name,
                )
            )
        return steps

    def _study_steps(
        self,
        request: AssemblyAnalysisRequest,
        pipeline: PipelineDefinition,
        root: Path,
        config: PipelineConfig,
    ) -> list[PlannedStep]:
        """The pipeline's steps of `scope: study` for this request (they wait for every run of the pipeline), and
        the move of their results to RESULTS_ROOT/<MGYS>/requests/<request>/<pipeline>/."""
        study_steps = [step for step in pipeline.spec.steps if step.per_study]
        if not study_steps:
            return []
        study = request.study
        assert study is not None  # set by the sync that precedes the plan
        label = study.accession
        planned = [
            PlannedStep(
                run_id=None,
                run_accession=STUDY_RUN,
                step=step.name,
                spec=pipeline.build_study_step_spec(step.name, root, config, label=label),
                depends_on=(step.after,) if step.after else (),
                policy=step_policy(pipeline, step.name),
                pipeline=pipeline.name,
                when=step.when.text if step.when else "",
                metrics=tuple(m.to_dict() for m in step.metrics),
            )
            for step in study_steps
        ]
        if pipeline.study_results():
            results_dir = Path(settings.RESULTS_ROOT) / label / "requests" / str(request.pk) / pipeline.name
            planned.append(
                PlannedStep(
                    run_id=None,
                    run_accession=STUDY_RUN,
                    step=datamove_step(pipeline.name, study=True),
                    spec=pipeline.build_datamove_spec(
                        None,
                        root / STUDY_DIR,
                        results_dir,
                        config,
                        after=study_steps[-1].name,
                        partition=settings.SLURM_DATAMOVER_PARTITION,
                        label=label,
                    ),
                    depends_on=(study_steps[-1].name,),
                    policy=datamove_policy(),
                    pipeline=pipeline.name,
                )
            )
        return planned

    def ingested(self, request: AssemblyAnalysisRequest) -> set[tuple[str, str]]:
        """(run accession, pipeline) of every analysis already recorded for this request, and (`STUDY_RUN`,
        pipeline) of its study results."""
        analyses = Analysis.objects.filter(request=request, status=ProcessingStatus.COMPLETED)
        studies = StudyResult.objects.filter(request=request).values_list("pipeline", flat=True)
        return {*analyses.values_list("run__accession", "pipeline"), *((STUDY_RUN, name) for name in studies)}

    def ingest(
        self,
        request: AssemblyAnalysisRequest,
        pipeline_name: str,
        steps: Sequence[PlanStep],
        metrics: Mapping[str, MetricValue],
    ) -> dict[str, Any]:
        """The analysis of one run by one pipeline whose steps all completed or were skipped (or the study result
        of its study steps); unique per (request, run, pipeline) in the database, so this is an upsert."""
        if steps[0].run_accession == STUDY_RUN:
            return self._ingest_study(request, pipeline_name, steps, metrics)
        run_id = steps[0].run_id
        if run_id is None:  # the run was deleted since the plan was made (SET_NULL)
            raise Run.DoesNotExist(f"The run of plan step {steps[0].pk} no longer exists.")
        run = Run.objects.select_related("study").get(pk=run_id)
        pipeline = catalogue()[pipeline_name]
        move = JobSpec.from_canonical(next(s for s in steps if s.step == datamove_step(pipeline_name)).spec)
        results_dir = Path(move.environment["RESULTS_DIR"])
        # From here on the archive's copy is the analysis's: the work directory is not read again.
        files = read_manifest(results_dir / "manifest.tsv")
        summary = dict(metrics)
        with transaction.atomic():
            analysis, _ = Analysis.objects.update_or_create(
                request=request,
                run=run,
                pipeline=pipeline_name,
                defaults={
                    "study": run.study,
                    "pipeline_version": pipeline.version,
                    "status": ProcessingStatus.COMPLETED,
                    "results_directory": str(results_dir),
                    "summary": summary,
                    "files": files,
                },
            )
            ingest_function = catalogue().ingest_function(pipeline_name)
            if ingest_function is not None:
                ingest_function(
                    request=request,
                    run=run,
                    analysis=analysis,
                    # The moved results keep their paths below the run's directory.
                    layout=pipeline.layout(results_dir, run_inputs(run)),
                )
        return summary

    def _ingest_study(
        self,
        request: AssemblyAnalysisRequest,
        pipeline_name: str,
        steps: Sequence[PlanStep],
        metrics: Mapping[str, MetricValue],
    ) -> dict[str, Any]:
        move = next((s for s in steps if s.step == datamove_step(pipeline_name, study=True)), None)
        results_dir = Path(JobSpec.from_canonical(move.spec).environment["RESULTS_DIR"]) if move else None
        assert request.study_id is not None
        StudyResult.objects.update_or_create(
            request=request,
            pipeline=pipeline_name,
            defaults={
                "study_id": request.study_id,
                "pipeline_version": catalogue()[pipeline_name].version,
                "results_directory": str(results_dir or ""),
                "files": read_manifest(results_dir / "manifest.tsv") if results_dir else [],
                "summary": dict(metrics),
            },
        )
        return dict(metrics)

    def settle(self, request: AssemblyAnalysisRequest, outcomes: Mapping[str, Mapping[str, Any]]) -> None:
        """The analyses planned for pipelines that did not complete: a skipped one's is deleted (its MGYA is never
        used), a failed one's is marked failed."""
        pending = Analysis.objects.filter(request=request, status=ProcessingStatus.PENDING)
        skipped, failed = [], []
        for pk, run, pipeline_name in pending.values_list("pk", "run__accession", "pipeline"):
            what = outcomes.get(run, {}).get("pipelines", {}).get(pipeline_name, "")
            if what.startswith(SKIPPED):
                skipped.append(pk)
            elif what != COMPLETED:
                failed.append(pk)
        Analysis.objects.filter(pk__in=skipped).delete()
        Analysis.objects.filter(pk__in=failed).update(status=ProcessingStatus.FAILED)


def analysis_accessions(
    request: AssemblyAnalysisRequest, wanted: Sequence[tuple[Run, str]]
) -> dict[tuple[int, str], str]:
    """The MGYA of each (run, pipeline) of the request's routes, allocated now (a pending Analysis) because the
    datamove's destination names it and is frozen in the plan. Concurrent planners agree: the rows are unique per
    (request, run, pipeline), and the loser's allocated numbers are never used."""
    existing = _analyses_of(request)
    missing = [(run, pipeline) for run, pipeline in wanted if (run.pk, pipeline) not in existing]
    if missing:
        accessions = allocate_accessions("MGYA", len(missing))
        Analysis.objects.bulk_create(
            [
                Analysis(
                    accession=accession,
                    study_id=run.study_id,
                    run=run,
                    request=request,
                    pipeline=pipeline,
                    pipeline_version=catalogue()[pipeline].version,
                    status=ProcessingStatus.PENDING,
                )
                for (run, pipeline), accession in zip(missing, accessions, strict=True)
            ],
            ignore_conflicts=True,
        )
        existing = _analyses_of(request)
    return existing


def _analyses_of(request: AssemblyAnalysisRequest) -> dict[tuple[int, str], str]:
    rows = Analysis.objects.filter(request=request, run__isnull=False).values_list(
        "run_id", "pipeline", "accession"
    )
    return {(run_id, pipeline): accession for run_id, pipeline, accession in rows}


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """A datamove's manifest.tsv: path (relative to its directory), size in bytes, sha256."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(
            f"{path}: the manifest of the moved results cannot be read: {exc.strerror or exc}"
        ) from None
    if not lines or lines[0].split("\t") != ["path", "size", "sha256"]:
        raise ValueError(f"{path}: not a manifest (its header is not path, size, sha256)")
    files = []
    for line in lines[1:]:
        name, size, sha256 = line.split("\t")
        files.append({"path": name, "size": int(size), "sha256": sha256})
    return files


STUDY_ANALYSIS = StudyAnalysis()
