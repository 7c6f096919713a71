"""The Prefect side of waiting for Slurm: a flow run never blocks on a job, it suspends.

A suspended flow run holds no process, thread or connection. The service poller resumes it when one of its
jobs changes state (see `workflows.orchestration.recovery`), and the resumed run starts from the top: flows that suspend here
must be reconcilers, whose body reads what is already done from the ledger.
"""

import uuid

from prefect.flow_runs import suspend_flow_run


def suspend_while_jobs_run() -> None:
    """Suspend this deployment's flow run (not a subflow's) until something resumes it; never times out.

    Each suspension gets a key of its own: a key that already fired makes `suspend_flow_run` return at once,
    and the default key restarts at "1" in every new process, so a resumed run would run straight on.
    """
    suspend_flow_run(timeout=None, key=f"slurm-wait-{uuid.uuid4().hex}")
