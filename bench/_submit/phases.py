"""The measured phases of bench/submit.py, (a) to (d2) and the SQL counts at the small size, against the real
Slurm and the benchmark's database; each starts from an idle queue (the previous phase's jobs are cancelled and
waited for)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench._report import QueryTimer, say
from bench._setup import scancel, wait_until_idle
from bench._submit.reconciler import reconciler_passes
from bench._submit.timing import PassPhase, Phase, StepTimer, TimedRunner

if TYPE_CHECKING:
    from prefect_utils.job_spec import JobSpec
    from prefect_utils.ledger import JobSubmission
    from prefect_utils.submission import SlurmJobs


class SubmitRun:
    """What the phases of one run share: N, a temporary directory for the jobs, the run's id (in every job's
    environment), the throttle out of reach, and every job id submitted (all cancelled by `clean_up`)."""

    def __init__(self, n: int) -> None:
        from prefect_utils.submission import ThrottleConfig

        self.n = n
        self.throttle = ThrottleConfig(max_active_jobs=10**6, submits_per_minute=10**6)
        self.run_id = uuid.uuid4().hex[:8]
        self.tmp = Path(tempfile.mkdtemp(prefix="emgapi-bench-submit-"))
        self.all_ids: list[str] = []

    def specs(self, phase: str, count: int | None = None) -> list[JobSpec]:
        """`count` (default N) distinct specs: name and environment differ, script `true`."""
        from prefect_utils.job_spec import JobSpec

        return [
            JobSpec(
                name=f"bench-{phase}-{i}",
                script="true",
                workdir=str(self.tmp / phase),
                time_limit_minutes=5,
                environment={"BENCH_RUN": self.run_id, "BENCH_INDEX": str(i)},
            )
            for i in range(self.n if count is None else count)
        ]

    def submissions(self, phase: str, count: int | None = None) -> list[JobSubmission]:
        from prefect_utils.keys import job_key
        from prefect_utils.ledger import JobSubmission

        return [JobSubmission(job_key(spec, {}), 1, spec.canonical()) for spec in self.specs(phase, count)]

    def new_jobs(self, ledger=None, runner=None) -> SlurmJobs:
        from prefect_utils.slurm_client import SlurmClient
        from prefect_utils.submission import SlurmJobs
        from workflows.orchestration.ledger import DjangoJobLedger

        client = SlurmClient(runner=runner or TimedRunner())
        return SlurmJobs(ledger or DjangoJobLedger(), client, throttle=self.throttle)

    def settle(self, ids: list[str], what: str) -> None:
        """Cancel a phase's jobs and wait for an idle queue, so the next phase starts where this one did."""
        self.all_ids.extend(ids)
        scancel(ids)
        wait_until_idle(ids, what=what)

    def restart(self) -> None:
        """What a new process starts with: no open database connection (the next query reconnects)."""
        from django.db import connections

        connections.close_all()

    def clean_up(self) -> None:
        """Every job this run submitted cancelled and gone from the queue, the temporary directory removed."""
        from workflows.models import ClusterJob

        with contextlib.suppress(Exception):
            # Whatever this run submitted, even if it stopped half-way (not the fake ids of --history).
            self.all_ids.extend(
                job_id
                for job_id in ClusterJob.objects.filter(name__startswith="bench-")
                .exclude(slurm_job_id=None)
                .values_list("slurm_job_id", flat=True)
                if job_id is not None
            )
        scancel(self.all_ids)
        wait_until_idle(self.all_ids, what="benchmark jobs")
        shutil.rmtree(self.tmp, ignore_errors=True)
        say()
        say(f"cancelled/cleaned {len(set(self.all_ids))} jobs; queue idle; removed {self.tmp}")


@dataclass
class Measured:
    """The phases' rows, and what the report reads of (b), (c) and (d) beyond them."""

    phases: dict[str, Phase]
    small: dict[str, int]  # SQL statements of (b), (c), (d1), (d2) at the small size
    same: int  # submissions for which (c) returned (b)'s job id
    runner_a2: TimedRunner
    runner_b: TimedRunner
    steps_b: StepTimer
    steps_c: StepTimer
    queries_b: QueryTimer
    queries_c: QueryTimer
    d1: PassPhase
    d2: PassPhase
    request_d: int  # the request of (d1) and (d2)


