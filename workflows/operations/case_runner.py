"""Each deployment's end-to-end test cases, `workflows/pipelines/<name>/test-cases.yaml`, run on a live stack.

A case names what to start (a request for a study, a study to sync) and what must come of it: the final status,
the outcome of every run, the Slurm jobs each step ran (every attempt's state), figures of the result, and the
ERROR lines the flow run's log is expected to hold. Any other ERROR line or traceback in that log is a failure
too, whatever the status: a step can fail while its parent reports success.

`python manage.py run_test_cases` runs them against `make run`'s stack; `make test` runs every one on its own
stack (tests/e2e/test_pipeline_cases.py). Cases of one run start together and are waited for together.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from django.contrib.auth import get_user_model
from django.db.models import Max
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from analyses.models import Analysis, AssemblyAnalysisRequest, Study
from analyses.services import create_assembly_analysis_request
from workflows.models import Plan, Trigger
from workflows.operations.steering import job_rows, sync_with_ena
from workflows.outbox import deployments
from workflows.selectors import source_label

logger = logging.getLogger(__name__)

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"
CASES_FILE = "test-cases.yaml"
# Whose requests the cases are: a user that cannot log in, so its rows are told apart from people's.
CASES_USER = "emgapi-test-cases"
DEFAULT_TIMEOUT_SECONDS = 900
_TRACEBACK = "Traceback (most recent call last)"
_ERROR = logging.ERROR


class CaseFileError(ValueError):
    """A test-cases file that cannot be used; the message names the file, the case and the field."""


@dataclass(frozen=True)
class Case:
    deployment: str  # base name, e.g. deployments.ASSEMBLY_ANALYSIS
    name: str
    description: str
    parameters: Mapping[str, Any]
    expect: Mapping[str, Any]
    timeout_seconds: int
    source: str

    @property
    def label(self) -> str:
        return f"{Path(self.source).parent.name}/{self.name}"


@dataclass
class Outcome:
    case: Case
    verdict: str  # passed | failed | timed out | error
    mismatches: list[str] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


class Started(Protocol):
    def finished(self) -> bool: ...
    def observe(self) -> dict[str, Any]: ...
    def flow_run_ids(self) -> list[str]: ...


class Driver(Protocol):
    """How a deployment's cases are started and observed."""

    expectations: frozenset[str]

    def start(self, case: Case) -> Started: ...


# --- the files ---------------------------------------------------------------------------------------------------


def case_files() -> list[Path]:
    return sorted(PIPELINES_DIR.glob(f"*/{CASES_FILE}"))


def load_cases(path: Path) -> list[Case]:
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CaseFileError(f"{path}: not YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) - {"deployment", "cases"}:
        raise CaseFileError(f"{path}: a mapping of `deployment` and `cases`")
    deployment = document.get("deployment")
    if deployment not in DRIVERS:
        raise CaseFileError(
            f"{path}: deployment: {deployment!r} is not one this service serves ({sorted(DRIVERS)})"
        )
    driver = DRIVERS[deployment]
    raw_cases = document.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise CaseFileError(f"{path}: cases: a non-empty list")
    cases: list[Case] = []
    for index, raw in enumerate(raw_cases):
        where = f"{path}: case #{index + 1}"
        if not isinstance(raw, dict):
            raise CaseFileError(f"{where}: a mapping")
        name = raw.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,60}", name):
            raise CaseFileError(f"{where}: name: lower-case words joined by '-', got {name!r}")
        where = f"{path}: case {name!r}"
        if name in {case.name for case in cases}:
            raise CaseFileError(f"{where}: a second case of that name")
        unknown = set(raw) - {"name", "description", "parameters", "expect", "timeout_seconds"}
        if unknown:
            raise CaseFileError(f"{where}: unknown field(s) {sorted(unknown)}")
        parameters, expect = raw.get("parameters"), raw.get("expect")
        if not isinstance(parameters, dict) or not isinstance(expect, dict) or not expect:
            raise CaseFileError(f"{where}: `parameters` and `expect` are mappings, `expect` not empty")
        unknown = set(expect) - driver.expectations
        if unknown:
            raise CaseFileError(
                f"{where}: expect: unknown field(s) {sorted(unknown)}; known: {sorted(driver.expectations)}"
            )
        _check_shapes(where, expect)
        for pattern in _patterns_in(expect):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise CaseFileError(
                    f"{where}: expect: {pattern!r} is not a regular expression: {exc}"
                ) from None
        timeout = raw.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise CaseFileError(f"{where}: timeout_seconds: a positive integer, got {timeout!r}")
        cases.append(
            Case(
                deployment,
                name,
                str(raw.get("description", "")).strip(),
                parameters,
                expect,
                timeout,
                str(path),
            )
        )
    return cases


