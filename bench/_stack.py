"""The whole service, run for real and isolated from everything else on the machine, for the benchmarks that need
flow runs (bench/waiting.py, bench/chaos.py, bench/prefect_down.py):

  * a Prefect server of its own (free port, its own PREFECT_HOME and PostgreSQL database `<database>_prefect`),
    so its deployments never meet the shared server's;
  * the ENA stub with the demo data (scripts/ena_stub.py);
  * `manage.py serve_flows` in its own process group (the served deployments and the service loop), which a
    benchmark may stop, kill and start again;

and the life of the benchmark's temporary directory (`--keep`). The processes are bench._services'; what a
benchmark reads of the stack's state is in bench._readings.

Django's own database is the benchmark's business (bench._setup.fresh_database, after `Stack.start`: the stack
points this process's Prefect settings at its own server first). Importing this module changes nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._readings import ledger_jobs
from bench._report import say
from bench._services import Service, free_port, poll_until, tail
from bench._setup import ROOT, database_url, recreate_database, scancel, wait_until_idle

DEMO_ENA = ROOT / "demo" / "ena"
VENV_BIN = Path(sys.executable).parent


class Stack:
    """The Prefect server, the ENA stub and serve_flows of one benchmark, under `tmp`.

    `service_settings` are the serve_flows environment values the benchmark states in its output.
    """

    def __init__(self, tmp: Path, database: str, service_settings: dict[str, str]) -> None:
        self.tmp = tmp
        self.database = database
        self.prefect_db = f"{database}_prefect"
        self.service_settings = service_settings
        self.started: list[Service] = []
        self.serve_flows: Service | None = None
        self.serve_flows_logs: list[Path] = []
        self.ena_url = ""
        self.ids_to_wait: list[str] = []
        self.serve_flows_args: list[str] = []  # after `manage.py serve_flows` (e.g. ["--limit", "8"])
        self.prefect: Service | None = None
        self.prefect_starts = 0
        self.prefect_port = 0
        self.api_url = ""

    def run(self) -> bool | None:
        """The benchmark (see run_stack); False when there is a finding whose evidence is in `tmp`."""
        raise NotImplementedError

    @property
    def jobs_root(self) -> Path:
        return self.tmp / "jobs"

    @property
    def prefect_server(self) -> Service:
        """The Prefect server started last (RuntimeError before `start`)."""
        if self.prefect is None:
            raise RuntimeError("the Prefect server has not been started")
        return self.prefect

    @property
    def flow_server(self) -> Service:
        """The serve_flows started last (RuntimeError before the first `launch_serve_flows`)."""
        if self.serve_flows is None:
            raise RuntimeError("serve_flows has not been started")
        return self.serve_flows

    def start(self) -> None:
        """The Prefect server (and this process's Prefect settings pointed at it) and the ENA stub."""
        self.launch_own_prefect()
        start = time.monotonic()

        port_file = self.tmp / "ena_stub.port"
        stub = Service(
            "ENA stub",
            [
                sys.executable,
                "scripts/ena_stub.py",
                "--data-dir",
                str(DEMO_ENA),
                "--fastq-dir",
                str(self.tmp / "fastq"),
                "--port",
                "0",
                "--port-file",
                str(port_file),
            ],
            dict(os.environ),
            self.tmp / "ena_stub.log",
        )
        self.started.append(stub)
        if not poll_until(
            lambda: port_file.exists() and port_file.read_text().strip() != "", 30, "the ENA stub", 0.1
        ):
            raise SystemExit(f"ENA stub did not start:\n{tail(stub.log)}")
        self.ena_url = f"http://127.0.0.1:{port_file.read_text().strip()}/ena/portal/api"

        self.wait_prefect()
        say(
            f"Prefect server (own, database {self.prefect_db}) answering at {self.api_url} after {time.monotonic() - start:.0f} s"
        )
        say(f"ENA stub at {self.ena_url}")

    def launch_own_prefect(self) -> None:
        """A new Prefect server on a free port and a fresh database, this process's settings pointed at it; returns
        at once (`wait_prefect` waits)."""
        self.prefect_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.prefect_port}/api"
        # The bench process reads Prefect and dispatches flow runs (the outbox) through its own server only.
        os.environ.update(
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_HOME": str(self.tmp / "prefect-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(self.tmp / "prefect-results"),
            }
        )
        recreate_database(self.prefect_db)
        self.launch_prefect()

    def launch_prefect(self) -> Service:
        """The Prefect server on the stack's port and database (kept from any earlier start); returns at once.

        The previous server must be gone; its log stays (prefect_server.log, then prefect_server.N.log)."""
        previous = self.prefect
        if previous is not None and previous.running():
            raise RuntimeError("the Prefect server is still running")
        if previous is not None:
            self.started.remove(previous)
        self.prefect_starts += 1
        server_env = {
            **os.environ,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url(self.prefect_db, "postgresql+asyncpg"),
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
        log = (
            "prefect_server.log" if self.prefect_starts == 1 else f"prefect_server.{self.prefect_starts}.log"
        )
        self.prefect = Service(
            "Prefect server",
            [
                str(VENV_BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.prefect_port),
            ],
            server_env,
            self.tmp / log,
        )
        self.started.append(self.prefect)
        return self.prefect

    def prefect_answers(self, timeout: float = 2.0) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.api_url}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_prefect(self, timeout: float = 180.0) -> None:
        """Until the Prefect server answers /health (SystemExit if it exits or never does)."""

        def healthy() -> bool:
            if not self.prefect_server.running():
                raise SystemExit(f"the Prefect server exited:\n{tail(self.prefect_server.log)}")
            return self.prefect_answers()

        if not poll_until(healthy, timeout, "the Prefect server", 0.5):
            raise SystemExit(f"the Prefect server did not answer:\n{tail(self.prefect_server.log)}")

    def restart_prefect(self) -> float:
        """A new Prefect server on the same port and database, after the previous one was stopped; the seconds
        until it answers."""
        start = time.monotonic()
        self.launch_prefect()
        self.wait_prefect()
        return time.monotonic() - start

    def serve_flows_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "ENA_PORTAL_API_URL": self.ena_url,
            **self.service_settings,
            "JOBS_ROOT": str(self.jobs_root),
            "LOG_LEVEL": "INFO",
            **(extra or {}),
        }

    def show_settings(self, extra: dict[str, str] | None = None) -> None:
        env = self.serve_flows_env(extra)
        shown = {key: env[key] for key in self.service_settings}
        say("serve_flows settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        say(f"                      DB_CONN_MAX_AGE={env.get('DB_CONN_MAX_AGE', '60 (default)')}")

    def launch_serve_flows(self, extra: dict[str, str] | None = None) -> Service:
        """A new serve_flows (the previous one must be gone), its log in serve_flows[.N].log; returns at once."""
        if self.serve_flows is not None and self.serve_flows.running():
            raise RuntimeError("serve_flows is still running")
        if self.serve_flows is not None:
            self.started.remove(self.serve_flows)
        number = len(self.serve_flows_logs) + 1
        log = self.tmp / ("serve_flows.log" if number == 1 else f"serve_flows.{number}.log")
        self.serve_flows_logs.append(log)
        self.serve_flows = Service(
            "serve_flows",
            [sys.executable, "manage.py", "serve_flows", *self.serve_flows_args],
            self.serve_flows_env(extra),
            log,
        )
        self.started.append(self.serve_flows)
        return self.serve_flows

    def start_serve_flows(self, extra: dict[str, str] | None = None) -> None:
        """serve_flows, waited for until its deployments are registered and not paused."""
        self.show_settings(extra)
        self.launch_serve_flows(extra)
        start = time.monotonic()
        if not poll_until(self.deployments_served, 180, "serve_flows to register its deployments"):
            raise SystemExit(f"serve_flows did not register its deployments:\n{tail(self.flow_server.log)}")
        say(f"serve_flows (pid {self.flow_server.pid}) serving after {time.monotonic() - start:.0f} s")

    def deployments_served(self) -> bool:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        from workflows.outbox import deployments

        if self.serve_flows is not None and not self.serve_flows.running():
            raise SystemExit(f"serve_flows exited:\n{tail(self.serve_flows.log)}")
        with get_client(sync_client=True) as client:
            try:
                served = [
                    client.read_deployment_by_name(deployments.in_this_environment(name))
                    for name in (deployments.ASSEMBLY_ANALYSIS, deployments.STUDY_SYNC)
                ]
            except ObjectNotFound:
                return False
        return not any(deployment.paused for deployment in served)

    # -- cleanup --

    def job_ids(self) -> list[str]:
        try:
            return [job.slurm_job_id for job in ledger_jobs()]
        except Exception as exc:  # the database may be what failed: nothing more to cancel from here
            say(f"cannot read the ledger to cancel its jobs: {exc}")
            return []

    def cancel_jobs(self) -> None:
        if self.serve_flows is not None:
            self.serve_flows.stop()  # first, so that nothing submits after the scancel
        self.ids_to_wait = self.job_ids()
        scancel(self.ids_to_wait)

    def wait_jobs_gone(self) -> None:
        ids = self.ids_to_wait
        if ids:
            scancel(self.job_ids())
            waited = wait_until_idle(ids, timeout=120, what="the benchmark's jobs")
            say(f"cancelled the benchmark's {len(ids)} jobs (gone from the queue after {waited:.0f} s)")

    def shutdown(self) -> None:
        """The benchmark's jobs cancelled, every process it started stopped (by process group)."""
        self.cancel_jobs()
        for service in reversed(self.started):
            service.stop()
        self.wait_jobs_gone()


def add_stack_options(
    parser: argparse.ArgumentParser, database: str, kept: str = "logs, job directories, Prefect home"
) -> None:
    """--database and --keep of a benchmark on the isolated stack; `kept` says what its temporary directory holds."""
    parser.add_argument(
        "--database",
        default=database,
        help="Django's database; the Prefect server's is <database>_prefect (both dropped and recreated)",
    )
    parser.add_argument("--keep", action="store_true", help=f"keep the temporary directory ({kept})")


def run_stack(make: Callable[[Path], Stack], *, name: str, keep: bool, logs: str) -> None:
    """`make(tmp).run()` in a new temporary directory, then every process of the stack stopped and its jobs
    cancelled, and the directory removed: kept with `keep`, or when run() returns False (a finding; the directory
    holds its evidence). `logs` names the logs it holds."""
    tmp = Path(tempfile.mkdtemp(prefix=f"emgapi-bench-{name}-"))
    stack = None
    try:
        stack = make(tmp)
        keep = stack.run() is False or keep
    finally:
        if stack is not None:
            stack.shutdown()
        if keep:
            say(f"kept {tmp} (logs: {logs})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