def measure(run: SubmitRun, *, small_size: int, one_at_a_time: bool) -> Measured:
    """Every phase in turn; (b1) only `one_at_a_time`, the small size only if `small_size`."""
    from django.db import connection

    from prefect_utils.slurm_client import SlurmClient
    from workflows.orchestration.ledger import DjangoJobLedger

    n, tmp = run.n, run.tmp
    phases: dict[str, Phase] = {}
    small: dict[str, int] = {}

    # (a) the floor: a bare sbatch loop.
    (tmp / "a").mkdir()
    start = time.perf_counter()
    raw_ids = []
    for _ in range(n):
        proc = subprocess.run(
            ["sbatch", "--parsable", "--no-requeue", f"--chdir={tmp / 'a'}", "--wrap", "true"],
            capture_output=True,
            text=True,
            check=True,
        )
        raw_ids.append(proc.stdout.strip().split(";", 1)[0])
    phases["a"] = Phase("(a)  raw sbatch --wrap true loop", time.perf_counter() - start, n, Counter(sbatch=n))
    run.settle(raw_ids, "phase (a) jobs")

    # (a2) the client alone: what submit() must at least pay for its sbatch calls.
    runner_a2 = TimedRunner()
    client_a2 = SlurmClient(runner=runner_a2)
    a2_specs = run.specs("a2")
    start = time.perf_counter()
    client_ids = [client_a2.submit(spec, f"bench-a2-{run.run_id}-{i}") for i, spec in enumerate(a2_specs)]
    phases["a2"] = Phase(
        "(a2) SlurmClient.submit only (no ledger)", time.perf_counter() - start, n, client_a2.calls
    )
    run.settle(client_ids, "phase (a2) jobs")

    # (b) one batch of fresh idempotent submissions through the ledger.
    steps_b = StepTimer()
    runner_b = TimedRunner()
    jobs_b = run.new_jobs(steps_b.wrap_ledger(DjangoJobLedger()), runner_b)
    batch_b = run.submissions("b")
    queries_b = QueryTimer()
    with connection.execute_wrapper(queries_b), steps_b.timing_commits(connection):
        start = time.perf_counter()
        records_b = jobs_b.submit(batch_b)
        t_b = time.perf_counter() - start
    phases["b"] = Phase(f"(b)  submit(), one batch of {n}, fresh", t_b, n, jobs_b.client.calls, queries_b)
    b_ids = [r.job_id for r in records_b if r.job_id is not None]
    if len(b_ids) < len(records_b):
        raise SystemExit(f"(b) left {len(records_b) - len(b_ids)} submissions without a job id")
    run.settle(b_ids, "phase (b) jobs")

    # (c) the same batch from a "restarted process": new objects, new database connection.
    run.restart()
    steps_c = StepTimer()
    jobs_c = run.new_jobs(steps_c.wrap_ledger(DjangoJobLedger()))
    queries_c = QueryTimer()
    with connection.execute_wrapper(queries_c), steps_c.timing_commits(connection):
        start = time.perf_counter()
        # What the first query of a restarted process pays, timed on its own.
        connection.ensure_connection()
        steps_c.add("reconnect", start)
        records_c = jobs_c.submit(batch_b)
        t_c = time.perf_counter() - start
    phases["c"] = Phase(
        "(c)  the same batch again, restarted process", t_c, n, jobs_c.client.calls, queries_c
    )
    same = sum(1 for rb, rc in zip(records_b, records_c, strict=True) if rb.job_id == rc.job_id)

    # (b1) the old way, for comparison: one submission per call.
    if one_at_a_time:
        jobs_b1 = run.new_jobs()
        queries_b1 = QueryTimer()
        b1_specs = run.specs("b1")
        with connection.execute_wrapper(queries_b1):
            start = time.perf_counter()
            records_b1 = [jobs_b1.submit_once(spec) for spec in b1_specs]
            t_b1 = time.perf_counter() - start
        phases["b1"] = Phase(
            f"(b1) submit_once x {n}, one at a time, fresh", t_b1, n, jobs_b1.client.calls, queries_b1
        )
        run.settle([r.job_id for r in records_b1 if r.job_id], "phase (b1) jobs")

    # (d1) a reconciler pass that plans and submits N steps; (d2) the rerun pass in a restarted process.
    d1, d2, request_d = reconciler_passes(n, tmp / "d", run.new_jobs, run.restart, run.settle, "d")
    phases["d1"], phases["d2"] = d1, d2

    # The same SQL counts at a smaller size: constant in N, or not.
    if small_size:
        jobs_s = run.new_jobs()
        batch_s = run.submissions("small-b", small_size)
        queries = QueryTimer()
        with connection.execute_wrapper(queries):
            records_s = jobs_s.submit(batch_s)
        small["b"] = queries.count
        run.settle([r.job_id for r in records_s if r.job_id], "small batch jobs")
        run.restart()
        queries = QueryTimer()
        with connection.execute_wrapper(queries):
            run.new_jobs().submit(batch_s)
        small["c"] = queries.count
        s1, s2, _ = reconciler_passes(
            small_size, tmp / "small-d", run.new_jobs, run.restart, run.settle, "sd"
        )
        small["d1"], small["d2"] = s1.queries.count, s2.queries.count

    return Measured(
        phases=phases,
        small=small,
        same=same,
        runner_a2=runner_a2,
        runner_b=runner_b,
        steps_b=steps_b,
        steps_c=steps_c,
        queries_b=queries_b,
        queries_c=queries_c,
        d1=d1,
        d2=d2,
        request_d=request_d,
    )
