"""Prefect tasks over the idempotent Slurm layer: what flows call to run cluster work.

The Prefect cache is the fast path (a rerun flow gets the recorded answer without touching the ledger); the
ledger behind `SlurmJobs` is the source of truth, since the cache lives on the disk of whichever process ran
the task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.runtime import flow_run

from prefect_utils.jobs import JobFailed, ResubmitPolicy, SlurmJobs, job_key
from prefect_utils.ledger import LedgerRecord, submission_key
from prefect_utils.scheduler import JobSpec

__all__ = [
    "JobFailed",
    "JobHandle",
    "cancel_flow_run_jobs",
    "configure",
    "run_job",
    "submit_once",
    "wait_for_jobs",
]

_factory: Callable[[], SlurmJobs] | None = None
_service: SlurmJobs | None = None


def configure(factory: Callable[[], SlurmJobs]) -> None:
    """Tell the tasks how to build the service (ledger + client + limits); done once by the flow process."""
    global _factory, _service
    _factory, _service = factory, None


def jobs_service() -> SlurmJobs:
    global _service
    if _service is None:
        if _factory is None:
            raise RuntimeError("prefect_utils.slurm_flow.configure() was not called in this process")
        _service = _factory()
    return _service


@dataclass(frozen=True)
class JobHandle:
    """What a submission returns and the cache keeps: enough to find the job in the ledger again."""

    key: str
    attempt: int
    job_id: str


def _current_labels(labels: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(labels or {})
    if flow_run.id:
        merged.setdefault("flow_run_id", str(flow_run.id))
    return merged


def _submit_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    key = job_key(parameters["spec"], parameters.get("inputs") or {})
    return f"slurm-submit-{submission_key(key, parameters.get('attempt', 1))}"


def _run_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    policy = parameters.get("policy") or ResubmitPolicy()
    key = job_key(parameters["spec"], parameters.get("inputs") or {})
    return f"slurm-run-{key}-{policy.mode}-{policy.max_attempts}-{policy.factor}"


@task(
    name="submit-slurm-job",
    cache_key_fn=_submit_cache_key,
    persist_result=True,
    task_run_name="submit {spec.name}",
)
def submit_once(
    spec: JobSpec,
    inputs: Mapping[str, str] | None = None,
    attempt: int = 1,
    labels: Mapping[str, Any] | None = None,
) -> JobHandle:
    """Submit at most once per (spec, inputs, attempt); a rerun reattaches to the job already submitted."""
    record = jobs_service().submit_once(spec, inputs, attempt=attempt, labels=_current_labels(labels))
    get_run_logger().info("Slurm job %s for %s", record.job_id, record.submission_key)
    return JobHandle(record.key, record.attempt, record.job_id or "")


def _log_progress(records: list[LedgerRecord]) -> None:
    logger = get_run_logger()
    for record in records:
        stale = " (stale: controller unreachable)" if record.stale else ""
        logger.info("job %s %s: %s%s", record.job_id, record.spec.get("name", ""), record.state, stale)
        if record.state == "RUNNING" and record.log_tail:
            logger.info("job %s log tail:\n%s", record.job_id, record.log_tail)


@task(name="wait-for-slurm-jobs")
def wait_for_jobs(handles: Sequence[JobHandle], raise_on_failure: bool = True) -> list[LedgerRecord]:
    """Return when every job is terminal; raise JobFailed for the first that did not complete."""
    service = jobs_service()
    records = service.wait_for_jobs(
        [service.ledger.get(h.key, h.attempt) for h in handles], on_poll=_log_progress
    )
    if raise_on_failure:
        for record in records:
            if record.state != "COMPLETED":
                raise JobFailed(record)
    return records


@task(name="run-slurm-job", cache_key_fn=_run_cache_key, persist_result=True, task_run_name="{spec.name}")
def run_job(
    spec: JobSpec,
    inputs: Mapping[str, str] | None = None,
    policy: ResubmitPolicy | None = None,
    labels: Mapping[str, Any] | None = None,
) -> LedgerRecord:
    """Submit (or reattach), wait, resubmit by policy; the completed record, or JobFailed."""
    return jobs_service().run(
        spec, inputs, policy=policy, labels=_current_labels(labels), on_poll=_log_progress
    )


def cancel_flow_run_jobs(flow_run_id: str, reason: str = "flow run cancelled") -> list[str]:
    """scancel every unfinished job of a flow run and record it; used as the flows' on_cancellation hook."""
    return jobs_service().cancel(flow_run_id=flow_run_id, reason=reason)
