"""The analysis flow of a request: one reconciler pass (or a few, for short jobs), then suspend until the poller
resumes it. Which pipelines a run goes through is its plan's (workflows/pipelines/analysis/pipeline.py)."""

from workflows.django_env import ensure_django

ensure_django()

import re
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from django.conf import settings
from django.db.models import Count, Q
from django.urls import reverse
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled, Completed, Failed

from analyses.models import AssemblyAnalysisRequest
from emgapi.log_format import request_context
from prefect_utils.slurm_flow import suspend_while_jobs_run
from prefect_utils.states import JobState
from workflows.models import ClusterJob, Plan, RequestProgress
from workflows.orchestration.cluster import build_jobs_service
from workflows.orchestration.reconciler import PassResult, reconcile
from workflows.orchestration.recovery import carry_out_cancellation
from workflows.orchestration.request_lock import request_lock
from workflows.outbox import deployments
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS

# What one pass adds to Prefect's storage, however many jobs the request has (issue 19: a table of every job, a
# new version each pass, grew it by gigabytes for one 20,000-job request). Every job is in the API and the admin.
SUMMARY_MAX_BYTES = 64 * 1024
_REASON_CHARS = 500
_FAILURES_LOGGED = 10


def _on_cancelled(flow, flow_run: FlowRun, state: State) -> None:
    """Cancel in the Prefect UI while a pass runs: cancel the request; its jobs are scancelled with it."""
    from analyses.services import RequestAlreadyFinished, cancel_assembly_analysis_request

    request_id = (flow_run.parameters or {}).get("request_id")
    if request_id is None:
        return
    request = AssemblyAnalysisRequest.objects.get(pk=request_id)
    try:
        cancel_assembly_analysis_request(request, by=None, reason="Flow run cancelled in Prefect.")
    except RequestAlreadyFinished:
        carry_out_cancellation(request.pk)


def artifact_key(request_id: int, what: str) -> str:
    """Scoped by environment, as everything this service makes in Prefect (request ids restart in every database,
    and `make run` and `make test` share a server); Prefect allows lowercase letters, digits and dashes."""
    environment = re.sub(r"[^a-z0-9]+", "-", deployments.environment().lower()).strip("-")
    return f"{environment}-request-{request_id}-{what}"


def jobs_summary(request_id: int, failed: Mapping[str, str]) -> str:
    """Markdown of at most SUMMARY_MAX_BYTES: the request's jobs counted by state, and the runs that did not go
    through with why (as many as fit, then how many more), pointing to the full list."""
    rows = (
        ClusterJob.objects.filter(request_id=request_id)
        .values("state")
        .annotate(jobs=Count("pk"), stale=Count("pk", filter=Q(state_stale=True)))
        .order_by("state")
    )
    by_state = {row["state"]: row for row in rows}
    order = [state.value for state in JobState]
    lines = [
        f"## Request {request_id}: {sum(row['jobs'] for row in by_state.values()):,} job(s)",
        "",
        "| state | jobs |",
        "|---|---|",
        *(
            f"| {state} | {by_state[state]['jobs']:,} |"
            for state in sorted(by_state, key=lambda s: order.index(s) if s in order else len(order))
        ),
    ]
    stale = sum(row["stale"] for row in by_state.values())
    if stale:
        lines += [
            "",
            f"{stale:,} stale: the controller did not answer the last poll, so these states may be old.",
        ]
    footer = [
        "",
        "Every job, with its Slurm job id, exit code and log: the API's "
        f"`{reverse('assembly-analysis-request-jobs', args=[request_id])}` (paginated) or the request's page in the "
        f"admin (`{reverse('admin:analyses_assemblyanalysisrequest_change', args=[request_id])}`).",
    ]
    if failed:
        lines += ["", f"### {len(failed):,} run(s) did not go through", ""]
        # Room for the footer and the "and N more" line, whatever N is.
        budget = SUMMARY_MAX_BYTES - len("\n".join([*lines, *footer]).encode()) - 100
        listed = 0
        for accession in sorted(failed):
            reason = " ".join(failed[accession].split())[:_REASON_CHARS]
            line = f"- `{accession}`: {reason}"
            budget -= len(line.encode()) + 1
            if budget < 0:
                break
            lines.append(line)
            listed += 1
        if listed < len(failed):
            lines.append(f"- … and {len(failed) - listed:,} more.")
    return "\n".join([*lines, *footer])


def post_progress(request_id: int, percent: float) -> None:
    """One progress artifact per request, updated in place by every pass; a new one only if it was deleted."""
    known = RequestProgress.objects.filter(pk=request_id).values_list("progress_artifact", flat=True).first()
    if known:
        try:
            update_progress_artifact(uuid.UUID(known), percent)
            return
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != httpx.codes.NOT_FOUND:
                raise
    artifact_id = create_progress_artifact(
        percent,
        key=artifact_key(request_id, "progress"),
        description=f"Runs of assembly-analysis request {request_id} that went through or failed for good",
    )
    RequestProgress.objects.update_or_create(
        request_id=request_id, defaults={"progress_artifact": str(artifact_id)}
    )


