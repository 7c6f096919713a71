"""One Slurm job for several members of one step (prefect_utils.batch), on the real cluster."""

import uuid
from pathlib import Path

import pytest

from prefect_utils.batch import COMPLETED, batch_spec, read_statuses
from prefect_utils.job_spec import JobSpec
from prefect_utils.slurm_client import SlurmClient
from prefect_utils.states import JobState
from tests.prefect_utils.conftest import wait_for_job

# A member script as a pipeline step writes one: fixed text, its data in the environment.
SCRIPT = """#!/bin/bash
set -euo pipefail
: "${RUN_ACCESSION:?}" "${OUT:?}"
if [[ "${FAIL:-0}" == 1 ]]; then
    echo "$RUN_ACCESSION: the reads carry no primer" >&2
    exit 3
fi
printf '%s in %s\\n' "$RUN_ACCESSION" "$PWD" > "$OUT"
"""


def member(tmp_path: Path, run: str, **environment: str) -> tuple[str, JobSpec]:
    workdir = tmp_path / run
    return run, JobSpec(
        name=f"step-{run}",
        script=SCRIPT,
        workdir=str(workdir),
        time_limit_minutes=2,
        environment={"RUN_ACCESSION": run, "OUT": str(workdir / "out.txt"), **environment},
        output_path=str(workdir / "step.log"),
    )


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_one_failing_member_fails_alone_with_its_reason(tmp_path: Path) -> None:
    members = [member(tmp_path, "ERR1"), member(tmp_path, "ERR2", FAIL="1"), member(tmp_path, "ERR3")]
    spec = batch_spec(members, name="batch test", workdir=str(tmp_path / "batch"), max_time_limit_minutes=60)
    assert spec.time_limit_minutes == 6 and spec.cpus == 1

    client = SlurmClient(backoff_seconds=0.2)
    job_id = client.submit(spec, f"test-batch-{uuid.uuid4().hex}")
    info = wait_for_job(client, job_id)

    # The job completed: a member's failure is the member's.
    assert info.state is JobState.COMPLETED, info
    statuses = read_statuses(spec)
    assert statuses["ERR1"] == statuses["ERR3"] == COMPLETED
    assert statuses["ERR2"].startswith("exit code 3: ERR2: the reads carry no primer (log ")
    # Each member ran in its own directory, with its own environment, its output in its own log.
    assert (tmp_path / "ERR3" / "out.txt").read_text() == f"ERR3 in {tmp_path / 'ERR3'}\n"
    assert not (tmp_path / "ERR2" / "out.txt").exists()
    assert "no primer" in (tmp_path / "ERR2" / "step.log").read_text()


def test_members_must_be_jobs_of_one_step(tmp_path: Path) -> None:
    run, first = member(tmp_path, "ERR1")
    other = JobSpec.from_canonical({**first.canonical(), "memory_mb": 4096})
    with pytest.raises(ValueError, match="ERR2 is not a job of the same step as ERR1"):
        batch_spec(
            [(run, first), ("ERR2", other)], name="b", workdir=str(tmp_path), max_time_limit_minutes=60
        )


def test_a_missing_status_file_says_nothing_of_any_member(tmp_path: Path) -> None:
    spec = batch_spec(
        [member(tmp_path, "ERR1")], name="b", workdir=str(tmp_path / "b"), max_time_limit_minutes=1
    )
    assert spec.time_limit_minutes == 2  # never below one member's
    assert read_statuses(spec) == {}
