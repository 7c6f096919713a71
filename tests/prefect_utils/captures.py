"""Outputs captured from the real Slurm 22.05 cluster (tests/prefect_utils/data), and helpers to replay them.

The captures come from the command lines in data/commands.txt, run by SlurmClient itself against jobs that were
pending, running, completed, failed with exit 3, killed for memory, cancelled and timed out (data/job_ids.txt).
Only sacct_oom_documented.txt is not captured: OUT_OF_MEMORY needs cgroups, which the dev cluster does not use,
so that line follows sacct's documented format (state OUT_OF_MEMORY, ExitCode 0:125).
"""

import subprocess
from datetime import datetime
from pathlib import Path

from prefect_utils.job_spec import JobInfo, JobSpec

DATA = Path(__file__).parent / "data"
IDS = dict(line.split() for line in (DATA / "job_ids.txt").read_text().splitlines())

# Documented sbatch messages (a submit limit needs AccountingStorageEnforce and QOS set up, not the dev cluster's).
SUBMIT_LIMIT_MESSAGES = [
    "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission failed: "
    "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n",
    "sbatch: error: AssocMaxSubmitJobLimit\nsbatch: error: Batch job submission failed: "
    "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n",
    "sbatch: error: Batch job submission failed: Resource temporarily unavailable\n",
]


def read(name: str) -> str:
    return (DATA / name).read_text()


def by_id(jobs: list[JobInfo]) -> dict[str, JobInfo]:
    return {job.job_id: job for job in jobs}


def wall_clock(value: datetime | None) -> datetime | None:
    # Slurm prints local time; compare the wall clock whatever the test machine's time zone.
    return value.replace(tzinfo=None) if value else None


def make_spec(tmp_path: Path, **overrides: object) -> JobSpec:
    values: dict[str, object] = {
        "name": "analysis PRJEB1/step",
        "script": "echo hello",
        "workdir": str(tmp_path),
        "environment": {"B": "2", "A": "1,2"},
    }
    values.update(overrides)
    return JobSpec(**values)  # type: ignore[arg-type]


class Replay:
    """A runner answering each Slurm command with captured output, recording the argument lists."""

    def __init__(self, answers: dict[str, list[tuple[int, str, str] | BaseException]]) -> None:
        self.answers = answers
        self.commands: list[list[str]] = []

    def __call__(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.commands.append(args)
        queue = self.answers[args[0]]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, BaseException):
            raise answer
        code, stdout, stderr = answer
        return subprocess.CompletedProcess(args, code, stdout, stderr)
