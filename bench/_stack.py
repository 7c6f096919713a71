"""The services and processes a benchmark starts, stops and watches:

  * gunicorn serving the web side (bench/api_reads.py, bench/health.py);
  * the whole service, run for real and isolated from everything else on the machine, for the benchmarks that need
    flow runs (bench/waiting.py, bench/chaos.py, bench/prefect_down.py):
      - a Prefect server of its own (free port, its own PREFECT_HOME and PostgreSQL database `<database>_prefect`),
        so its deployments never meet the shared server's;
      - the ENA stub with the demo data (scripts/ena_stub.py);
      - `manage.py serve_flows` in its own process group (the served deployments and the service loop), which a
        benchmark may stop, kill and start again;
  * the processes of serve_flows, read from /proc.

Django's own database is the benchmark's business (bench._setup.fresh_database, after `Stack.start`: the stack
points this process's Prefect settings at its own server first). Importing this module changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench._report import say
from bench._setup import ROOT, chunks, database_url, recreate_database, scancel, wait_until_idle

if TYPE_CHECKING:
    import httpx

DEMO_ENA = ROOT / "demo" / "ena"
VENV_BIN = Path(sys.executable).parent


# --- processes --------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on loopback now, for a server the benchmark starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A process started in its own session (process group), its output in a log file; stopped by its group."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        if not self.running():
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {grace:.0f} s of SIGTERM: SIGKILL to its process group")
        # Whatever else of the group is left (flow processes, workers).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def kill(self) -> None:
        """What a crash does: SIGKILL to the whole process group (the process and every child it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def status_field(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def children(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return pids
    for task in tasks:
        try:
            pids += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return pids


def descendants(pid: int) -> list[int]:
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, wherever they were reparented."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def is_flow_process(pid: int) -> bool:
    """The runner starts each flow run as `python -m prefect.engine`; its other children (the poller's squeue and
    sacct, say) are not flow processes."""
    return "prefect.engine" in cmdline(pid)


def flow_processes(server_pid: int) -> list[int]:
    """Live (not zombie) flow-run processes of serve_flows."""
    return [
        pid for pid in children(server_pid) if proc_state(pid) not in (None, "Z") and is_flow_process(pid)
    ]


def poll_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    say(f"  !! gave up after {timeout:.0f} s waiting for {what}")
    return False


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# --- the web side -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def gunicorn(env: dict[str, str], timeout: float) -> Iterator[httpx.Client]:
    """gunicorn (emgapi.wsgi, 2 workers) on a free loopback port with `env`, its output on ours; an httpx client of
    it (requests time out after `timeout` s), once /healthz answers. Stopped on the way out."""
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "emgapi.wsgi",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("gunicorn did not answer in 60 s") from None
                    time.sleep(0.2)
            yield client
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- the isolated stack -----------------------------------------------------------------------------------------


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

    def start(self) -> None:
        """The Prefect server (and this process's Prefect settings pointed at it) and the ENA stub."""
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
            if not self.prefect.running():
                raise SystemExit(f"the Prefect server exited:\n{tail(self.prefect.log)}")
            return self.prefect_answers()

        if not poll_until(healthy, timeout, "the Prefect server", 0.5):
            raise SystemExit(f"the Prefect server did not answer:\n{tail(self.prefect.log)}")

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
            raise SystemExit(f"serve_flows did not register its deployments:\n{tail(self.serve_flows.log)}")
        say(f"serve_flows (pid {self.serve_flows.pid}) serving after {time.monotonic() - start:.0f} s")

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

    # -- reading state --

    def flow_run_ids(self, request_ids: Iterable[int]) -> dict[int, str | None]:
        from analyses.models import AssemblyAnalysisRequest

        rows = AssemblyAnalysisRequest.objects.filter(pk__in=list(request_ids))
        return {row.pk: row.flow_run_id for row in rows}

    def flow_runs(self, flow_run_ids: Iterable[str]) -> dict:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        ids = [uuid.UUID(i) for i in flow_run_ids]
        found = {}
        with get_client(sync_client=True) as client:
            for part in chunks(ids, 100):
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(part))), limit=len(part)
                )
                found.update({str(r.id): r for r in runs})
        return found

    def run_states(self, request_ids: Iterable[int]) -> Counter[str]:
        """'Suspended', 'Running', ... per request; 'undispatched' while the request has no flow run yet."""
        ids = self.flow_run_ids(request_ids)
        runs = self.flow_runs(i for i in ids.values() if i)
        states: Counter[str] = Counter()
        for flow_run_id in ids.values():
            run_ = runs.get(flow_run_id) if flow_run_id else None
            if flow_run_id is None:
                states["undispatched"] += 1
            elif run_ is None or run_.state is None:
                states["missing in Prefect"] += 1
            else:
                states[run_.state.name or run_.state.type.value] += 1
        return states

    def flow_run_states(self, flow_run_id: str, since: datetime | None = None) -> list:
        """The flow run's state history, oldest first (from `since`)."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            states = client.read_flow_run_states(uuid.UUID(flow_run_id))
        return sorted((s for s in states if since is None or s.timestamp >= since), key=lambda s: s.timestamp)

    def ledger_jobs(self, request_ids: Iterable[int] | None = None) -> list:
        from workflows.models import ClusterJob

        jobs = ClusterJob.objects.exclude(slurm_job_id__isnull=True)
        if request_ids is not None:
            jobs = jobs.filter(request_id__in=list(request_ids))
        return list(jobs.order_by("pk"))

    # -- cleanup --

    def job_ids(self) -> list[str]:
        try:
            return [job.slurm_job_id for job in self.ledger_jobs()]
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

    def log_findings(self, logs: list[Path] | None = None) -> None:
        """The ERROR, WARNING and Traceback lines of serve_flows' logs (all its starts)."""
        logs = self.serve_flows_logs if logs is None else logs
        if not logs:
            return
        lines = [
            line for log in logs if log.exists() for line in log.read_text(errors="replace").splitlines()
        ]
        kinds: Counter[str] = Counter()
        errors: list[str] = []
        warnings: list[str] = []
        for line in lines:
            kind = next((k for k in ("Traceback", "CRITICAL", "ERROR", "WARNING") if k in line), None)
            if kind is None:
                continue
            kinds[kind] += 1
            (warnings if kind == "WARNING" else errors).append(line[:240])
        notable = list(dict.fromkeys(errors))[:15] + list(dict.fromkeys(warnings))[:5]
        say()
        say(
            f"serve_flows log{'s' if len(logs) > 1 else ''}: {len(lines)} lines"
            + (f" in {len(logs)} files" if len(logs) > 1 else "")
            + "; "
            + (", ".join(f"{k} {v}" for k, v in kinds.items()) or "no errors")
        )
        for line in notable:
            say(f"  | {line}")


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
