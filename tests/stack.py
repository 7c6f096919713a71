"""The real stack the end-to-end tests run on: REST API -> outbox -> real Prefect server -> served deployment -> real
Slurm -> database. Its fixtures (gated_stub, flows_server_env, flows_server) are made available by the conftest.py of
each folder whose tests use them (tests/e2e, tests/chaos, tests/browser); its helpers are imported."""

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.exceptions import ObjectNotFound

from analyses.models import AssemblyAnalysisRequest
from tests.conftest import DEMO_ENA_DIR
from tests.slurm_support import ROOT, job_ids_with_comment, poll_until
from workflows.models import ClusterJob
from workflows.outbox import deployments

REQUESTS_URL = "/api/assembly-analysis-requests/"


# --- serve_flows ---------------------------------------------------------------------------------------------------


class FlowsServer:
    """`manage.py serve_flows` in its own process group, which a test may kill -9 and start again; or, with
    `command` and `name`, another process that runs flows (a Prefect worker, the service loop alone)."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        *,
        command: list[str] | None = None,
        name: str = "serve_flows",
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.command = command or [sys.executable, "manage.py", "serve_flows"]
        self.name = name
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"{self.name}.{self.starts}.log", "w")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """What a crash does: the runner and every flow-run process it started die at once."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def flow_processes(self) -> list[int]:
        """Pids of the flow-run processes the runner started (its children); empty while every run is suspended."""
        if self.process is None:
            return []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        return [pid for pid in pids if _alive(pid)]

    def stop(self) -> int | None:
        """SIGTERM, as `make down` sends it; the exit status (None: it had to be killed, or was not running)."""
        if self.process is None:
            return None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            status: int | None = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            status = None
        self.process = None
        return status

    def log(self) -> str:
        """What its latest start wrote."""
        return (self.log_dir / f"{self.name}.{self.starts}.log").read_text(errors="replace")


