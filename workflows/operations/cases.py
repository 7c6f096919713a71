"""Each deployment's end-to-end test cases, `workflows/pipelines/<name>/test-cases.yaml`: the files, checked when
they load (the file, the case and the field of a mistake named), and the judge that compares what a case expects
with what was observed. Running them on a live stack is `case_runner`'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from workflows.outbox import deployments

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"
CASES_FILE = "test-cases.yaml"
DEFAULT_TIMEOUT_SECONDS = 900

# What a case of each deployment may expect: the fields its driver observes.
EXPECTATIONS: dict[str, frozenset[str]] = {
    deployments.ASSEMBLY_ANALYSIS: frozenset(
        {
            "flow_run",
            "status",
            "succeeded_runs",
            "failed_runs",
            "rejected_runs",
            "analyses",
            "figures",
            "study_results",
            "outcomes",
            "jobs",
            "batches",
            "log_errors",
        }
    ),
    deployments.STUDY_SYNC: frozenset({"flow_run", "study_title", "runs", "log_errors"}),
}


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
    if deployment not in EXPECTATIONS:
        raise CaseFileError(
            f"{path}: deployment: {deployment!r} is not one this service serves ({sorted(EXPECTATIONS)})"
        )
    known = EXPECTATIONS[deployment]
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
        unknown = set(expect) - known
        if unknown:
            raise CaseFileError(
                f"{where}: expect: unknown field(s) {sorted(unknown)}; known: {sorted(known)}"
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
        "figures": (
            lambda v: mapping_of(v, lambda x: mapping_of(x, is_range)),
            "a mapping of pipeline: {figure: [low, high]} (every analysis of that pipeline)",
        ),
        "study_results": (
            lambda v: mapping_of(v, lambda x: mapping_of(x, is_range)),
            "a mapping of pipeline: {figure: [low, high]} (the request's study result of that pipeline)",
        ),
        "outcomes": (
            lambda v: mapping_of(v, lambda x: mapping_of(x, lambda y: isinstance(y, str))),
            "a mapping of run: {pipeline: pattern}",
        ),
        "jobs": (
            lambda v: mapping_of(
                v,
                lambda steps: mapping_of(
                    steps, lambda s: isinstance(s, list) and all(isinstance(x, str) for x in s)
                ),
            ),
            "a mapping of run: {step: [state of each attempt]} (a batch's job under each of its runs)",
        ),
        "batches": (
            lambda v: mapping_of(
                v,
                lambda groups: (
                    isinstance(groups, list)
                    and all(isinstance(g, list) and all(isinstance(r, str) for r in g) for g in groups)
                ),
            ),
            "a mapping of step: [[the runs of each batch], ...]",
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


def compare(expect: Mapping[str, Any], observed: Mapping[str, Any]) -> list[str]:
    """What differs, one line each: 'field: expected …, observed …'. Empty when everything holds."""
    mismatches: list[str] = []
    for key, wanted in expect.items():
        got = observed.get(key)
        if key in ("failed_runs", "rejected_runs", "runs"):
            mismatches += _compare_patterns(key, wanted or {}, got or {})
        elif key == "log_errors":
            continue
        elif key == "figures":
            for pipeline, ranges in wanted.items():
                summaries = (got or {}).get(pipeline, {})
                if not summaries:
                    mismatches.append(
                        f"figures: expected {pipeline} figures, observed no {pipeline} analysis"
                    )
                for run, summary in sorted(summaries.items()):
                    mismatches += _compare_ranges(f"{pipeline} of {run}", ranges, summary)
        elif key == "study_results":
            for pipeline, ranges in wanted.items():
                summary = (got or {}).get(pipeline)
                if summary is None:
                    mismatches.append(f"study_results: expected a {pipeline} result, observed none")
                else:
                    mismatches += _compare_ranges(f"study result of {pipeline}", ranges, summary)
        elif key == "outcomes":
            for run, pipelines in wanted.items():
                observed_run = (got or {}).get(run, {})
                mismatches += _compare_patterns(f"outcomes of {run}", pipelines, observed_run)
        elif key == "study_title":
            if not re.search(str(wanted), str(got or "")):
                mismatches.append(f"study_title: expected /{wanted}/, observed {got!r}")
        elif key == "jobs":
            for run, steps in wanted.items():
                observed_steps = (got or {}).get(run, {})
                if observed_steps != steps:
                    mismatches.append(f"jobs of {run}: expected {steps}, observed {observed_steps}")
        elif key == "batches":
            for step, groups in wanted.items():
                expected = sorted(sorted(group) for group in groups)
                observed_groups = sorted(sorted(group) for group in (got or {}).get(step, []))
                if expected != observed_groups:
                    mismatches.append(f"batches of {step}: expected {expected}, observed {observed_groups}")
        elif key == "succeeded_runs":
            if sorted(wanted) != sorted(got or []):
                mismatches.append(f"succeeded_runs: expected {sorted(wanted)}, observed {sorted(got or [])}")
        elif wanted != got:
            mismatches.append(f"{key}: expected {wanted!r}, observed {got!r}")
    mismatches += _compare_log_errors(expect.get("log_errors") or [], observed.get("log_errors") or [])
    return mismatches


def _compare_ranges(
    what: str, ranges: Mapping[str, Sequence[float]], summary: Mapping[str, Any]
) -> list[str]:
    lines = []
    for figure, (low, high) in ranges.items():
        value = summary.get(figure)
        if value is None or not low <= value <= high:
            lines.append(f"{what}: {figure} expected {low}..{high}, observed {value}")
    return lines


def _compare_patterns(key: str, wanted: Mapping[str, str], got: Mapping[str, str]) -> list[str]:
    lines = []
    for run in sorted(set(wanted) | set(got)):
        if run not in got:
            lines.append(f"{key}: expected {run} (/{wanted[run]}/), observed none")
        elif run not in wanted:
            lines.append(f"{key}: unexpected {run}: {first_line(got[run])}")
        elif not re.search(wanted[run], got[run], re.DOTALL):
            lines.append(f"{key} {run}: expected /{wanted[run]}/, observed {got[run]!r}")
    return lines


def _compare_log_errors(patterns: Sequence[str], lines: Sequence[str]) -> list[str]:
    """Every ERROR line or traceback must be expected, and every expected one must be there."""
    mismatches = [
        f"log: unexpected ERROR: {first_line(line)}"
        for line in lines
        if not any(re.search(p, line, re.DOTALL) for p in patterns)
    ]
    mismatches += [
        f"log: expected an ERROR matching /{p}/, observed none"
        for p in patterns
        if not any(re.search(p, line, re.DOTALL) for line in lines)
    ]
    return mismatches


def first_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:300]


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
