"""JobSpec's validation, canonical form and paths (prefect_utils/job_spec.py)."""

import json
from pathlib import Path

import pytest

from prefect_utils.job_spec import JobSpec, expand_output_pattern
from tests.prefect_utils.captures import make_spec


def test_expand_output_pattern() -> None:
    assert expand_output_pattern("/w/slurm-%j.out", "20", None) == "/w/slurm-20.out"
    assert expand_output_pattern("/w/%x-%A_%a.%%.out", "20_3", "name") == "/w/name-20_3.%.out"
    assert expand_output_pattern("/w/%x-%u.out", "20", None) == "/w/%x-%u.out"


def test_canonical_is_json_sorted_and_round_trips(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    canonical = spec.canonical()
    assert list(canonical) == sorted(canonical)
    assert list(canonical["environment"]) == ["A", "B"]
    assert json.loads(json.dumps(canonical)) == canonical
    assert JobSpec.from_canonical(json.loads(json.dumps(canonical))) == spec
    reordered = make_spec(tmp_path, environment={"A": "1,2", "B": "2"})
    assert json.dumps(reordered.canonical()) == json.dumps(canonical)
    assert make_spec(tmp_path, cpus=2).canonical() != canonical


def test_from_canonical_refuses_unknown_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        JobSpec.from_canonical({**make_spec(tmp_path).canonical(), "colour": "blue"})


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": " "},
        {"script": ""},
        {"cpus": 0},
        {"memory_mb": -1},
        {"time_limit_minutes": 1.5},
        {"cpus": True},
        {"workdir": "relative/dir"},
        {"output_path": "out.txt"},
        {"environment": {"1BAD": "x"}},
        {"environment": {"SLURM_JOB_ID": "1"}},
        {"environment": {"A": 1}},
    ],
)
def test_invalid_specs_are_refused(tmp_path: Path, overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_spec(tmp_path, **overrides)


def test_batch_script_gets_an_interpreter_line(tmp_path: Path) -> None:
    assert make_spec(tmp_path).batch_script == "#!/bin/bash\necho hello\n"
    assert make_spec(tmp_path, script="#!/bin/sh\ntrue\n").batch_script == "#!/bin/sh\ntrue\n"


def test_stdout_path(tmp_path: Path) -> None:
    assert make_spec(tmp_path).stdout_path("12") == str(tmp_path / "slurm-12.out")
    assert make_spec(tmp_path, output_path="/logs/%j.log").stdout_path("12") == "/logs/12.log"
