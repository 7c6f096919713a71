"""Job states, defined once for the whole service: the client, the ledger, the poller, the reconciler, the models.

Standard library only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = ["NOT_SUBMITTED", "TERMINAL_STATES", "UNSCHEDULABLE_REASONS", "JobState", "map_state"]


class JobState(enum.StrEnum):
    """What the service needs to know about a job; ``map_state`` maps every Slurm state onto one of these."""

    # The ledger's own state (claimed, not yet submitted), in this enum rather than a second one so that a ledger
    # row's state is a JobState like any other; no Slurm code maps to it.
    NEW = "NEW"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"
    # The ledger's own verdict, never Slurm's: the poller gave up on the job, which Slurm had not known for
    # `PollConfig.lost_after_seconds` while it answered, or whose id now names another job (its comment is not
    # the row's submission key). An infrastructure failure, resubmitted like NODE_FAIL.
    LOST = "LOST"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


# The one definition of "this job is over" for the whole service (the ledger, the poller, the reconciler).
TERMINAL_STATES: frozenset[JobState] = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.TIMEOUT,
        JobState.OUT_OF_MEMORY,
        JobState.NODE_FAIL,
        JobState.PREEMPTED,
        JobState.CANCELLED,
        JobState.LOST,
    }
)
# The Slurm state recorded for an attempt that sbatch refused: it is FAILED, and no job exists.
NOT_SUBMITTED = "NOT SUBMITTED"

# Job state codes of Slurm 22.05 (squeue(1), sacct(1)). A state that still holds or may yet get resources is
# PENDING or RUNNING: the service must not treat it as finished.
_SLURM_STATES: Mapping[str, JobState] = {
    "PENDING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "CONFIGURING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    # The node failed to boot for the job: the cluster's fault, never the tool's verdict.
    "BOOT_FAIL": JobState.NODE_FAIL,
    "SPECIAL_EXIT": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
}


def map_state(raw: str) -> JobState:
    """Slurm's state text ("CANCELLED by 0", "CANCELLED+", "TIMEOUT") to a ``JobState``; UNKNOWN if unrecognised."""
    words = raw.strip().split()
    if not words:
        return JobState.UNKNOWN
    return _SLURM_STATES.get(words[0].rstrip("+").upper(), JobState.UNKNOWN)


# Reasons Slurm gives for keeping a job PENDING that time alone never clears: the job asks for more than a limit
# allows, or for what no node of its partition has, or waits on a dependency that can no longer be met. Only an
# operator changing the job or the limits would let it start. EnforcePartLimits refuses such jobs at submission,
# so a job meets these when the limits change under it, e.g. a partition's MaxTime lowered below its --time.
# Left out although they may also last long, because they clear without anyone touching the job or the limits:
# - PartitionNodeLimit: Slurm documents that it may also mean the partition's nodes are DOWN or DRAINED, and a node
#   returns when its slurmd registers again (ReturnToService=2).
# - InvalidAccount, InvalidQOS: slurmctld looks the association and QOS up again on every scheduling pass and
#   clears these once found, e.g. after a slurmctld that started while slurmdbd was down gets its associations.
# - PartitionDown/Inactive, JobHeldAdmin/User, ReqNodeNotAvail, Reservation: states that operators set and lift.
# - Grp*, Max*PerUser, Max*PerAccount: limits on what other jobs use, which frees up as those jobs end.
# The strings are Slurm 22.05's (job_reason_string in src/common/slurm_protocol_defs.c).
UNSCHEDULABLE_REASONS: frozenset[str] = frozenset(
    {
        "PartitionTimeLimit",
        # Any other partition limit (CPUs, AllowGroups, nodes outside the partition...).
        "PartitionConfig",
        "BadConstraints",
        "DependencyNeverSatisfied",
        # Per-job limits of the job's QOS or association (AccountingStorageEnforce=limits): they weigh the
        # job's own request only.
        "QOSMaxWallDurationPerJobLimit",
        "AssocMaxWallDurationPerJobLimit",
        "QOSMaxCpuPerJobLimit",
        "AssocMaxCpuPerJobLimit",
        "QOSMaxCpuMinutesPerJobLimit",
        "AssocMaxCpuMinutesPerJobLimit",
        "QOSMaxNodePerJobLimit",
        "AssocMaxNodePerJobLimit",
        "QOSMaxMemoryPerJob",
        "AssocMaxMemPerJob",
    }
)
