"""Scenario (a) of bench/scale.py: one request over a study of R runs (4 R steps; 20,000 at R = 5,000).

    .venv/bin/python bench/scale.py --scenario a [--runs 50,500,5000] [--study-parts 1,2]
        [--study-release-seconds 300] [--study-small-release-seconds 60] [--study-release-interval 1]
        [--study-max-active-jobs 200] [--study-api-requests 100] [--study-timeout 1800]
        [--study-database emgapi_bench_scale_study] [--keep]

The ENA stub (scripts/ena_stub.py, one process for the whole scenario) serves a generated study of R runs for
each R of `--runs` (`--generated-study PRJEB9<R:06d>:<R>`: paired-end runs, each its own accession and sample,
all naming one pair of FASTQ files). Every sbatch goes through a private slurm.conf whose client-side filter
submits it held (bench/_waiting/slurm.py): nothing runs unless released. SLURM_MAX_ACTIVE_JOBS is
`--study-max-active-jobs` (200: Slurm's default MaxJobCount is 10,000 and an sbatch costs tens of ms).

Part 1, in this process (bench/_scale/study_passes.py), for each R on a fresh database
`<study-database>_r<R>`: the plan freeze alone, the first pass (it submits the first steps, held), rerun
passes with nothing to do, job-end passes (a held job recorded COMPLETED, then a pass), each with CPU, wall
time, SQL statements and sbatch calls, and the bytes of the markdown artifact the flow would write after it;
at the largest R a cProfile of a job-end pass and of a rerun pass. Then the request's ledger filled to a job
per step and the admin's request page and the API's jobs pages read through Django's test client.

Part 2, the whole service (bench/_scale/study_service.py), for each R on a stack of its own (its Prefect
server, database `<study-database>_r<R>_service`, serve_flows): one request, waited for until its flow run is
Suspended with its held jobs; then one held job released a second for `--study-release-seconds` (at the
largest R; `--study-small-release-seconds` at the others), and over that window the CPU of serve_flows and
every process under it (from /proc, reaped children included) per job end recorded in the ledger, the passes,
resumes and flow processes (alive, started, peak RSS), and the artifact versions the passes left in Prefect.

Prints each step's figures as it goes, then the tables (bench/_scale/study_report.py), the ratios to the
smallest R and the goals of issue 19 for (a), "meets" or "MISSES" each: a pass over the 20,000-step plan
<= 5 s with a statement count independent of R; <= 64 KB of artifact per pass; orchestrator CPU per job end
<= 0.5 s at R = 5,000 with jobs ending at 1 per second; the admin request page <= 500 ms and the API jobs page
p99 <= 50 ms at 20,000 jobs; flow processes alive <= WORKFLOWS_MAX_FLOW_PROCESSES.

Every job submitted is scancelled (by id) and waited for, every process started is stopped by its process
group, and every database made is dropped (kept with --keep, with the temporary directory and its logs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench._report import say
from bench._services import Service, poll_until, tail
from bench._setup import repo_state, wait_for_slurm
from bench._waiting.slurm import held_job_works, hold_everything_conf

if TYPE_CHECKING:
    from bench._scale.study_passes import PassesResult
    from bench._scale.study_service import ServiceResult


def add_options(parser: argparse.ArgumentParser) -> None:
    """This scenario's options (each prefixed, so the scenarios' options never collide)."""
    group = parser.add_argument_group("scenario (a)")
    group.add_argument(
        "--runs",
        default="50,500,5000",
        # 500 as well: R = 50 fits in the cluster's slots, the others leave steps waiting for a slot, and a pass's
        # statements are compared between two R in the same case.
        help="runs of the study, one R each (default 50,500,5000)",
    )
    group.add_argument(
        "--study-parts",
        default="1,2",
        help="1: the passes in this process; 2: the whole service (default 1,2)",
    )
    group.add_argument(
        "--study-release-seconds",
        type=float,
        default=300.0,
        help="part 2: seconds of releases at the largest R (default 300)",
    )
    group.add_argument(
        "--study-small-release-seconds",
        type=float,
        default=60.0,
        help="part 2: seconds of releases at the other R (default 60)",
    )
    group.add_argument(
        "--study-release-interval",
        type=float,
        default=1.0,
        help="part 2: seconds between releases (default 1)",
    )
    group.add_argument(
        "--study-max-active-jobs",
        type=int,
        default=200,
        help="SLURM_MAX_ACTIVE_JOBS of both parts (default 200)",
    )
    group.add_argument(
        "--study-api-requests", type=int, default=100, help="part 1: API jobs pages read (default 100)"
    )
    group.add_argument(
        "--study-timeout",
        type=float,
        default=1800.0,
        help="part 2: seconds to wait for the request's flow run to suspend (default 1800)",
    )
    group.add_argument(
        "--study-database",
        default="emgapi_bench_scale_study",
        help="prefix of the databases: <prefix>_r<R> (part 1), <prefix>_r<R>_service[_prefect] (part 2)",
    )


def accession(runs: int) -> str:
    """The generated study of R runs."""
    return f"PRJEB9{runs:06d}"


def run(args: argparse.Namespace) -> int:
    runs = _numbers(args.runs, "--runs")
    parts = set(_numbers(args.study_parts, "--study-parts"))
    if not parts <= {1, 2}:
        raise SystemExit("--study-parts: 1, 2 or 1,2")
    say(
        f"bench/scale.py scenario (a) at {repo_state()}: R {runs}, parts {sorted(parts)}, SLURM_MAX_ACTIVE_JOBS "
        f"{args.study_max_active_jobs}, releases every {args.study_release_interval:g} s for "
        f"{args.study_release_seconds:g} s at the largest R ({args.study_small_release_seconds:g} s at the others)"
    )
    wait_for_slurm()
    tmp = Path(tempfile.mkdtemp(prefix="emgapi-bench-scale-study-"))
    stub: Service | None = None
    try:
        stub, ena_url = _start_stub(tmp, runs)
        passes = _part_one(args, runs, ena_url, tmp) if 1 in parts else []
        services = _part_two(args, runs, ena_url, tmp) if 2 in parts else []
    finally:
        if stub is not None:
            stub.stop()
        if args.keep:
            say(
                f"kept {tmp} (the ENA stub's log, each part 2 stack's logs) and the databases {args.study_database}_*"
            )
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    from bench._scale.study_report import report

    report(passes, services)
    return 0


def _numbers(text: str, option: str) -> list[int]:
    try:
        numbers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        numbers = []
    if not numbers or numbers[0] < 1:
        raise SystemExit(f"{option}: positive integers, comma-separated")
    return numbers


def _start_stub(tmp: Path, runs: list[int]) -> tuple[Service, str]:
    """The ENA stub with a generated study of each R (no fixture), its FASTQ files in the temporary
    directory."""
    data = tmp / "ena"
    data.mkdir()
    port_file = tmp / "ena_stub.port"
    generated = [arg for r in runs for arg in ("--generated-study", f"{accession(r)}:{r}")]
    stub = Service(
        "ENA stub",
        [
            sys.executable,
            "scripts/ena_stub.py",
            "--data-dir",
            str(data),
            "--fastq-dir",
            str(tmp / "fastq"),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *generated,
        ],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        tmp / "ena_stub.log",
    )
    if not poll_until(
        lambda: port_file.exists() and port_file.read_text().strip() != "", 60, "the ENA stub", 0.1
    ):
        stub.stop()
        raise SystemExit(f"the ENA stub did not start:\n{tail(stub.log)}")
    url = f"http://127.0.0.1:{port_file.read_text().strip()}/ena/portal/api"
    say(f"ENA stub at {url}: " + ", ".join(f"{accession(r)} ({r:,} runs)" for r in runs))
    return stub, url


def _part_one(args: argparse.Namespace, runs: list[int], ena_url: str, tmp: Path) -> list[PassesResult]:
    from bench._scale.run import drop_databases, use_fresh_database
    from bench._scale.study_passes import run_passes

    conf = hold_everything_conf(tmp / "slurm")
    held_job_works(conf, tmp)
    say(f"hold filter: {conf} (cli_filter/lua sets --hold on every sbatch; checked: JobHeldUser)")
    results = []
    for r in runs:
        database = f"{args.study_database}_r{r}"
        where = use_fresh_database(database)  # Django is set up by the first
        from django.conf import settings
        from django.db import connections

        settings.ENA_PORTAL_API_URL = ena_url
        say()
        say(f"Part 1, R={r}: Django database {where} (fresh); study {accession(r)}")
        try:
            results.append(
                run_passes(r, accession(r), conf, tmp / f"passes-r{r}", args, profile=r == runs[-1])
            )
        finally:
            connections.close_all()
            if not args.keep:
                drop_databases([database])
    return results


def _part_two(args: argparse.Namespace, runs: list[int], ena_url: str, tmp: Path) -> list[ServiceResult]:
    from bench._scale.study_service import StudyService

    results = []
    for r in runs:
        window = args.study_release_seconds if r == runs[-1] else args.study_small_release_seconds
        stack = StudyService(args, r, accession(r), ena_url, window, tmp / f"service-r{r}")
        stack.tmp.mkdir()
        say()
        say(f"Part 2, R={r}: the whole service; releases for {window:g} s")
        try:
            stack.run()
        finally:
            stack.shutdown()
        if stack.result is not None:
            results.append(stack.result)
    return results
