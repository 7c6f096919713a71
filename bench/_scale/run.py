"""One N of scenario (c): its own Prefect server (bench._stack.Stack.launch_prefect, no serve_flows, no ENA stub)
and its own Django database, the rows of bench._scale.rows, then the service loop's steps measured: sweeps with
nothing freed, and for each k a wake-up after k slots freed followed by one sweep."""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from bench._report import say
from bench._scale.measure import FreedRound, SizeResult, Step, measure_sweep, measure_wake, profile_sweep
from bench._scale.report import sweep_cpu_goal_ms
from bench._scale.rows import free_slots, populate
from bench._services import free_port
from bench._setup import admin_url, fresh_database, migrate, recreate_database
from bench._stack import Stack


class ScaleStack(Stack):
    """The Prefect server of one N; this process's Django and Prefect client pointed at it and its database."""

    def __init__(self, args: argparse.Namespace, n: int, tmp: Path) -> None:
        super().__init__(tmp, f"{args.database}_n{n}", {})
        self.args = args
        self.n = n
        self.result: SizeResult | None = None

    def job_ids(self) -> list[str]:
        return []  # the ledger's job ids are fake (bench._scale.rows): nothing to scancel, and never a real id

    def run(self) -> bool | None:
        from django.conf import settings

        self.prefect_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.prefect_port}/api"
        os.environ["PREFECT_API_URL"] = self.api_url  # the server's own services call it there
        recreate_database(self.prefect_db)
        self.launch_prefect()
        self.wait_prefect()
        where = use_fresh_database(self.database)
        # workflows.outbox.prefect_api points every call of the service's own code at this server.
        settings.PREFECT_API_URL = self.api_url
        settings.SLURM_MAX_ACTIVE_JOBS = self.args.max_active_jobs
        say(
            f"N={self.n}: Prefect server at {self.api_url} (database {self.prefect_db}); Django database {where}"
        )
        population = populate(self.n, self.args.max_active_jobs, self.api_url, self.args.concurrency)
        say(
            f"  {population.waiting} requests waiting for capacity, {population.running} with {population.jobs} "
            f"jobs RUNNING (the cluster full); rows written in {population.rows_seconds:.1f} s"
        )

        measure_sweep()  # not counted: the first sweep of a process imports what Prefect's client needs
        sweeps = [measure_sweep() for _ in range(self.args.rounds)]
        for number, step in enumerate(sweeps, 1):
            say(f"  sweep {number}, nothing freed: {describe(step)}")
        goal = sweep_cpu_goal_ms(self.n)
        if self.args.profile_n == self.n or (
            goal is not None and statistics.median(s.cpu_ms for s in sweeps) > goal
        ):
            profile_sweep(self.n)
        self.result = SizeResult(self.n, population, sweeps)

        for k in self.args.freed:
            ended = free_slots(k)
            wake = measure_wake(ended)
            sweep = measure_sweep()
            say(f"  {k} slot(s) freed, jobs of {len(ended)} request(s) ended:")
            say(f"    wake_requests: {describe(wake)}")
            say(f"    then a sweep:  {describe(sweep)}")
            self.result.freed.append(FreedRound(k, len(ended), wake, sweep))
        return None

    def shutdown(self) -> None:
        from django.db import connections

        super().shutdown()
        connections.close_all()
        if not self.args.keep:
            drop_databases([self.database, self.prefect_db])


def describe(step: Step) -> str:
    calls = ", ".join(f"{count} {call}" for call, count in step.prefect_by_call.most_common())
    other = "".join(f", {count} {name}" for name, count in step.other.items())
    return (
        f"CPU {step.cpu_ms:.1f} ms, wall {step.wall_ms:.1f} ms, {step.sql} SQL, {step.prefect} Prefect calls "
        f"({calls or 'none'}), {step.resumes} resumes ({step.accepted} accepted){other}"
    )


def use_fresh_database(name: str) -> str:
    """Database `name` dropped, recreated and migrated, and Django's connection pointed at it: the first time by
    bench._setup.fresh_database (which sets Django up), later by renaming the connection's database."""
    from django.apps import apps

    if not apps.ready:
        return fresh_database(name)
    from django.db import connections

    recreate_database(name)
    connections.close_all()
    connections["default"].settings_dict["NAME"] = name
    migrate()
    settings_dict = connections["default"].settings_dict
    return f"{settings_dict['HOST']}:{settings_dict['PORT'] or 5432}/{name}"


def drop_databases(names: list[str]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url(), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def prefect_home(tmp: Path) -> None:
    """One PREFECT_HOME for this process and every server it starts (one at a time), in the benchmark's tmp."""
    os.environ.update(
        {"PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    )
