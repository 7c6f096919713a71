"""What bench/poll.py measures of one scenario at one N: `Poller.poll_once()` over a ledger of those jobs, round
after round (scheduler calls, wall time, the poller's CPU split between reading Slurm and recording it, the CPU
of squeue/sacct, SQL statements), and its cProfile with --profile."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from collections import Counter, defaultdict

from bench._report import QueryTimer, say
from bench._setup import ROOT, chunks

HOLDER = "bench-poll"  # the poller lease's holder in the benchmark's own database


def measure(rows: list[tuple[str, str]], *, reset: list[str], rounds: int, profile: bool = False) -> dict:
    """`rounds` polls of a fresh ledger of `rows` (job id, state) after a warm-up, the ids of `reset` put back to
    RUNNING before each; the figures per poll."""
    from django.db import connection
    from django.utils import timezone

    from prefect_utils.job_spec import JobSpec
    from prefect_utils.poller import POLLER_LEASE, Poller
    from prefect_utils.slurm_client import SlurmClient
    from prefect_utils.submission import SlurmJobs
    from workflows.models import ClusterJob
    from workflows.orchestration.ledger import DjangoJobLedger

    ClusterJob.objects.all().delete()
    now = timezone.now()
    ClusterJob.objects.bulk_create(
        [
            ClusterJob(
                key=f"bench-poll-{i}",
                attempt=1,
                name=f"bench-poll-{i}",
                spec=JobSpec(
                    name=f"bench-poll-{i}", script="true", workdir=tempfile.gettempdir()
                ).canonical(),
                slurm_job_id=job_id,
                state=state,
                submitted_at=now,
            )
            for i, (job_id, state) in enumerate(rows)
        ],
        batch_size=1000,
    )
    # The poller's CPU split between reading Slurm (job_states: run, parse) and recording it (apply_states).
    parts: defaultdict[str, float] = defaultdict(float)

    class TimedClient(SlurmClient):
        def job_states(self, job_ids):
            start = time.process_time()
            try:
                return super().job_states(job_ids)
            finally:
                parts["job_states"] += time.process_time() - start

    class TimedLedger(DjangoJobLedger):
        def apply_states(self, infos, log_tails, checked_at, *, lease):
            start = time.process_time()
            try:
                return super().apply_states(infos, log_tails, checked_at, lease=lease)
            finally:
                parts["apply_states"] += time.process_time() - start

    client = TimedClient()
    jobs = SlurmJobs(TimedLedger(), client)
    poller = Poller(jobs, HOLDER)
    # poll_once writes only while its holder has the poller lease: take it once, for longer than the rounds
    # last (Poller.tick would renew it every round, one more UPDATE, outside what is measured here).
    if not jobs.ledger.try_acquire_lease(POLLER_LEASE, HOLDER, ttl_seconds=3600):
        raise SystemExit(f"the poller lease {POLLER_LEASE!r} of the fresh database is held by someone else")

    def poll() -> None:
        if poller.poll_once() is None:
            raise SystemExit("poll_once lost the poller lease: nothing was recorded")

    def put_back() -> None:
        for part in chunks(reset, 1000):
            ClusterJob.objects.filter(slurm_job_id__in=list(part)).update(
                state="RUNNING", slurm_state="RUNNING", exit_code=None, ended_at=None
            )

    put_back()
    poll()  # warm-up: first queries, first parse
    parts.clear()
    calls: Counter[str] = Counter()
    walls: list[float] = []
    cpus: list[float] = []
    childs: list[float] = []
    sqls: list[int] = []
    states: Counter[str] = Counter()
    for _ in range(rounds):
        put_back()
        before = client.calls.copy()
        queries = QueryTimer()
        t0 = os.times()
        with connection.execute_wrapper(queries):
            wall = time.perf_counter()
            cpu = time.process_time()
            poll()
            cpus.append(1000 * (time.process_time() - cpu))
            walls.append(1000 * (time.perf_counter() - wall))
        t1 = os.times()
        childs.append(
            1000 * ((t1.children_user - t0.children_user) + (t1.children_system - t0.children_system))
        )
        sqls.append(queries.count)
        calls.update(client.calls - before)
        states = Counter(ClusterJob.objects.values_list("state", flat=True))
    result = {
        "squeue": calls["squeue"] / rounds,
        "sacct": calls["sacct"] / rounds,
        "wall": statistics.mean(walls),
        "wall_max": max(walls),
        "cpu": statistics.mean(cpus),
        "child": statistics.mean(childs),
        "cpu_read": 1000 * parts["job_states"] / rounds,
        "cpu_record": 1000 * parts["apply_states"] / rounds,
        "sql": statistics.mean(sqls),
        "states": ", ".join(f"{count} {state}" for state, count in sorted(states.items())),
    }
    if profile:
        print_poll_profile(poll, len(rows))
    return result


def print_poll_profile(poll, n: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    poll()
    profiler.disable()
    # Stats.stats (function -> its figures) is what print_stats reads; typeshed does not declare it.
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    rows = sorted(
        (
            (cum, own, calls, f"{filename.rsplit('site-packages/', 1)[-1]}:{line}({name})")
            for (filename, line, name), (_, calls, own, cum, _) in stats.items()
        ),
        reverse=True,
    )
    say(f"cProfile of one more poll_once, queue scenario, N={n} (ms, cumulative / own, calls):")
    for cum, own, calls, where in rows[:16]:
        say(f"  {1000 * cum:9.1f} {1000 * own:8.1f} {calls:8d}  {where.replace(str(ROOT) + '/', '')}")
    say()
