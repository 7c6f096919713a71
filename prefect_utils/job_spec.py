"""What a batch job is (``JobSpec``) and what Slurm last said of one (``JobInfo``).

Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from prefect_utils.states import UNSCHEDULABLE_REASONS, JobState

__all__ = ["JobInfo", "JobSpec", "expand_output_pattern"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """Everything that defines a batch job. Data reaches the script through ``environment``, never its text."""

    name: str
    script: str
    workdir: str
    partition: str | None = None
    cpus: int = 1
    memory_mb: int = 512
    time_limit_minutes: int = 60
    environment: dict[str, str] = field(default_factory=dict)
    output_path: str | None = None
    error_path: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("JobSpec.name must not be empty")
        if not self.script.strip():
            raise ValueError("JobSpec.script must not be empty")
        for attribute in ("cpus", "memory_mb", "time_limit_minutes"):
            value = getattr(self, attribute)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"JobSpec.{attribute} must be a positive integer, got {value!r}")
        for attribute in ("workdir", "output_path", "error_path"):
            value = getattr(self, attribute)
            if value is not None and not os.path.isabs(value):
                raise ValueError(f"JobSpec.{attribute} must be an absolute path, got {value!r}")
        for key, value in self.environment.items():
            if not _ENV_NAME.fullmatch(key) or key.startswith("SLURM_"):
                raise ValueError(f"invalid environment variable name for a job: {key!r}")
            if not isinstance(value, str) or "\0" in value:
                raise ValueError(f"environment value of {key} must be a string without NUL bytes")

    @property
    def batch_script(self) -> str:
        """The script as submitted: sbatch needs an interpreter line."""
        body = self.script if self.script.endswith("\n") else self.script + "\n"
        return body if body.startswith("#!") else "#!/bin/bash\n" + body

    def stdout_path(self, job_id: str) -> str:
        """Where the job's standard output goes, with ``%j``-style patterns expanded."""
        pattern = self.output_path or os.path.join(self.workdir, "slurm-%j.out")
        return expand_output_pattern(pattern, job_id, job_name=None)

    def canonical(self) -> dict[str, Any]:
        """A JSON-able, key-sorted form: equal specs give equal canonical forms (the submission key hashes it)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["environment"] = dict(sorted(self.environment.items()))
        return dict(sorted(values.items()))

    @classmethod
    def from_canonical(cls, data: Mapping[str, Any]) -> JobSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown JobSpec fields: {sorted(unknown)}")
        values = dict(data)
        values["environment"] = dict(values.get("environment") or {})
        return cls(**values)


@dataclass(frozen=True)
class JobInfo:
    """One job as Slurm last reported it. ``slurm_state`` keeps Slurm's own word for the state."""

    job_id: str
    state: JobState
    slurm_state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    node: str | None = None
    comment: str | None = None
    stdout_path: str | None = None
    submitted: datetime | None = None
    # Other live jobs of ours that squeue listed with this job's comment: second jobs for one submission key.
    duplicates: tuple[str, ...] = ()

    @classmethod
    def unknown(cls, job_id: str, slurm_state: str = "", reason: str | None = None) -> JobInfo:
        return cls(job_id=job_id, state=JobState.UNKNOWN, slurm_state=slurm_state, reason=reason)

    @property
    def unschedulable(self) -> bool:
        """Slurm keeps the job pending for a reason that never clears by itself (``UNSCHEDULABLE_REASONS``)."""
        return self.state is JobState.PENDING and self.reason in UNSCHEDULABLE_REASONS


def expand_output_pattern(pattern: str, job_id: str, job_name: str | None, node: str | None = None) -> str:
    """Expand the filename patterns sbatch understands for --output (%j, %A, %a, %x, %N, %%); others stay."""
    base, _, index = job_id.partition("_")
    replacements = {"j": job_id, "A": base, "a": index or None, "x": job_name, "N": node, "%": "%"}

    def replace(match: re.Match[str]) -> str:
        value = replacements.get(match.group(1))
        return match.group(0) if value is None else value

    return re.sub(r"%([A-Za-z%])", replace, pattern)
