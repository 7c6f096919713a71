"""The test-cases files and their judge, without a stack: every deployment has cases, and a broken expectation
or an unexpected ERROR line is reported as such."""

import subprocess
from pathlib import Path

import pytest

from workflows.operations import case_runner
from workflows.operations import cases as pipeline_cases
from workflows.pipelines.registry import FLOWS

ROOT = Path(__file__).resolve().parents[2]

OBSERVED = {
    "status": "completed",
    "succeeded_runs": ["ERR9000005"],
    "failed_runs": {"ERR9000006": "Slurm job 12 (emgapi-fetch_reads-ERR9000006, attempt 1) ended FAILED with exit "
                    "code 1. Last lines of its log:\nERR9000006: md5 mismatch for http://x/ERR9000006_1.fastq.gz"},
    "rejected_runs": {},
    "analyses": 1,
    "figures": {"assembly": {"ERR9000005": {"contigs": 2, "n50": 19995, "total_length": 29973}}},
    "outcomes": {"ERR9000008": {"assembly": "completed", "assembly_analysis": "skipped: "
                                "assembly_stats.total_length 11,978 < 20,000"}},
    "jobs": {"ERR9000006": {"fetch_reads": ["FAILED"]}},
    "log_errors": [],
}  # fmt: skip


def expectation(**changes) -> dict:
    expect = {
        "status": "completed",
        "succeeded_runs": ["ERR9000005"],
        "failed_runs": {"ERR9000006": "exit code 1.*md5 mismatch"},
        "rejected_runs": {},
        "analyses": 1,
        "figures": {"assembly": {"contigs": [1, 10], "n50": [5000, 25000]}},
        "outcomes": {"ERR9000008": {"assembly": "completed", "assembly_analysis": "skipped: .* < 20,000"}},
        "jobs": {"ERR9000006": {"fetch_reads": ["FAILED"]}},
        "log_errors": [],
    }
    expect.update(changes)
    return expect


def test_every_served_deployment_has_test_cases() -> None:
    by_deployment = {case.deployment for case in pipeline_cases.all_cases()}
    missing = set(FLOWS) - by_deployment
    assert not missing, f"deployments without workflows/pipelines/<name>/test-cases.yaml: {sorted(missing)}"
    assert set(case_runner.DRIVERS) == set(FLOWS)


def test_what_was_observed_as_expected_passes() -> None:
    assert pipeline_cases.compare(expectation(), OBSERVED) == []


@pytest.mark.parametrize(
    ("changes", "mismatch"),
    [
        ({"status": "failed"}, "status: expected 'failed', observed 'completed'"),
        ({"succeeded_runs": ["ERR9000005", "ERR9000006"]}, "succeeded_runs: expected"),
        ({"failed_runs": {"ERR9000006": "exit code 2"}}, "failed_runs ERR9000006: expected /exit code 2/"),
        ({"failed_runs": {}}, "failed_runs: unexpected ERR9000006: Slurm job 12"),
        ({"rejected_runs": {"ERR9000004": "no FASTQ"}}, "rejected_runs: expected ERR9000004"),
        ({"analyses": 2}, "analyses: expected 2, observed 1"),
        (
            {"figures": {"assembly": {"n50": [20000, 30000]}}},
            "assembly of ERR9000005: n50 expected 20000..30000, observed 19995",
        ),
        (
            {"figures": {"amplicon": {"asvs": [1, 10]}}},
            "figures: expected amplicon figures, observed no amplicon analysis",
        ),
        (
            {"outcomes": {"ERR9000008": {"assembly": "completed", "assembly_analysis": "completed"}}},
            "outcomes of ERR9000008 assembly_analysis: expected /completed/",
        ),
        ({"jobs": {"ERR9000006": {"fetch_reads": ["FAILED", "COMPLETED"]}}}, "jobs of ERR9000006: expected"),
        ({"log_errors": ["Traceback"]}, "log: expected an ERROR matching /Traceback/, observed none"),
    ],
)
def test_a_broken_expectation_is_reported(changes: dict, mismatch: str) -> None:
    mismatches = pipeline_cases.compare(expectation(**changes), OBSERVED)
    assert any(line.startswith(mismatch) for line in mismatches), mismatches


