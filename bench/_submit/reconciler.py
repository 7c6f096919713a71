"""Phases (d1) and (d2) of bench/submit.py: a reconciler pass over a request whose pipeline (defined here) plans N
independent one-step runs, and the rerun pass over it in a restarted process."""

from __future__ import annotations

import time
from pathlib import Path

from bench._report import QueryTimer
from bench._submit.timing import PassPhase


def reconciler_passes(n: int, workdir: Path, new_jobs, restart, settle, tag: str):
    """A request whose pipeline plans `n` independent one-step runs; a first pass and a rerun pass over it."""
    from django.db import connection

    from analyses.models import AssemblyAnalysisRequest
    from prefect_utils.job_spec import JobSpec
    from workflows.models import ClusterJob
    from workflows.orchestration.plans import PlannedStep, PlanProposal
    from workflows.orchestration.reconciler import reconcile_once

    class BenchPipeline:
        """n runs of one `true` step each, all ready at once; nothing to ingest."""

        name = "bench"
        version = "1"

        def check_run(self, run) -> str | None:
            return None  # the plan names no ENA run: nothing to turn away

        def propose_plan(self, request, plan_uid: str) -> PlanProposal:
            return PlanProposal(
                steps=[
                    PlannedStep(
                        run_id=None,
                        run_accession=f"BENCH{i:06d}",
                        step="true",
                        spec=JobSpec(
                            name=f"bench-{tag}-{i}",
                            script="true",
                            workdir=str(workdir / plan_uid),
                            time_limit_minutes=5,
                            environment={"BENCH_INDEX": str(i)},
                        ),
                    )
                    for i in range(n)
                ],
                rejected={},
            )

        def ingested(self, request) -> set[tuple[str, str]]:
            return set()

        def ingest(self, request, pipeline_name, steps, metrics) -> dict:
            return {}

        def settle(self, request, outcomes) -> None:
            pass

        def step_metrics(self, step) -> dict:
            return {}

        def unmet(self, when, metrics) -> None:
            return None

    pipeline = BenchPipeline()
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    passes = []
    for label in (
        f"(d1) reconciler pass: plan + submit {n} steps",
        "(d2) reconciler rerun pass, restarted process",
    ):
        jobs = new_jobs()
        queries = QueryTimer()
        with connection.execute_wrapper(queries):
            start = time.perf_counter()
            result = reconcile_once(request.pk, pipeline=pipeline, jobs=jobs)
            seconds = time.perf_counter() - start
        passes.append(PassPhase(label, seconds, n, jobs.client.calls, queries, result))
        ids = list(
            ClusterJob.objects.filter(request=request)
            .exclude(slurm_job_id=None)
            .values_list("slurm_job_id", flat=True)
        )
        settle(ids, "reconciler pass jobs")
        restart()
    return passes[0], passes[1], request.pk