def all_cases() -> list[Case]:
    return [case for path in case_files() for case in load_cases(path)]


def select_cases(cases: Sequence[Case], pipeline: str | None = None, names: Iterable[str] = ()) -> list[Case]:
    """Cases of `pipeline` (its directory name or its deployment) and of the given names; unknown ones raise."""
    chosen = list(cases)
    if pipeline:
        chosen = [c for c in chosen if pipeline in (Path(c.source).parent.name, c.deployment)]
        if not chosen:
            known = sorted({Path(c.source).parent.name for c in cases})
            raise ValueError(f"no test cases for {pipeline!r}; pipelines with cases: {', '.join(known)}")
    names = list(names)
    if names:
        unknown = set(names) - {c.name for c in chosen}
        if unknown:
            raise ValueError(f"no case named {sorted(unknown)}; cases: {', '.join(c.name for c in chosen)}")
        chosen = [c for c in chosen if c.name in names]
    return chosen


def _check_shapes(where: str, expect: Mapping[str, Any]) -> None:
    """The shape of each expectation, so that a typo fails at load and not in the middle of judging."""

    def mapping_of(value: Any, check: Callable[[Any], bool]) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())

    def is_range(value: Any) -> bool:
        return (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
            and value[0] <= value[1]
        )

    shapes: dict[str, tuple[Callable[[Any], bool], str]] = {
        "failed_runs": (lambda v: mapping_of(v, lambda x: isinstance(x, str)), "a mapping of run: pattern"),
        "rejected_runs": (lambda v: mapping_of(v, lambda x: isinstance(x, str)), "a mapping of run: pattern"),
        "runs": (lambda v: mapping_of(v, lambda x: isinstance(x, str)), "a mapping of run: pattern"),
        "succeeded_runs": (
            lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "a list of runs",
        ),
        "log_errors": (
            lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "a list of patterns",
        ),
        "analyses": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        "assembly": (lambda v: mapping_of(v, is_range), "a mapping of figure: [low, high]"),
        "jobs": (
            lambda v: mapping_of(
                v,
                lambda steps: mapping_of(
                    steps, lambda s: isinstance(s, list) and all(isinstance(x, str) for x in s)
                ),
            ),
            "a mapping of run: {step: [state of each attempt]}",
        ),
    }
    for key, value in expect.items():
        if key in shapes and not shapes[key][0](value):
            raise CaseFileError(f"{where}: expect: {key}: {shapes[key][1]}, got {value!r}")


def _patterns_in(expect: Mapping[str, Any]) -> Iterable[str]:
    for key in ("failed_runs", "rejected_runs", "runs"):
        yield from (str(value) for value in (expect.get(key) or {}).values())
    yield from (str(value) for value in expect.get("log_errors") or [])
    if "study_title" in expect:
        yield str(expect["study_title"])


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


