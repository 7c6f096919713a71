"""The Slurm side of the service, configured from the settings: one place builds it for every caller."""

from django.conf import settings

from prefect_utils.slurm_client import SlurmClient
from prefect_utils.submission import PollConfig, SlurmJobs, ThrottleConfig
from workflows.orchestration.ledger import DjangoJobLedger


def build_jobs_service() -> SlurmJobs:
    return SlurmJobs(
        DjangoJobLedger(),
        SlurmClient(retries=settings.SLURM_COMMAND_RETRIES),
        poll=PollConfig(
            min_interval=settings.SLURM_POLL_MIN_SECONDS,
            max_interval=settings.SLURM_POLL_MAX_SECONDS,
            lost_after_seconds=settings.SLURM_LOST_AFTER_SECONDS,
        ),
        throttle=ThrottleConfig(
            max_active_jobs=settings.SLURM_MAX_ACTIVE_JOBS,
            submits_per_minute=settings.SLURM_SUBMIT_RATE_PER_MINUTE,
        ),
    )
