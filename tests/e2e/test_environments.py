"""Two environments on one Prefect server: each serve_flows runs only its own environment's flow runs.

The failure this guards against was seen: with `make run` up, `make test`'s flow run was picked up by the demo's
serve_flows (same server, same deployment names) and run against the demo's database.
"""

import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection
from prefect.client.orchestration import get_client
from psycopg import sql

from analyses.models import Analysis, AssemblyAnalysisRequest
from tests.slurm_support import ROOT, poll_until
from tests.stack import FlowsServer, deployments_registered
from workflows.outbox import deployments

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.linger]


def _admin_connection() -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    )


@pytest.fixture
def other_environment(flows_server_env, tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    """A second database, migrated, and the environment of a serve_flows that uses it (its own environment)."""
    db = connection.settings_dict
    name = f"{db['NAME']}_other"
    with _admin_connection() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    env = {
        **flows_server_env,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{name}",
        "JOBS_ROOT": str(tmp_path / "other-jobs"),
        # Its own archive store too: both databases number their first study MGYS00000001 and its analyses
        # alike, and two moves of MGYA00000002 into one store collide (as two sites' would).
        "RESULTS_ROOT": str(tmp_path / "other-results"),
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True)
    try:
        yield name, env
    finally:
        with _admin_connection() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _create_request_in(env: dict[str, str], accession: str) -> int:
    script = (
        "from analyses.services import create_assembly_analysis_request as create; "
        f"print(create(study_accession={accession!r}, requester=None).pk)"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout.split()[-1])


def _status_in(env: dict[str, str], request_id: int) -> tuple[str, str, int]:
    """(status, flow run id, analyses) of a request in the other environment's database."""
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        request_row = conn.execute(
            "SELECT status, request_metadata FROM analyses_assemblyanalysisrequest WHERE id = %s",
            [request_id],
        ).fetchone()
        count_row = conn.execute(
            "SELECT count(*) FROM analyses_analysis WHERE request_id = %s", [request_id]
        ).fetchone()
    assert request_row is not None and count_row is not None, f"no request {request_id}"
    (status, metadata), (analyses,) = request_row, count_row
    return status, (metadata or {}).get("flow_run_id", ""), analyses


def test_two_environments_on_one_prefect_server_each_complete_in_their_own_database(
    flows_server, other_environment, tmp_path
):
    other_name, other_env = other_environment
    ours = deployments.environment()
    assert other_name != ours
    (tmp_path / "other").mkdir()
    other_server = FlowsServer(other_env, tmp_path / "other")
    other_server.start()
    try:
        poll_until(
            lambda: deployments_registered(other_name), timeout=120, what="the other serve_flows to register"
        )
        other_id = _create_request_in(other_env, "PRJEB00002")
        request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")

        poll_until(
            lambda: (
                AssemblyAnalysisRequest.objects.get(pk=request.pk).is_terminal
                and _status_in(other_env, other_id)[0] in {"completed", "failed"}
            ),
            timeout=400,
            what="both requests to finish",
        )
    finally:
        other_server.stop()

    request.refresh_from_db()
    assert request.status == "completed", request.status_detail
    assert request.flow_run_id is not None
    assert Analysis.objects.filter(request=request).exists()
    other_status, other_flow_run_id, other_analyses = _status_in(other_env, other_id)
    assert other_status == "completed" and other_analyses > 0

    with get_client(sync_client=True) as client:
        for flow_run_id, environment in ((request.flow_run_id, ours), (other_flow_run_id, other_name)):
            flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
            assert flow_run.deployment_id is not None
            deployment = client.read_deployment(flow_run.deployment_id)
            assert deployment.name.endswith(f"@{environment}")
            assert flow_run.parameters["environment"] == environment
            assert f"env:{environment}" in flow_run.tags
    # Each serve_flows ran only its own environment's flow runs: the other one's log never names ours.
    other_log = "".join(path.read_text() for path in (tmp_path / "other").glob("serve_flows.*.log"))
    assert other_flow_run_id in other_log and request.flow_run_id not in other_log
