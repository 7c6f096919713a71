"""spec.yaml: the shipped one is valid and is what builds the jobs; a broken one fails at load, naming where."""

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.workflows.pipeline_inputs import ASSEMBLY, STEP_SCRIPTS, STEPS
from workflows.ena.runs import RunInputs
from workflows.pipelines.analysis.pipeline import pipeline_config, step_policy
from workflows.pipelines.spec import PipelineSpecError, load_spec, parse_spec

ASSEMBLY_SPEC = ASSEMBLY.folder / "spec.yaml"


def shipped() -> dict:
    return yaml.safe_load(ASSEMBLY_SPEC.read_text())


def test_the_shipped_spec_is_the_one_the_jobs_are_built_from(tmp_path: Path) -> None:
    spec = load_spec(ASSEMBLY_SPEC)
    assert spec.step_names == STEPS == ("fetch_reads", "read_qc", "assembly", "assembly_stats")
    run = RunInputs("ERR1", "PAIRED", ("file:///a_1.fastq.gz", "file:///a_2.fastq.gz"), ("a" * 32, "b" * 32))
    for step in spec.steps:
        job = ASSEMBLY.build_step_spec(step.name, run, tmp_path, ASSEMBLY.config())
        assert job.script.endswith(step.script + '\ndate -u +%Y-%m-%dT%H:%M:%SZ > "$STEP_MARKER"\n')
        assert (job.cpus, job.memory_mb, job.time_limit_minutes) == (
            step.resources.cpus,
            step.resources.memory_mb,
            step.resources.time_limit_minutes,
        )
        # Every file a step reads or writes reaches its script by name.
        for name in step.inputs + step.outputs:
            if name != "ena_fastq":
                variable = name.upper() + ("_1" if spec.files[name].per_mate else "")
                assert job.environment[variable].startswith(str(tmp_path)), (step.name, variable)


@pytest.mark.parametrize("step", STEPS)
def test_every_step_script_is_valid_bash(step: str, tmp_path: Path) -> None:
    script = tmp_path / f"{step}.sh"
    script.write_text(STEP_SCRIPTS[step])
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_escalation_policy_comes_from_the_spec(settings) -> None:
    settings.SLURM_MAX_MEMORY_MB = 9000
    policy = step_policy(ASSEMBLY, "assembly")
    assert (policy.max_escalations, policy.factor, policy.max_memory_mb) == (1, 2.0, 9000)
    assert policy.memory_environment == {"MEGAHIT_MEMORY_BYTES": 0.9}
    assert step_policy(ASSEMBLY, "read_qc").memory_environment == {}


def _broken(change) -> dict:
    document = copy.deepcopy(shipped())
    change(document)
    return document


def _step(document: dict, name: str) -> dict:
    return next(step for step in document["steps"] if step["name"] == name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: _step(d, "assembly")["resources"].update(cpus="two"), "step 'assembly': resources.cpus: an integer"),
        (lambda d: _step(d, "assembly")["resources"].update(gpus=1), "step 'assembly': resources: unknown field(s) ['gpus']"),
        (lambda d: _step(d, "read_qc").update(threads=4), "step 'read_qc': unknown field(s) ['threads']"),
        (lambda d: _step(d, "read_qc").pop("script"), "step 'read_qc': script: missing"),
        (lambda d: _step(d, "read_qc").update(after="assembly"), "step 'read_qc': after: 'assembly' is not an earlier step"),
        (lambda d: _step(d, "read_qc").update(inputs=["contigs_fa"]), "step 'read_qc': inputs: 'contigs_fa' is not the output of an earlier step"),
        (lambda d: _step(d, "assembly").update(outputs=["megahit_dir", "raw_reads"]), "step 'assembly': outputs: 'raw_reads' is already written"),
        (lambda d: _step(d, "assembly").update(parameters=["min_contig_length"]), "step 'assembly': parameters: 'min_contig_length' is not a pipeline parameter"),
        (lambda d: _step(d, "assembly")["escalation"].update(factor=0.5), "step 'assembly': escalation.factor"),
        (lambda d: _step(d, "assembly").update(memory_environment={"MEGAHIT_MEMORY_BYTES": 1.5}), "step 'assembly': memory_environment"),
        (lambda d: d["files"].update(contigs_fa="../elsewhere.fa"), "files.contigs_fa: a relative path below the run's directory"),
        (lambda d: d["files"].update(raw_reads="raw/{sample}.fq"), "files.raw_reads: unknown placeholder(s) ['sample']"),
        (lambda d: d["steps"].append(copy.deepcopy(d["steps"][0])), "step 'fetch_reads': a second step of that name"),
        (lambda d: d.update(stages=[]), "the top level: unknown field(s) ['stages']"),
    ],
)  # fmt: skip
def test_a_mistake_in_the_spec_is_named_at_load(change, message: str) -> None:
    with pytest.raises(PipelineSpecError) as caught:
        parse_spec(_broken(change), source="spec.yaml")
    assert str(caught.value).startswith("spec.yaml: ")
    assert message in str(caught.value)


def test_a_spec_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("steps: [\n")
    with pytest.raises(PipelineSpecError, match=f"{path}: not YAML"):
        load_spec(path)


def test_a_requests_resources_override_the_sites_which_override_the_spec(settings) -> None:
    settings.PIPELINE_CONFIG = {"assembly": {"assembly": {"memory_mb": 4000}}}
    assembly = pipeline_config(ASSEMBLY, {"assembly": {"time_limit_minutes": 1}}).resources("assembly")
    assert (assembly.cpus, assembly.memory_mb, assembly.time_limit_minutes) == (2, 4000, 1)
    assert pipeline_config(ASSEMBLY, None).resources("assembly").time_limit_minutes == 120
    # A request names steps only: the partition and the jobs' PATH are the site's.
    mistakes: list[tuple[dict[str, Any], str]] = [
        ({"asembly": {"cpus": 1}}, r"not \['asembly'\]"),
        ({"partition": "bigmem"}, r"not \['partition'\]"),
        ({"assembly": {"cpus": "2"}}, "must be integers"),
        ({"assembly": {"gpus": 1}}, r"unknown resource\(s\) \['gpus'\]"),
    ]
    for mistake, message in mistakes:
        with pytest.raises(ValueError, match=message):
            pipeline_config(ASSEMBLY, mistake)


def test_the_jobs_path_is_set_only_where_the_site_sets_it(settings, tmp_path: Path) -> None:
    run = RunInputs("ERR1", "SINGLE", ("file:///a.fastq.gz",), ("a" * 32,))
    settings.PIPELINE_JOB_PATH = ""
    assert (
        "PATH"
        not in ASSEMBLY.build_step_spec("assembly", run, tmp_path, pipeline_config(ASSEMBLY)).environment
    )
    settings.PIPELINE_JOB_PATH = "/opt/conda/envs/megahit/bin:/usr/bin:/bin"
    job = ASSEMBLY.build_step_spec("assembly", run, tmp_path, pipeline_config(ASSEMBLY))
    assert job.environment["PATH"] == "/opt/conda/envs/megahit/bin:/usr/bin:/bin"
