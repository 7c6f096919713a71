"""Each deployment's end-to-end test cases run on a live stack: start every case, wait, judge (`cases`).

A case names what to start (a request for a study, a study to sync) and what must come of it: the final status,
the outcome of every run, the Slurm jobs each step ran (every attempt's state), figures of the result, and the
ERROR lines the flow run's log is expected to hold. Any other ERROR line or traceback in that log is a failure
too, whatever the status: a step can fail while its parent reports success.

`python manage.py run_test_cases` runs them against `make run`'s stack; `make test` runs every one on its own
stack (tests/e2e/test_pipeline_cases.py). Cases of one run start together and are waited for together.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Max
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from analyses.models import Analysis, AssemblyAnalysisRequest, ProcessingStatus, Study, StudyResult
from analyses.services import create_assembly_analysis_request
from workflows.models import Plan, StepBatch, Trigger
from workflows.operations.cases import (
    EXPECTATIONS,
    Case,
    CaseFileError,
    Driver,
    Outcome,
    Started,
    compare,
)
from workflows.operations.steering import job_rows, sync_with_ena
from workflows.outbox import deployments
from workflows.selectors import source_label

logger = logging.getLogger(__name__)

# Whose requests the cases are: a user that cannot log in, so its rows are told apart from people's.
CASES_USER = "emgapi-test-cases"
_TRACEBACK = "Traceback (most recent call last)"
_ERROR = logging.ERROR


# --- running -----------------------------------------------------------------------------------------------------


def run_cases(
    cases: Sequence[Case], *, poll_seconds: float = 2.0, say: Callable[[str], None] = logger.info
) -> list[Outcome]:
    """Start every case, wait for all (each until its own deadline), then compare what came of each."""
    started: list[tuple[Case, Started | None, float, Outcome | None]] = []
    for case in cases:
        begun = time.monotonic()
        try:
            new_handle = DRIVERS[case.deployment].start(case)
        except Exception as exc:  # a case that cannot start is reported, and the others still run
            started.append((case, None, begun, Outcome(case, "error", [f"could not start: {exc!r}"])))
            continue
        say(f"started {case.label}")
        started.append((case, new_handle, begun, None))
    outcomes: dict[int, Outcome] = {i: o for i, (_, _, _, o) in enumerate(started) if o is not None}
    while len(outcomes) < len(started):
        for index, (case, handle, begun, _) in enumerate(started):
            if index in outcomes or handle is None:
                continue
            elapsed = time.monotonic() - begun
            if handle.finished():
                outcomes[index] = _judge(case, handle, elapsed)
                say(f"{case.label}: {outcomes[index].verdict} in {elapsed:.0f} s")
            elif elapsed > case.timeout_seconds:
                outcome = _judge(case, handle, elapsed)
                outcome.verdict = "timed out"
                outcome.mismatches.insert(0, f"not finished after {case.timeout_seconds} s")
                outcomes[index] = outcome
                say(f"{case.label}: timed out after {elapsed:.0f} s")
        if len(outcomes) < len(started):
            time.sleep(poll_seconds)
    return [outcomes[index] for index in range(len(started))]


def _judge(case: Case, handle: Started, seconds: float) -> Outcome:
    try:
        observed = handle.observe()
        observed["log_errors"] = flow_run_error_lines(handle.flow_run_ids())
    except Exception as exc:
        return Outcome(case, "error", [f"could not observe: {exc!r}"], seconds=seconds)
    mismatches = compare(case.expect, observed)
    return Outcome(case, "failed" if mismatches else "passed", mismatches, observed, seconds)


def flow_run_error_lines(flow_run_ids: Sequence[str], *, settle_seconds: float = 2.0) -> list[str]:
    """ERROR (and worse) lines and tracebacks of the flow runs' logs, read from the Prefect API.

    A flow process ships its log in batches, the last one as it exits: read until two reads agree.
    """
    if not flow_run_ids:
        return []
    ids = [uuid.UUID(i) for i in flow_run_ids]
    previous: list[str] | None = None
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            lines: list[str] = []
            offset = 0
            while True:
                page = client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset
                )
                lines += [
                    f"{log.name}: {log.message}"
                    for log in page
                    if log.level >= _ERROR or _TRACEBACK in log.message
                ]
                if len(page) < 200:
                    break
                offset += len(page)
            if lines == previous or time.monotonic() > deadline:
                return lines
            previous = lines
            time.sleep(settle_seconds)


def _flow_run_final(flow_run_ids: Sequence[str]) -> bool:
    with get_client(sync_client=True) as client:
        for flow_run_id in flow_run_ids:
            state = client.read_flow_run(uuid.UUID(flow_run_id)).state
            if state is None or not state.is_final():
                return False
    return True


def _flow_run_state(flow_run_id: str) -> str | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(flow_run_id)).state
    return state.type.value if state is not None else None


def _cases_user():
    user, created = get_user_model().objects.get_or_create(username=CASES_USER, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


# --- the assembly deployment -------------------------------------------------------------------------------------


@dataclass
class _StartedRequest:
    request_id: int

    def _request(self) -> AssemblyAnalysisRequest:
        return AssemblyAnalysisRequest.objects.get(pk=self.request_id)

    def flow_run_ids(self) -> list[str]:
        """Its flow runs, oldest first: a retry or a replaced run adds one."""
        triggers = Trigger.objects.filter(source=source_label(self._request())).exclude(flow_run_id="")
        return list(dict.fromkeys(triggers.order_by("pk").values_list("flow_run_id", flat=True)))

    def finished(self) -> bool:
        # The flow run too: its last lines reach the log as it ends, after the request's final status.
        return self._request().is_terminal and _flow_run_final(self.flow_run_ids())

    def observe(self) -> dict[str, Any]:
        request = self._request()
        metadata = request.request_metadata or {}
        newest_plan = Plan.objects.filter(request=request).order_by("-generation").first()
        batches = {batch.key: batch for batch in StepBatch.objects.filter(request=request)}
        jobs: dict[str, dict[str, list[str]]] = {}
        for row in job_rows(request):
            # A batch's job is each of its runs' job for the step.
            batch = batches.get(row.job.key)
            for run in sorted(batch.members) if batch else [row.run]:
                jobs.setdefault(run, {}).setdefault(row.step, []).append(row.job.state)
        # Completed ones: a run that failed leaves its planned analyses failed, a skipped pipeline none.
        analyses = Analysis.objects.filter(request=request, status=ProcessingStatus.COMPLETED).select_related(
            "run"
        )
        figures: dict[str, dict[str, dict[str, Any]]] = {}
        for analysis in analyses:
            if analysis.run is not None:
                figures.setdefault(analysis.pipeline, {})[analysis.run.accession] = dict(analysis.summary)
        flow_runs = self.flow_run_ids()
        return {
            "flow_run": _flow_run_state(flow_runs[-1]) if flow_runs else None,
            "status": request.status,
            "succeeded_runs": sorted(metadata.get("succeeded_runs", [])),
            "failed_runs": dict(metadata.get("failed_runs", {})),
            "rejected_runs": dict(newest_plan.rejected) if newest_plan is not None else {},
            "analyses": analyses.count(),
            "figures": figures,
            "study_results": {
                result.pipeline: dict(result.summary)
                for result in StudyResult.objects.filter(request=request)
            },
            "outcomes": {
                run: dict(outcome.get("pipelines", {}))
                for run, outcome in metadata.get("outcomes", {}).items()
            },
            "jobs": jobs,
            "batches": {
                step: [sorted(b.members) for b in batches.values() if b.step == step]
                for step in sorted({b.step for b in batches.values()})
            },
        }


class AssemblyDriver:
    expectations = EXPECTATIONS[deployments.ASSEMBLY_ANALYSIS]

    def start(self, case: Case) -> Started:
        parameters = dict(case.parameters)
        request = create_assembly_analysis_request(
            study_accession=parameters.pop("study_accession"),
            requester=_cases_user(),
            # A case may run while an earlier run of it (or a person's request) is active for the study.
            force=True,
            resources=parameters.pop("resources", None),
        )
        if parameters:
            raise CaseFileError(
                f"{case.source}: case {case.name!r}: unknown parameter(s) {sorted(parameters)}"
            )
        return _StartedRequest(request.pk)


# --- the study-sync deployment -----------------------------------------------------------------------------------


@dataclass
class _StartedSync:
    study_id: int
    after_trigger: int

    def _trigger(self) -> Trigger | None:
        study = Study.objects.get(pk=self.study_id)
        return (
            Trigger.objects.filter(source=source_label(study), pk__gt=self.after_trigger)
            .order_by("-pk")
            .first()
        )

    def flow_run_ids(self) -> list[str]:
        trigger = self._trigger()
        return [trigger.flow_run_id] if trigger is not None and trigger.flow_run_id else []

    def finished(self) -> bool:
        ids = self.flow_run_ids()
        return bool(ids) and _flow_run_final(ids)

    def observe(self) -> dict[str, Any]:
        study = Study.objects.get(pk=self.study_id)
        ids = self.flow_run_ids()
        return {
            "flow_run": _flow_run_state(ids[0]) if ids else None,
            "study_title": study.title,
            "runs": {
                run.accession: "passed"
                if run.qa_status == run.QaStatus.PASSED
                else f"rejected: {run.qa_reason}"
                for run in study.runs.all()
            },
        }


class StudySyncDriver:
    expectations = EXPECTATIONS[deployments.STUDY_SYNC]

    def start(self, case: Case) -> Started:
        parameters = dict(case.parameters)
        accession = parameters.pop("study_accession")
        if parameters:
            raise CaseFileError(
                f"{case.source}: case {case.name!r}: unknown parameter(s) {sorted(parameters)}"
            )
        after = Trigger.objects.aggregate(last=Max("pk"))["last"] or 0
        study = Study.objects.filter(ena_accession=accession).first()
        if study is None:
            study = Study.objects.create(ena_accession=accession)  # its post_save enqueues the sync
        else:
            sync_with_ena([study])
        return _StartedSync(study.pk, after)


DRIVERS: dict[str, Driver] = {
    deployments.ASSEMBLY_ANALYSIS: AssemblyDriver(),
    deployments.STUDY_SYNC: StudySyncDriver(),
}
