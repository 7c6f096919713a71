"""Batched steps at archive scale: how many jobs a study's runs make of a batched step, and what grouping costs a pass.

    .venv/bin/python bench/batches.py [--runs 5000] [--max-runs 4,50]

Builds its own database (emgapi_bench_batches). For each `--max-runs` N, every one of `--runs` runs is ready for
one step with `batch: {max_runs: N}` at once (the members' frozen specs as the amplicon's `denoise` has them); the
pass's two calls (`RequestBatches.decide`, then `form`) group them, freezing a `StepBatch` row per batch. It prints
the jobs made (against one a run without batching), the seconds of that first grouping, and of a rerun pass that
finds every batch frozen (loads the rows, decides again, forms nothing). Nothing is submitted: Slurm is not used.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import say
from bench._setup import bench_parser, fresh_database


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--max-runs", default="4,50", help="comma-separated batch sizes")
    args = parser.parse_args()
    sizes = [int(size) for size in args.max_runs.split(",")]

    where = fresh_database("emgapi_bench_batches")
    from analyses.models import AssemblyAnalysisRequest
    from prefect_utils.job_spec import JobSpec
    from prefect_utils.keys import job_key
    from prefect_utils.policy import ResubmitPolicy
    from workflows.models import PlanStep, StepBatch
    from workflows.orchestration.batches import RequestBatches
    from workflows.pipelines.analysis.pipeline import catalogue

    script = catalogue()["amplicon"].scripts["denoise"]
    say(f"bench/batches.py: {args.runs:,} runs ready for one batched step at once; database {where}")
    say(f"{'max_runs':>8} {'jobs':>7} {'unbatched':>9} {'first pass s':>12} {'rerun pass s':>12}")
    for size in sizes:
        request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00008")
        steps = []
        for index in range(args.runs):
            run = f"ERR{index:07d}"
            workdir = f"/jobs/request-{request.pk}-abcdef12/{run}"
            spec = JobSpec(
                name=f"emgapi-denoise-{run}",
                script=script,
                workdir=workdir,
                cpus=1,
                memory_mb=1024,
                time_limit_minutes=120,
                environment={
                    "RUN_ACCESSION": run,
                    "RUN_DIR": workdir,
                    "ASV_TABLE": f"{workdir}/asv/asv_table.tsv",
                },
                output_path=f"{workdir}/denoise.log",
            )
            steps.append(
                PlanStep(
                    run_accession=run,
                    step="denoise",
                    pipeline="amplicon",
                    spec=spec.canonical(),
                    policy=ResubmitPolicy().to_dict(),
                    key=job_key(spec, {}),
                    batch_max_runs=size,
                )
            )
        started = time.perf_counter()
        batches = RequestBatches.load(request.pk)
        decisions, unbatched = batches.decide(steps, {}, {"request_id": request.pk})
        batches.form(unbatched, {}, {"request_id": request.pk}, decisions)
        first = time.perf_counter() - started
        jobs = len({submission.key for submission in decisions.submissions.values()})

        started = time.perf_counter()
        again = RequestBatches.load(request.pk)
        rerun, left = again.decide(steps, {}, {"request_id": request.pk})
        again.form(left, {}, {"request_id": request.pk}, rerun)
        second = time.perf_counter() - started
        assert not left and rerun.submissions == decisions.submissions
        assert StepBatch.objects.filter(request=request).count() == jobs
        say(f"{size:8} {jobs:7,} {args.runs:9,} {first:12.2f} {second:12.2f}")


if __name__ == "__main__":
    main()
