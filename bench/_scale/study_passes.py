"""Part 1 of scenario (a), in this process: the reconciler's passes over one request of R runs (4 R planned
steps), each measured, then the request's pages with a job for every step.

On a fresh Django database `<study-database>_r<R>`, with ENA the stub's generated study of R runs, one
AssemblyAnalysisRequest (created as the API creates it; no service loop runs, so its trigger is never
dispatched) and the Slurm side the service builds (`build_jobs_service()`: the real SlurmClient,
SLURM_MAX_ACTIVE_JOBS = `--study-max-active-jobs`) whose sbatch goes through the hold filter (SLURM_CONF:
every job is submitted held and never runs):

  * the plan freeze: `plans.freeze_plan(request, STUDY_ANALYSIS)` alone (the study synced from the stub, 4 R steps);
  * the first pass: `reconcile_once` over the frozen plan (it submits the first step of as many runs as there
    are slots, in one batch);
  * ROUNDS rerun passes with nothing to do;
  * ROUNDS job-end passes: one held job recorded COMPLETED in the ledger (what a poll records when a job ends;
    the real job is scancelled), then a pass, which submits what that frees (the run's next step);
  * after each pass, what the flow adds to it (workflows/pipelines/assembly/flow.py): `jobs_summary` (the
    markdown artifact; its bytes) and `_percent_done` (the progress artifact's figure); and jobs_summary with
    every run failed (a 500-character reason each): the artifact's largest.

Each is timed with this process's CPU (time.process_time), the CPU of the children it reaped (sbatch), wall
time, SQL statements and the time spent executing them (bench._report.QueryTimer, an execute_wrapper on
Django's connection: what Django runs through a cursor, so BEGIN and COMMIT are not counted, as in
bench/submit.py; the request lock is not taken, as there) and sbatch calls (SlurmClient.calls). At the largest
R, cProfile of one more job-end pass and one more rerun pass (`profile`: where a pass's CPU goes).

Then every planned step without a ledger row gets one (fake job ids `fake-<n>`; 95 % COMPLETED, 4 % FAILED
with a log tail, the last 1 % RUNNING), so the request has 4 R jobs (20,000 at R = 5,000); ANALYZE of the
database, as autovacuum would do sooner or later; and the admin's request page and the API's jobs pages are
read through Django's test client as a staff user (no HTTP server: bench/api_reads.py measures through
gunicorn): `ADMIN_READS` page loads after one warm-up, and `--study-api-requests` pages of the jobs list
spread over all its pages (walked once by `next` first: page numbers, then cursors past API_MAX_PAGE_DEPTH
results), for p50/p95/p99.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import os
import pstats
import resource
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._report import QueryTimer, percentiles_ms, say
from bench._setup import ROOT, scancel, wait_until_idle

ROUNDS = 3
ADMIN_READS = 20
FAILURE_REASON = (
    "fetch_reads: Slurm job 123456 ended FAILED with exit code 1; log tail: curl: (22) The requested URL "
    "returned error: 404 Not Found "
)


@dataclass
class Call:
    """One measured call."""

    cpu_ms: float
    child_cpu_ms: float  # of the processes it started and reaped (sbatch)
    wall_ms: float
    sql: int
    sql_ms: float  # executing them
    sbatch: int
    # The statements by kind (SELECT, INSERT, ...).
    kinds: Counter[str] = field(default_factory=Counter)


@dataclass
class Pass:
    """A reconciler pass, and what the flow computes after it for its two artifacts."""

    call: Call
    submitted: int
    flow_reads: Call  # jobs_summary + _percent_done
    artifact_bytes: int


@dataclass
class Pages:
    """Timings of one page, ms, and the SQL statements of one load (the API's: of its first and last
    pages)."""

    timings: list[float]
    cpu: list[float]  # this process's CPU, ms: the work, whatever else the machine does
    sql: list[int]

    @property
    def p99(self) -> float:
        return percentiles_ms(self.timings)[2] if len(self.timings) > 1 else self.timings[0]


@dataclass
class PassesResult:
    runs: int
    steps: int
    freeze: Call
    first: Pass
    reruns: list[Pass]
    job_ends: list[Pass]
    artifact_all_failed_bytes: int
    capacity_wanted: int  # steps left waiting for a slot by the first pass (R above the cluster's slots)
    jobs: int = 0  # ledger rows of the request once filled
    admin: Pages | None = None
    api: Pages | None = None
    profile: list[str] = field(default_factory=list)


def measured(step: Callable[[], Any], client: Any = None) -> tuple[Any, Call]:
    """`step()` and its figures; `client` is the SlurmClient whose sbatch calls are counted."""
    from django.db import connection

    sbatch = client.calls["sbatch"] if client is not None else 0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    queries = QueryTimer()
    with connection.execute_wrapper(queries):
        wall = time.perf_counter()
        cpu = time.process_time()
        result = step()
        cpu_ms = 1000 * (time.process_time() - cpu)
        wall_ms = 1000 * (time.perf_counter() - wall)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_ms = max(0.0, 1000 * (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime))
    sbatch = (client.calls["sbatch"] - sbatch) if client is not None else 0
    call = Call(cpu_ms, child_ms, wall_ms, queries.count, 1000 * queries.seconds, sbatch, queries.kinds)
    return result, call


@contextmanager
def slurm_conf(conf: Path) -> Iterator[None]:
    """SLURM_CONF for this process's sbatch (the SlurmClient passes it on): the hold filter's
    configuration."""
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield
    finally:
        if before is None:
            del os.environ["SLURM_CONF"]
        else:
            os.environ["SLURM_CONF"] = before


def run_passes(runs: int, accession: str, conf: Path, tmp: Path, args: Any, profile: bool) -> PassesResult:
    """Part 1 at R = `runs` (the database must be fresh and Django pointed at it; see study.py)."""
    from django.conf import settings

    from analyses.services import create_assembly_analysis_request
    from workflows.orchestration.cluster import build_jobs_service

    # Before anything is timed: the flow module imports Prefect, and its summary's first reverse() loads the
    # URL configuration (seconds, once per process).
    flow = importlib.import_module("workflows.pipelines.analysis.flow")

    settings.JOBS_ROOT = str(tmp / "jobs")
    settings.SLURM_MAX_ACTIVE_JOBS = args.study_max_active_jobs
    settings.PIPELINE_CONFIG = {}
    request = create_assembly_analysis_request(study_accession=accession, requester=None)
    flow.jobs_summary(request.pk, {})
    jobs = build_jobs_service()
    try:
        result = _passes(runs, request.pk, jobs, conf, profile)
    finally:
        cancel_real_jobs()
    result.jobs = fill_ledger(request.pk)
    say(f"  ledger filled: {result.jobs:,} jobs of the request (one per planned step)")
    result.admin, result.api = read_pages(request.pk, args.study_api_requests)
    say(
        f"  admin request page: median {statistics.median(result.admin.timings):.0f} ms (CPU "
        f"{statistics.median(result.admin.cpu):.0f}), max {max(result.admin.timings):.0f} ms, {result.admin.sql[0]} "
        "SQL; API jobs pages: p50/p95/p99 "
        + "/".join(f"{p:.1f}" for p in percentiles_ms(result.api.timings))
        + " ms (CPU "
        + "/".join(f"{p:.1f}" for p in percentiles_ms(result.api.cpu))
        + f"), SQL first/last page {result.api.sql[0]}/{result.api.sql[1]}"
    )
    return result


def _passes(runs: int, request_id: int, jobs: Any, conf: Path, profile: bool) -> PassesResult:
    from analyses.models import AssemblyAnalysisRequest
    from workflows.models import RequestProgress
    from workflows.orchestration.plans import freeze_plan
    from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS

    request = AssemblyAnalysisRequest.objects.get(pk=request_id)
    with slurm_conf(conf):
        plan, freeze = measured(lambda: freeze_plan(request, STUDY_ANALYSIS), jobs.client)
        steps = plan.steps.count()
        say(f"  freeze: {steps:,} steps; {describe(freeze)}")
        first = one_pass(request_id, jobs)
        say(f"  first pass: {first.submitted} submitted (held); {describe_pass(first)}")
        say(f"  statements of the first pass: {kinds_text(first.call.kinds)}")
        reruns = [one_pass(request_id, jobs) for _ in range(ROUNDS)]
        for number, rerun in enumerate(reruns, 1):
            say(f"  rerun pass {number}, nothing to do: {describe_pass(rerun)}")
        job_ends = []
        for number in range(1, ROUNDS + 1):
            end_one_job(request_id)
            job_ends.append(one_pass(request_id, jobs))
            say(f"  job-end pass {number}: {job_ends[-1].submitted} submitted; {describe_pass(job_ends[-1])}")
        say(f"  statements of a rerun pass: {kinds_text(reruns[-1].call.kinds)}")
        say(f"  statements of a job-end pass: {kinds_text(job_ends[-1].call.kinds)}")
        lines: list[str] = []
        if profile:
            end_one_job(request_id)
            lines += profiled(f"one more job-end pass, R={runs}", lambda: pass_once(request_id, jobs))
            lines += profiled(f"one more rerun pass, R={runs}", lambda: pass_once(request_id, jobs))
    all_failed = artifact_with_every_run_failed(request_id)
    say(f"  jobs_summary with all {runs:,} runs failed: {all_failed:,} bytes")
    wanted = RequestProgress.objects.get(pk=request_id).capacity_wanted
    return PassesResult(runs, steps, freeze, first, reruns, job_ends, all_failed, wanted, profile=lines)


def pass_once(request_id: int, jobs: Any) -> Any:
    from workflows.orchestration.reconciler import reconcile_once
    from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS

    return reconcile_once(request_id, pipeline=STUDY_ANALYSIS, jobs=jobs)


def one_pass(request_id: int, jobs: Any) -> Pass:
    # What the flow computes after its pass for its artifacts; _percent_done is the flow's own, read as it is.
    from workflows.pipelines.analysis.flow import _percent_done, jobs_summary

    result, call = measured(lambda: pass_once(request_id, jobs), jobs.client)
    (markdown, _), reads = measured(
        lambda: (jobs_summary(request_id, result.failed), _percent_done(request_id, result))
    )
    return Pass(call, len(result.submitted), reads, len(markdown.encode()))


def end_one_job(request_id: int) -> None:
    """The oldest held job of the request recorded COMPLETED, as a poll records a job that ended (the real
    job, held, is scancelled: nothing of it runs)."""
    from django.utils import timezone

    from workflows.models import ClusterJob

    job = (
        ClusterJob.objects.filter(request_id=request_id, state="PENDING", slurm_job_id__isnull=False)
        .order_by("pk")
        .first()
    )
    if job is None:
        raise SystemExit(f"request {request_id} has no held job left to end")
    now = timezone.now()
    ClusterJob.objects.filter(pk=job.pk).update(
        state="COMPLETED",
        slurm_state="COMPLETED",
        exit_code=0,
        state_checked_at=now,
        state_changed_at=now,
        started_at=now,
        ended_at=now,
    )
    scancel([job.slurm_job_id or ""])


def artifact_with_every_run_failed(request_id: int) -> int:
    from workflows.models import PlanStep
    from workflows.pipelines.analysis.flow import jobs_summary

    accessions = PlanStep.objects.filter(plan__request_id=request_id).values_list("run_accession", flat=True)
    reason = (FAILURE_REASON * 5)[:500]
    return len(jobs_summary(request_id, dict.fromkeys(set(accessions), reason)).encode())


def real_job_ids() -> list[str]:
    from workflows.models import ClusterJob

    rows = ClusterJob.objects.filter(slurm_job_id__isnull=False).exclude(slurm_job_id__startswith="fake-")
    return [job_id for job_id in rows.values_list("slurm_job_id", flat=True) if job_id]


def cancel_real_jobs() -> None:
    """Every job this part submitted (held), scancelled and waited for."""
    ids = real_job_ids()
    scancel(ids)
    waited = wait_until_idle(ids, timeout=120, what="part 1's held jobs")
    say(f"  cancelled the {len(ids)} held jobs (gone from the queue after {waited:.0f} s)")


def fill_ledger(request_id: int) -> int:
    """A job for every planned step that has none: 95 % COMPLETED, 4 % FAILED with a log tail, the last 1 %
    RUNNING; fake job ids. The request's job count, after an ANALYZE of the database."""
    from datetime import timedelta

    from django.db import connection, transaction
    from django.utils import timezone

    from workflows.models import ClusterJob, PlanStep

    steps = list(
        PlanStep.objects.filter(plan__request_id=request_id)
        .exclude(key__in=ClusterJob.objects.filter(request_id=request_id).values("key"))
        .order_by("position", "run_accession")
        .values_list("key", "step", "run_accession", "spec")
    )
    now = timezone.now()
    total = len(steps)
    rows = []
    for n, (key, step, run, spec) in enumerate(steps):
        state = "RUNNING" if n >= total - total // 100 else ("FAILED" if n % 25 == 0 else "COMPLETED")
        ended = state != "RUNNING"
        started = now - timedelta(seconds=2 * (total - n) + 60)
        rows.append(
            ClusterJob(
                key=key,
                name=f"emgapi-{step}-{run}",
                spec=spec,
                slurm_job_id=f"fake-{n}",
                state=state,
                slurm_state=state,
                exit_code={"FAILED": 1, "COMPLETED": 0}.get(state),
                log_tail="curl: (22) The requested URL returned error: 404\n" * 5
                if state == "FAILED"
                else "",
                state_checked_at=now,
                state_changed_at=started + timedelta(seconds=30) if ended else started,
                submitted_at=started - timedelta(seconds=5),
                started_at=started,
                ended_at=started + timedelta(seconds=30) if ended else None,
                request_id=request_id,
            )
        )
    with transaction.atomic():
        ClusterJob.objects.bulk_create(rows, batch_size=2000)
    # Every table, as autovacuum does sooner or later: until it does, PostgreSQL has no statistics of a plan frozen
    # in one transaction, and the request's pages read each job's step through a far worse plan (bench/README.md).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return ClusterJob.objects.filter(request_id=request_id).count()


