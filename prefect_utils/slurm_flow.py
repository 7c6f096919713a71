"""The Prefect side of waiting for Slurm: a flow run never blocks on a job, it suspends.

A suspended flow run holds no process, thread or connection. The service poller resumes it when one of its
jobs changes state (see `workflows.orchestration.recovery`), and the resumed run starts from the top: flows that suspend here
must be reconcilers, whose body reads what is already done from the ledger.
"""

import logging
import uuid

from prefect.exceptions import Abort
from prefect.flow_runs import suspend_flow_run

from prefect_utils.submission import _fault_point

logger = logging.getLogger(__name__)


def suspend_while_jobs_run() -> None:
    """Suspend this deployment's flow run (not a subflow's) until something resumes it; never times out.

    Each suspension gets a key of its own: a key that already fired makes `suspend_flow_run` return at once,
    and the default key restarts at "1" in every new process, so a resumed run would run straight on.

    Prefect refuses the suspension of a run that was moved meanwhile: put back in the queue (by recovery, or an
    operator), cancelled, or run by another process. The process then ends as Prefect's own `Abort` ends it: no
    state is written and it exits 0, so no failure and no traceback. Whoever moved the run decides what comes
    next, and the run's next pass reads what this one did.
    """
    _fault_point("before_suspend")
    try:
        suspend_flow_run(timeout=None, key=f"slurm-wait-{uuid.uuid4().hex}")
    except RuntimeError as exc:
        if "cannot be suspended" not in str(exc):
            raise
        refused = str(exc)
    else:
        # Only a run Prefect sees RUNNING under a key that already fired returns: with a key this new, that is
        # another process running it now.
        refused = "another process runs this flow run"
    logger.warning("Not suspended, leaving the flow run as it is: %s", refused)
    raise Abort(refused)
