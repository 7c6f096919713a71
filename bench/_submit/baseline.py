"""What bench/submit.py states before its phases: the ledger's history (--history: finished rows of earlier months,
and the plan of the throttle's time-window count on them) and the machine's baseline (a SELECT 1 round trip)."""

from __future__ import annotations

import statistics
import time


def fill_history(rows: int) -> None:
    """Finished ledger rows submitted long ago: what every query of the submit path runs against in production."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from workflows.models import ClusterJob

    long_ago = timezone.now() - timedelta(days=90)
    for start in range(0, rows, 10_000):
        ClusterJob.objects.bulk_create(
            [
                ClusterJob(
                    key=f"history-{i}",
                    attempt=1,
                    name=f"history-{i}",
                    spec={"name": f"history-{i}"},
                    slurm_job_id=str(1_000_000 + i),
                    state="COMPLETED",
                    submitted_at=long_ago,
                )
                for i in range(start, min(start + 10_000, rows))
            ]
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE workflows_clusterjob")


def count_since_plan() -> str:
    from datetime import timedelta

    from django.utils import timezone

    from workflows.models import ClusterJob

    plan = ClusterJob.objects.filter(submitted_at__gte=timezone.now() - timedelta(minutes=1)).explain()
    scans = [line.strip(" ->") for line in plan.splitlines() if "Scan" in line]
    return "; ".join(scans) or plan.splitlines()[0]


def select_one_seconds(connection, samples: int = 200) -> float:
    times = []
    with connection.cursor() as cursor:
        for _ in range(samples):
            start = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchone()
            times.append(time.perf_counter() - start)
    return statistics.median(times)