def read_pages(request_id: int, api_requests: int) -> tuple[Pages, Pages]:
    """The admin's request page and the API's jobs pages, through Django's test client as a staff user."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    # The pages are read without collectstatic: whitenoise says so once, which is not a figure.
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    user = get_user_model().objects.create_superuser("bench-study", "bench@example.org", "bench-study-pw")
    client = Client()
    client.force_login(user)

    def load(url: str) -> tuple[float, float, int, Any]:
        queries = QueryTimer()
        with connection.execute_wrapper(queries):
            start, cpu = time.perf_counter(), time.process_time()
            response = client.get(url, secure=True)  # the site redirects plain HTTP
            elapsed, cpu_ms = 1000 * (time.perf_counter() - start), 1000 * (time.process_time() - cpu)
        if response.status_code != 200:
            raise SystemExit(f"GET {url}: {response.status_code} {response.content[:300]!r}")
        return elapsed, cpu_ms, queries.count, response

    admin_url = reverse("admin:analyses_assemblyanalysisrequest_change", args=[request_id])
    load(admin_url)  # the session's first page fills what every later one reuses
    admin = [load(admin_url)[:3] for _ in range(ADMIN_READS)]

    # Every page's address as a client walking the list finds it: page numbers, then (past API_MAX_PAGE_DEPTH
    # results) cursors. Walked once, not timed.
    urls: list[str] = []
    url: str | None = reverse("assembly-analysis-request-jobs", args=[request_id])
    while url:
        urls.append(url)
        url = load(url)[3].json()["next"]
    # Spread over the whole list (a prime stride), the first and the last page among them.
    picks = [0, len(urls) - 1] + [(i * 7919) % len(urls) for i in range(max(0, api_requests - 2))]
    api = [load(urls[pick])[:3] for pick in picks]
    return (
        Pages([t for t, _, _ in admin], [c for _, c, _ in admin], [admin[0][2]]),
        Pages([t for t, _, _ in api], [c for _, c, _ in api], [api[0][2], api[1][2]]),
    )


def profiled(title: str, step: Callable[[], Any], lines: int = 25) -> list[str]:
    """cProfile of `step`: the functions by cumulative time, then by own time (printed, and returned)."""
    # The CPU clock: where the pass's CPU goes, not its waits on PostgreSQL and sbatch.
    profiler = cProfile.Profile(time.process_time)
    start = time.process_time()
    profiler.enable()
    step()
    profiler.disable()
    cpu_ms = 1000 * (time.process_time() - start)
    # Stats.stats (function -> its figures) is what print_stats reads; typeshed does not declare it.
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    rows = [
        (cum, own, calls, f"{filename.rsplit('site-packages/', 1)[-1]}:{line}({name})")
        for (filename, line, name), (_, calls, own, cum, _) in stats.items()
    ]
    out = [
        f"cProfile of {title}, CPU clock ({cpu_ms:.0f} ms CPU under the profiler; ms, cumulative / own, calls):",
    ]
    for heading, key in (("by cumulative time", 0), ("by own time", 1)):
        out.append(f"  {heading}:")
        for cum, own, calls, where in sorted(rows, key=lambda row: row[key], reverse=True)[:lines]:
            out.append(
                f"  {1000 * cum:9.1f} {1000 * own:8.1f} {calls:8d}  {where.replace(str(ROOT) + '/', '')}"
            )
    for line in out:
        say(line)
    return out


def kinds_text(kinds: Counter[str]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())


def describe(call: Call) -> str:
    return (
        f"CPU {call.cpu_ms:.0f} ms (+{call.child_cpu_ms:.0f} children), wall {call.wall_ms:.0f} ms, "
        f"{call.sql} SQL ({call.sql_ms:.0f} ms executing), {call.sbatch} sbatch"
    )


def describe_pass(p: Pass) -> str:
    return (
        f"{describe(p.call)}; then the flow's artifact reads {p.flow_reads.wall_ms:.0f} ms, "
        f"{p.flow_reads.sql} SQL, markdown {p.artifact_bytes:,} bytes"
    )
