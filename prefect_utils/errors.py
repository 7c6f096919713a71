"""What can go wrong when talking to Slurm: the exceptions, and which of Slurm's messages mean what.

Standard library only.
"""

from __future__ import annotations

__all__ = [
    "SchedulerError",
    "SchedulerUnavailable",
    "SubmissionRejected",
    "SubmitLimitReached",
    "is_submit_limit",
    "is_transient_error",
    "never_connected",
]


class SchedulerError(Exception):
    """Slurm refused or failed a request."""


class SchedulerUnavailable(SchedulerError):
    """The controller (or the accounting daemon) did not answer, even after bounded retries."""


class SubmitLimitReached(SchedulerError):
    """Back-pressure: sbatch refused the job because of a submit limit; submit again later."""


class SubmissionRejected(SchedulerError):
    """sbatch refused the job spec itself; submitting it again will not help."""


# Messages of a controller (or slurmdbd) that is down, restarting or overloaded: worth another try.
_TRANSIENT = (
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "connect failure",
    "zero bytes were transmitted or received",
    "transport endpoint is not connected",
    "communication connection failure",
    "backup controller in standby mode",
    "problem talking to the database",
    "resource temporarily unavailable",
    # munged stopped or restarting: the client cannot sign its request, or the controller cannot check it.
    "protocol authentication error",
)
# ... of which these mean the controller never took the request in (unreachable, or it refused an unsigned one), so
# a retried sbatch cannot duplicate a job.
_NEVER_CONNECTED = ("connect failure", "connection refused", "protocol authentication error")
_SUBMIT_LIMIT = (
    "qosmaxsubmitjobperuserlimit",
    "qosmaxsubmitjobperaccountlimit",
    "assocmaxsubmitjoblimit",
    "maxsubmitjob",
    "job violates accounting/qos policy",
    "job submit limit",
    "resource temporarily unavailable",
    "temporarily unable to accept job",
)


def is_transient_error(message: str) -> bool:
    lowered = message.lower()
    return any(pattern in lowered for pattern in _TRANSIENT)


def never_connected(message: str) -> bool:
    """A transient error after which the request surely never reached the controller."""
    lowered = message.lower()
    return any(pattern in lowered for pattern in _NEVER_CONNECTED)


def is_submit_limit(message: str) -> bool:
    lowered = message.lower()
    return any(pattern in lowered for pattern in _SUBMIT_LIMIT)
