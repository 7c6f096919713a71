import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from prefect_utils.slurm_client import SlurmClient
from prefect_utils.submission import PollConfig, SlurmJobs
from workflows.orchestration.ledger import DjangoJobLedger

CHILD = Path(__file__).with_name("submit_child.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def service(slurm_cluster) -> SlurmJobs:
    return SlurmJobs(DjangoJobLedger(), SlurmClient(), poll=PollConfig(min_interval=0.2, max_interval=1.0))


@pytest.fixture
def run_child(transactional_db):
    """Start `submit_child.py` against the test database; returns a function giving the Popen."""

    def start(spec_json: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        settings = connection.settings_dict
        url = (
            f"postgres://{settings['USER']}:{settings['PASSWORD']}@{settings['HOST']}:{settings['PORT']}"
            f"/{settings['NAME']}"
        )
        child_env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT), **(env or {})}
        return subprocess.Popen(
            [sys.executable, str(CHILD), spec_json, *extra],
            env=child_env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start