def compare(expect: Mapping[str, Any], observed: Mapping[str, Any]) -> list[str]:
    """What differs, one line each: 'field: expected …, observed …'. Empty when everything holds."""
    mismatches: list[str] = []
    for key, wanted in expect.items():
        got = observed.get(key)
        if key in ("failed_runs", "rejected_runs", "runs"):
            mismatches += _compare_patterns(key, wanted or {}, got or {})
        elif key == "log_errors":
            continue
        elif key == "assembly":
            for run, summary in sorted((got or {}).items()):
                for figure, (low, high) in wanted.items():
                    value = summary.get(figure)
                    if value is None or not low <= value <= high:
                        mismatches.append(
                            f"assembly of {run}: {figure} expected {low}..{high}, observed {value}"
                        )
            if not got:
                mismatches.append("assembly: expected figures, observed no analysis")
        elif key == "study_title":
            if not re.search(str(wanted), str(got or "")):
                mismatches.append(f"study_title: expected /{wanted}/, observed {got!r}")
        elif key == "jobs":
            for run, steps in wanted.items():
                observed_steps = (got or {}).get(run, {})
                if observed_steps != steps:
                    mismatches.append(f"jobs of {run}: expected {steps}, observed {observed_steps}")
        elif key == "succeeded_runs":
            if sorted(wanted) != sorted(got or []):
                mismatches.append(f"succeeded_runs: expected {sorted(wanted)}, observed {sorted(got or [])}")
        elif wanted != got:
            mismatches.append(f"{key}: expected {wanted!r}, observed {got!r}")
    mismatches += _compare_log_errors(expect.get("log_errors") or [], observed.get("log_errors") or [])
    return mismatches


def _compare_patterns(key: str, wanted: Mapping[str, str], got: Mapping[str, str]) -> list[str]:
    lines = []
    for run in sorted(set(wanted) | set(got)):
        if run not in got:
            lines.append(f"{key}: expected {run} (/{wanted[run]}/), observed none")
        elif run not in wanted:
            lines.append(f"{key}: unexpected {run}: {_first_line(got[run])}")
        elif not re.search(wanted[run], got[run], re.DOTALL):
            lines.append(f"{key} {run}: expected /{wanted[run]}/, observed {got[run]!r}")
    return lines


def _compare_log_errors(patterns: Sequence[str], lines: Sequence[str]) -> list[str]:
    """Every ERROR line or traceback must be expected, and every expected one must be there."""
    mismatches = [
        f"log: unexpected ERROR: {_first_line(line)}"
        for line in lines
        if not any(re.search(p, line, re.DOTALL) for p in patterns)
    ]
    mismatches += [
        f"log: expected an ERROR matching /{p}/, observed none"
        for p in patterns
        if not any(re.search(p, line, re.DOTALL) for line in lines)
    ]
    return mismatches


def _first_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:300]


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
        jobs: dict[str, dict[str, list[str]]] = {}
        for row in job_rows(request):
            jobs.setdefault(row.run, {}).setdefault(row.step, []).append(row.job.state)
        analyses = Analysis.objects.filter(request=request).select_related("run")
        flow_runs = self.flow_run_ids()
        return {
            "flow_run": _flow_run_state(flow_runs[-1]) if flow_runs else None,
            "status": request.status,
            "succeeded_runs": sorted(metadata.get("succeeded_runs", [])),
            "failed_runs": dict(metadata.get("failed_runs", {})),
            "rejected_runs": dict(newest_plan.rejected) if newest_plan is not None else {},
            "analyses": analyses.count(),
            "assembly": {
                analysis.run.accession: dict(analysis.summary)
                for analysis in analyses
                if analysis.run is not None
            },
            "jobs": jobs,
        }


class AssemblyDriver:
    expectations = frozenset(
        {
            "flow_run",
            "status",
            "succeeded_runs",
            "failed_runs",
            "rejected_runs",
            "analyses",
            "assembly",
            "jobs",
            "log_errors",
        }
    )

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
    expectations = frozenset({"flow_run", "study_title", "runs", "log_errors"})

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


# --- the report --------------------------------------------------------------------------------------------------


def format_table(outcomes: Sequence[Outcome]) -> str:
    rows = [("case", "verdict", "seconds", "expected vs observed")]
    for outcome in outcomes:
        detail = outcome.mismatches or ["as expected"]
        rows.append((outcome.case.label, outcome.verdict, f"{outcome.seconds:.0f}", detail[0]))
        rows += [("", "", "", line) for line in detail[1:]]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    )
