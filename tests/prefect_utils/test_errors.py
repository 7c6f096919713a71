"""Which Slurm errors are transient, which a submit limit (prefect_utils/errors.py), on captured stderr."""

import pytest

from prefect_utils.errors import is_submit_limit, is_transient_error
from tests.prefect_utils.captures import SUBMIT_LIMIT_MESSAGES, read


@pytest.mark.parametrize(
    "name",
    [
        "squeue_controller_down.stderr.txt",
        "sbatch_controller_down.stderr.txt",
        "scancel_controller_down.stderr.txt",
        "sacct_dbd_down.stderr.txt",
        "squeue_munge_down.stderr.txt",
        "sbatch_munge_down.stderr.txt",
        "scancel_munge_down.stderr.txt",
        "sacct_munge_down.stderr.txt",
    ],
)
def test_outages_are_transient(name: str) -> None:
    assert is_transient_error(read(name))
    assert not is_submit_limit(read(name))


@pytest.mark.parametrize(
    "name",
    [
        "sbatch_invalid_partition.stderr.txt",
        "sbatch_too_much_memory.stderr.txt",
        "sbatch_too_many_cpus.stderr.txt",
        "squeue_invalid_job_id.stderr.txt",
    ],
)
def test_refusals_are_not_transient(name: str) -> None:
    assert not is_transient_error(read(name))
    assert not is_submit_limit(read(name))


@pytest.mark.parametrize("message", SUBMIT_LIMIT_MESSAGES)
def test_submit_limits_are_recognised(message: str) -> None:
    assert is_submit_limit(message)