def _alive(pid: int) -> bool:
    """Not exited: this sandbox reaps slowly, and a zombie is still listed among its parent's children."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def delete_leftover_runs() -> None:
    """Runs left SCHEDULED by an earlier, interrupted session would be picked up and mistaken for ours.

    Only this environment's deployments: another environment on the same Prefect server (a `make run`, another
    test session with its own database) keeps its runs.
    """
    names = [
        deployments.served_deployment_name(name)
        for name in (deployments.ASSEMBLY_ANALYSIS_DEPLOYMENT, deployments.STUDY_SYNC_DEPLOYMENT)
    ]
    with get_client(sync_client=True) as client:
        leftovers = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names)),
            flow_run_filter=FlowRunFilter(),
        )
        for flow_run in leftovers:
            if flow_run.state is None or not flow_run.state.is_final():
                client.delete_flow_run(flow_run.id)


def deployments_registered(environment: str | None = None) -> bool:
    """Every deployment of `environment` (default: ours) is registered and not paused."""
    environment = environment or deployments.environment()
    with get_client(sync_client=True) as client:
        try:
            served = [
                client.read_deployment_by_name(f"{name}@{environment}")
                for name in (deployments.ASSEMBLY_ANALYSIS, deployments.STUDY_SYNC)
            ]
        except ObjectNotFound:
            return False
    # A stopped runner leaves its deployments paused; the new one un-pauses them once it is serving.
    return not any(deployment.paused for deployment in served)


# --- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture
def gated_stub(ena_stub, stub_fastq_dir):
    server, base_url = ena_stub.serve_in_thread(DEMO_ENA_DIR, fastq_dir=stub_fastq_dir)
    try:
        yield server, base_url
    finally:
        server.fastq_gate.set()
        server.shutdown()
        server.server_close()


# For a test whose request must be suspended while a held job runs, and then only has to finish: 8 s is long
# enough that the steps after the held one (each a few seconds on the demo's reads) follow on in one process
# rather than costing a resume each, and short enough that the flow run suspends while the held job waits.
linger_past_a_held_job = pytest.mark.linger(seconds=8)


@pytest.fixture
def flows_server_env(request, transactional_db, gated_stub, tmp_path) -> dict[str, str]:
    """The environment of `serve_flows` in a test: the test database, the stub ENA, short intervals."""
    _, ena_url = gated_stub
    db = connection.settings_dict
    linger = request.node.get_closest_marker("linger")
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "ENA_PORTAL_API_URL": ena_url,
        "JOBS_ROOT": str(tmp_path / "jobs"),
        "RESULTS_ROOT": str(tmp_path / "results"),
        # demo/bin first: its fault injector is what a test case of a timed-out assembly needs (demo/bin/megahit).
        "PIPELINE_JOB_PATH": f"{ROOT / 'demo' / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "prefect-results"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "WORKFLOWS_DISPATCH_INTERVAL_SECONDS": "1",
        "WORKFLOWS_SWEEP_INTERVAL_SECONDS": "1",
        # Long enough for a busy runner to start a flow process; short enough for a test to wait out.
        "WORKFLOWS_STALL_SECONDS": "15",
        # Short: the demo's steps take longer than this, so every request suspends and is resumed, which is what
        # the tests of suspension and resumption need. A test marked `linger` is not about suspension: as in
        # `make run` (where `make test-cases` runs), a pass watches the demo's short jobs instead of suspending
        # after each step (`linger(seconds=N)` for a shorter watch).
        "WORKFLOWS_LINGER_SECONDS": str(linger.kwargs.get("seconds", 20)) if linger else "1",
        "SLURM_POLL_MIN_SECONDS": "0.5",
        "SLURM_POLL_MAX_SECONDS": "2",
        # One retry: an outage reaches the poller in seconds, not the production ~45 s (tests/chaos wait for it).
        "SLURM_COMMAND_RETRIES": "1",
        # A test's own settings for the flow server, e.g. `flows_env(APPROVAL_THRESHOLD_CPU_HOURS="1")`.
        **(flows_env.kwargs if (flows_env := request.node.get_closest_marker("flows_env")) else {}),
    }


@pytest.fixture
def flows_server(flows_server_env, slurm_cluster, prefect_server, tmp_path) -> Iterator[FlowsServer]:
    delete_leftover_runs()
    server = FlowsServer(flows_server_env, tmp_path)
    server.start()
    poll_until(deployments_registered, timeout=120, what="serve_flows to register its deployments")
    try:
        yield server
    finally:
        server.stop()
        delete_leftover_runs()


# --- requests on the stack -----------------------------------------------------------------------------------------


def post_request(client, accession: str, *, force: bool = False) -> AssemblyAnalysisRequest:
    """POST a request and wait for its dispatch; `force` for a test that runs several per study at once."""
    payload = {"study_accession": accession, **({"force": True} if force else {})}
    response = client.post(REQUESTS_URL, payload, format="json")
    assert response.status_code == 201, response.content

    def dispatched() -> AssemblyAnalysisRequest | None:
        request = AssemblyAnalysisRequest.objects.get(pk=response.json()["id"])
        return request if request.flow_run_id else None

    # The commit woke the flow server's service loop, which dispatched the trigger (never the request thread).
    return poll_until(dispatched, timeout=60, what="the service loop to dispatch the request's trigger")


def request_status(request: AssemblyAnalysisRequest) -> str:
    request.refresh_from_db()
    return request.status


def flow_run_of(request: AssemblyAnalysisRequest):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(request.flow_run_id))


def assert_one_slurm_job_per_key(request: AssemblyAnalysisRequest) -> None:
    jobs = list(ClusterJob.objects.filter(request=request))
    assert jobs
    for job in jobs:
        assert job_ids_with_comment(job.submission_key) == {job.slurm_job_id}, job


def running_job(request: AssemblyAnalysisRequest) -> ClusterJob | None:
    return ClusterJob.objects.filter(request=request, state="RUNNING").first()


def flow_run_logs(request: AssemblyAnalysisRequest) -> list:
    with get_client(sync_client=True) as client:
        return client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(request.flow_run_id)])),
            limit=200,
        )


def suspended(request: AssemblyAnalysisRequest) -> bool:
    state = flow_run_of(request).state
    return state.type.value == "PAUSED" and state.name == "Suspended"
