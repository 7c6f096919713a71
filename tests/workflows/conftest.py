"""Fixtures shared by the tests that run reconciler passes against the real Slurm cluster and the ENA stub."""

import pytest

from prefect_utils.slurm_client import SlurmClient
from prefect_utils.submission import PollConfig, SlurmJobs
from workflows.orchestration.ledger import DjangoJobLedger


@pytest.fixture
def jobs(slurm_cluster) -> SlurmJobs:
    return SlurmJobs(DjangoJobLedger(), SlurmClient(), poll=PollConfig(min_interval=0.2, max_interval=0.5))


@pytest.fixture
def pipeline_world(settings, demo_stub, tmp_path):
    """Settings as a flow process has them, with no Prefect (nothing here dispatches) and ENA the stub."""
    _, ena_url = demo_stub
    settings.ENA_PORTAL_API_URL = ena_url
    settings.JOBS_ROOT = tmp_path / "jobs"
    settings.RESULTS_ROOT = tmp_path / "results"
    settings.PIPELINE_CONFIG = {}
    return settings
