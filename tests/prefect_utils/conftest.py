import time
from collections.abc import Callable

import pytest

from prefect_utils.job_spec import JobInfo
from prefect_utils.slurm_client import SlurmClient


@pytest.fixture
def client(slurm_cluster: None) -> SlurmClient:
    return SlurmClient(backoff_seconds=0.2)


def wait_for_job(
    client: SlurmClient,
    job_id: str,
    done: Callable[[JobInfo], bool] = lambda info: info.state.is_terminal,
    timeout: float = 60.0,
) -> JobInfo:
    """Poll job_states until ``done`` holds or the deadline passes (the cluster is shared: be patient)."""
    deadline = time.monotonic() + timeout
    while True:
        info = client.job_states([job_id])[job_id]
        if done(info):
            return info
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {info.slurm_state or info.state} after {timeout:g} s")
        time.sleep(0.2)