def _percent_done(request_id: int, result: PassResult) -> float:
    if not result.waiting:
        return 100.0
    plan = Plan.objects.filter(request_id=request_id).order_by("-generation").first()
    runs = plan.steps.order_by("run_accession").values("run_accession").distinct().count() if plan else 0
    return 100.0 * (len(result.succeeded) + len(result.failed)) / runs if runs else 0.0


# The name of the state a failed request's flow run ends in (a Failed state: the UI shows it red, with why).
REQUEST_FAILED = "Request failed"
# A rejected request's flow run ends Completed under this name: nothing went wrong, someone said no.
REQUEST_REJECTED = "Rejected"


@flow(
    name=deployments.ASSEMBLY_ANALYSIS_FLOW,
    description="Fetch an ENA study, check its runs, then run each run's route of pipelines as Slurm jobs.",
    on_cancellation=[_on_cancelled],
)
def assemble_and_analyse_study(request_id: int, environment: str | None = None) -> dict[str, Any] | State:
    """A reconciler: each run of this flow (first, resumed or rescheduled) moves the request on and exits.

    `environment` is set by the dispatcher; a run without it predates environments and is taken as ours.
    """
    deployments.refuse_other_environment(environment)
    with request_context(request_id):
        return _one_pass(request_id)


def _one_pass(request_id: int) -> dict[str, Any] | State:
    logger = get_run_logger()
    # The request lock from here until the suspension has been asked for (the passes take it again: it is
    # re-entrant). Recovery takes a run whose request no one holds for a dead one, and a live run it put back in
    # the queue could not suspend (issue 19). Another run of this request may be lingering with the lock: wait
    # that out rather than fail.
    with request_lock(request_id, wait_seconds=settings.WORKFLOWS_LINGER_MAX_SECONDS + 60):
        result = reconcile(
            request_id,
            pipeline=STUDY_ANALYSIS,
            jobs=build_jobs_service(),
            flow_run_id=str(current_flow_run.id),
            linger_seconds=settings.WORKFLOWS_LINGER_SECONDS,
            linger_max_seconds=settings.WORKFLOWS_LINGER_MAX_SECONDS,
        )
        if result.waiting and _cancelled(request_id):
            # Cancelled after the pass last looked, perhaps while it submitted: its jobs are scancelled before the
            # lock is let go, rather than by a later sweep.
            carry_out_cancellation(request_id, lock_held=True)
            result.status, result.waiting = AssemblyAnalysisRequest.Status.CANCELLED, False
        logger.info("Request %s: %s", request_id, result.summary)
        for accession in sorted(result.failed)[:_FAILURES_LOGGED]:
            logger.warning("Run %s did not go through: %s", accession, result.failed[accession])
        if len(result.failed) > _FAILURES_LOGGED:
            logger.warning(
                "... and %d more runs (the artifact lists them)", len(result.failed) - _FAILURES_LOGGED
            )
        create_markdown_artifact(
            key=artifact_key(request_id, "cluster-jobs"),
            markdown=jobs_summary(request_id, result.failed),
            description=f"Slurm jobs of assembly-analysis request {request_id}",
        )
        post_progress(request_id, _percent_done(request_id, result))
        if result.status == AssemblyAnalysisRequest.Status.AWAITING_APPROVAL:
            logger.warning(
                "Request %s: %s Suspending until someone approves or rejects it.",
                request_id,
                _detail(request_id),
            )
            suspend_while_jobs_run()
        elif result.waiting:
            logger.info("Request %s: suspending until one of its Slurm jobs ends", request_id)
            suspend_while_jobs_run()
    if result.status == AssemblyAnalysisRequest.Status.CANCELLED:
        # The run ends as its request did. A cancellation carried out under a pass's lock (here, or by the pass
        # itself) leaves the run to its pass: only the service loop's cancels the flow run in Prefect.
        return Cancelled(message=f"Request {request_id} was cancelled.")
    if result.status == AssemblyAnalysisRequest.Status.FAILED:
        # The dashboard shows the outcome: a failed request's run is Failed, and says why. The request is final by
        # now, so recovery, which looks after unfinished requests only, does not take the state for a crash.
        status, detail = AssemblyAnalysisRequest.objects.values_list("status", "status_detail").get(
            pk=request_id
        )
        if status == AssemblyAnalysisRequest.Status.FAILED:
            logger.warning("Request %s failed: %s", request_id, detail)
            return Failed(name=REQUEST_FAILED, message=f"Request {request_id} failed: {detail}")
    if result.status == AssemblyAnalysisRequest.Status.REJECTED:
        detail = _detail(request_id)
        logger.warning("Request %s: %s", request_id, detail)
        return Completed(name=REQUEST_REJECTED, message=f"Request {request_id}: {detail}")
    return {"status": result.status, "succeeded": result.succeeded, "failed": result.failed}


def _detail(request_id: int) -> str:
    return AssemblyAnalysisRequest.objects.values_list("status_detail", flat=True).get(pk=request_id)


def _cancelled(request_id: int) -> bool:
    return AssemblyAnalysisRequest.objects.filter(
        pk=request_id, status=AssemblyAnalysisRequest.Status.CANCELLED
    ).exists()
