"""Everything about Slurm: the scheduler client, job specs, idempotent submission, the shared status poller."""
