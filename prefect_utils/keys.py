"""The names of jobs: a step's key, and the submission key of one attempt at it.

A job is identified by its key, the hash of its canonical spec and input hashes; an attempt at it by the
submission key ``<key>-<attempt>``, which Slurm carries in the job's comment so that a job submitted by a process
that died before recording it is found and adopted, never submitted again. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from prefect_utils.job_spec import JobSpec

__all__ = ["job_key", "submission_key"]


def job_key(spec: JobSpec, inputs: Mapping[str, str]) -> str:
    """Hash of the canonical spec and the input hashes: equal work, equal key, on any machine."""
    payload = json.dumps({"spec": spec.canonical(), "inputs": dict(sorted(inputs.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def submission_key(key: str, attempt: int) -> str:
    """The one place that builds ``<key>-<attempt>``, the Slurm comment of an attempt's job."""
    return f"{key}-{attempt}"