def test_an_error_line_nobody_expected_fails_a_case_whose_status_is_right() -> None:
    observed = {
        **OBSERVED,
        "log_errors": ["prefect.flow_runs: Traceback (most recent call last):\n  File ..."],
    }
    assert pipeline_cases.compare(expectation(), observed) == [
        "log: unexpected ERROR: prefect.flow_runs: Traceback (most recent call last):"
    ]
    assert pipeline_cases.compare(expectation(log_errors=["Traceback"]), observed) == []


def test_the_table_shows_expected_against_observed() -> None:
    case = pipeline_cases.all_cases()[0]
    outcome = pipeline_cases.Outcome(
        case, "failed", ["status: expected 'completed', observed 'failed'"], seconds=12.4
    )
    table = pipeline_cases.format_table([outcome])
    assert case.label in table and "failed" in table and "observed 'failed'" in table


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deployment: nope\ncases: []\n", "deployment: 'nope' is not one this service serves"),
        (
            'deployment: "Sync a study with ENA/study_sync_deployment"\n'
            "cases: [{name: a, parameters: {}, expect: {flow_run: COMPLETED, state: x}}]\n",
            "case 'a': expect: unknown field(s) ['state']",
        ),
        (
            'deployment: "Sync a study with ENA/study_sync_deployment"\n'
            "cases: [{name: a, parameters: {}, expect: {log_errors: ['(']}}]\n",
            "case 'a': expect: '(' is not a regular expression",
        ),
        (
            'deployment: "Sync a study with ENA/study_sync_deployment"\n'
            "cases: [{name: A B, parameters: {}, expect: {flow_run: COMPLETED}}]\n",
            "case #1: name: lower-case words",
        ),
        (
            'deployment: "Assemble and analyse a study/assembly_analysis_request_deployment"\n'
            "cases: [{name: a, parameters: {}, expect: {figures: {assembly: {n50: [300, 100]}}}}]\n",
            "case 'a': expect: figures: a mapping of pipeline: {figure: [low, high]} (every analysis of that "
            "pipeline), got {'assembly': {'n50': [300, 100]}}",
        ),
        (
            'deployment: "Assemble and analyse a study/assembly_analysis_request_deployment"\n'
            "cases: [{name: a, parameters: {}, expect: {jobs: {ERR1: {assembly: TIMEOUT}}}}]\n",
            "case 'a': expect: jobs: a mapping of run: {step: [state of each attempt]}",
        ),
    ],
)
def test_a_mistake_in_a_cases_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "test-cases.yaml"
    path.write_text(text)
    with pytest.raises(pipeline_cases.CaseFileError) as caught:
        pipeline_cases.load_cases(path)
    assert message in str(caught.value)


def test_select_cases_by_pipeline_and_name() -> None:
    cases = pipeline_cases.all_cases()
    assert {c.name for c in pipeline_cases.select_cases(cases, "study_sync")} == {
        "runs-recorded-with-qa-verdicts",
        "study-unknown-to-ena",
    }
    assert [c.name for c in pipeline_cases.select_cases(cases, None, ["two-paired-runs"])] == [
        "two-paired-runs"
    ]
    with pytest.raises(ValueError, match="no case named"):
        pipeline_cases.select_cases(cases, "assembly", ["runs-recorded-with-qa-verdicts"])


def test_the_demo_fault_injector_stalls_one_runs_first_assembly_only(tmp_path: Path) -> None:
    shim = ROOT / "demo" / "bin" / "megahit"
    env = {"PATH": f"{shim.parent}:/usr/bin:/bin", "RUN_DIR": str(tmp_path)}
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(
            [str(shim), "--version"], env={**env, "RUN_ACCESSION": "ERR9000007"}, timeout=2, check=False
        )
    assert (tmp_path / ".demo-stalled-once").exists()
    for accession in ("ERR9000007", "ERR9000001"):  # the second attempt, and any other run: the real megahit
        result = subprocess.run(
            [str(shim), "--version"], env={**env, "RUN_ACCESSION": accession}, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        assert "MEGAHIT" in result.stdout
