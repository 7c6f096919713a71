"""The web side after PostgreSQL restarts under it: a worker's persistent connection was cut by the server, and
the first request it serves afterwards must still answer (CONN_HEALTH_CHECKS finds the connection dead before
use; without it, that request is a 500)."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection

from tests.faults import restart_postgres
from tests.slurm_support import ROOT, poll_until

pytestmark = [pytest.mark.e2e, pytest.mark.disruptive]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn(transactional_db, tmp_path) -> Iterator[str]:
    """One sync worker on the test database, so every request reuses the same persistent connection."""
    db = connection.settings_dict
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DB_CONN_MAX_AGE": "600",
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 (closed with the process)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "emgapi.wsgi", "-w", "1", "-b", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        poll_until(answers, timeout=60, what="gunicorn to answer")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_first_request_after_a_postgres_restart_is_answered(gunicorn):
    assert httpx.get(f"{gunicorn}/api/studies/", timeout=10).status_code == 200  # the connection is now open
    restart_postgres()
    response = httpx.get(f"{gunicorn}/api/studies/", timeout=10)
    assert response.status_code == 200, response.text[:500]
