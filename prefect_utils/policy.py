"""What follows an attempt that ended badly (``ResubmitPolicy``), and how its failure reads (``describe_failure``).

Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from prefect_utils.job_spec import JobSpec
from prefect_utils.ledger import LedgerRecord
from prefect_utils.states import JobState, map_state

__all__ = ["INFRASTRUCTURE_FAILURES", "RESOURCE_FAILURES", "ResubmitPolicy", "describe_failure"]

# Failure classes (see ResubmitPolicy).
INFRASTRUCTURE_FAILURES = frozenset({JobState.NODE_FAIL, JobState.PREEMPTED, JobState.LOST})
RESOURCE_FAILURES = frozenset({JobState.OUT_OF_MEMORY, JobState.TIMEOUT})


@dataclass(frozen=True)
class ResubmitPolicy:
    """What follows an attempt that ended badly, by failure class.

    - exit code (FAILED), CANCELLED: nothing; the failure is reported with the log tail.
    - OUT_OF_MEMORY / TIMEOUT: an attempt with memory / time multiplied by `factor`, capped by the partition's
      limits, at most `max_escalations` times. `memory_environment` names the variables carrying the tool's own
      memory limit (in bytes, as a fraction of the job's memory), which are scaled with it.
    - NODE_FAIL (BOOT_FAIL among them) / PREEMPTED / LOST: the same spec again, at most
      `max_infrastructure_retries` times in all; these do not use the escalation budget, since the job did
      nothing wrong.
    """

    max_escalations: int = 1
    factor: float = 2.0
    max_memory_mb: int = 64_000
    max_time_limit_minutes: int = 7 * 24 * 60
    max_infrastructure_retries: int = 3
    memory_environment: dict[str, float] = field(default_factory=dict)

    def next_spec(self, history: Sequence[LedgerRecord]) -> JobSpec | None:
        """The spec of the next attempt after the last of `history` (every attempt, oldest first), or None."""
        last = history[-1]
        previous = JobSpec.from_canonical(last.spec)
        if last.state in INFRASTRUCTURE_FAILURES:
            used = sum(record.state in INFRASTRUCTURE_FAILURES for record in history)
            return previous if used <= self.max_infrastructure_retries else None
        if last.state not in RESOURCE_FAILURES:
            return None
        if sum(record.state in RESOURCE_FAILURES for record in history) > self.max_escalations:
            return None
        if last.state == JobState.OUT_OF_MEMORY:
            memory = min(int(previous.memory_mb * self.factor), self.max_memory_mb)
            if memory <= previous.memory_mb:
                return None
            environment = dict(previous.environment)
            for name, fraction in self.memory_environment.items():
                if name in environment:
                    environment[name] = str(int(memory * 1024 * 1024 * fraction))
            return replace(previous, memory_mb=memory, environment=environment)
        limit = min(int(previous.time_limit_minutes * self.factor), self.max_time_limit_minutes)
        return None if limit <= previous.time_limit_minutes else replace(previous, time_limit_minutes=limit)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResubmitPolicy:
        return cls(**data)


def describe_failure(record: LedgerRecord) -> str:
    """What an operator needs to see why an attempt did not complete: state, exit code, reason, log tail."""
    detail = f"exit code {record.exit_code}" if record.exit_code is not None else "no exit code"
    reason = f", reason {record.reason}" if record.reason and record.reason != "None" else ""
    tail = record.log_tail.strip() or "(empty log)"
    job = f"Slurm job {record.job_id}" if record.job_id else "The job"
    # Slurm's own word where ours is coarser (BOOT_FAIL is recorded NODE_FAIL, DEADLINE TIMEOUT).
    slurm = record.slurm_state.split()[0].rstrip("+") if record.slurm_state else ""
    synonym = slurm != record.state and map_state(slurm) == record.state
    state = f"{record.state} (Slurm: {slurm})" if synonym else str(record.state)
    return (
        f"{job} ({record.spec.get('name', record.key[:12])}, attempt {record.attempt}) "
        f"ended {state} with {detail}{reason}. Last lines of its log:\n{tail}"
    )
