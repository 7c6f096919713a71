"""The assembly pipeline's step job specs, and the settings they are built from (PipelineConfig)."""

import dataclasses
import itertools
from pathlib import Path

import pytest

from prefect_utils.job_spec import JobSpec
from tests.workflows.pipeline_inputs import (
    ASSEMBLY,
    MD5_1,
    MD5_2,
    PAIRED_RUN,
    STEP_SCRIPTS,
    STEPS,
    URL_1,
    URL_2,
)
from workflows.ena.runs import RunInputs
from workflows.pipelines.engine import StepResources


class TestStepSpecs:
    def test_scripts_are_fixed_text_and_all_data_is_in_the_environment(self, tmp_path: Path) -> None:
        other = RunInputs(
            "SRR1972616",
            "PAIRED",
            ("file:///x/SRR1972616_1.fastq.gz", "file:///x/b_2.fq"),
            ("a" * 32, "b" * 32),
        )
        for step in STEPS:
            spec = ASSEMBLY.build_step_spec(step, PAIRED_RUN, tmp_path / "ERR9000001", ASSEMBLY.config())
            assert spec.script == STEP_SCRIPTS[step]
            assert (
                spec.script
                == ASSEMBLY.build_step_spec(step, other, tmp_path / "elsewhere", ASSEMBLY.config()).script
            )
            assert spec.script.startswith("#!/bin/bash\nset -euo pipefail\n")
            for value in ("ERR9000001", URL_1, MD5_1, str(tmp_path)):
                assert value not in spec.script
            assert spec.environment["RUN_ACCESSION"] == "ERR9000001"
            assert spec.environment["RUN_DIR"] == spec.workdir == str(tmp_path / "ERR9000001")
            assert all(isinstance(value, str) for value in spec.environment.values())

    def test_fetch_reads_gets_urls_md5s_and_destinations(self, tmp_path: Path) -> None:
        env = ASSEMBLY.build_step_spec("fetch_reads", PAIRED_RUN, tmp_path, ASSEMBLY.config()).environment
        assert env["FASTQ_COUNT"] == "2"
        assert (env["FASTQ_URL_1"], env["FASTQ_MD5_1"]) == (URL_1, MD5_1)
        assert (env["FASTQ_URL_2"], env["FASTQ_MD5_2"]) == (URL_2, MD5_2)
        assert env["RAW_READS_1"] == str(tmp_path / "raw" / "ERR9000001_1.fastq.gz")
        assert env["REQUIRED_MARKER"] == ""
        assert env["STEP_MARKER"] == str(tmp_path / "fetch_reads.done")

    def test_each_step_requires_the_previous_ones_marker(self, tmp_path: Path) -> None:
        for previous, step in itertools.pairwise(STEPS):
            env = ASSEMBLY.build_step_spec(step, PAIRED_RUN, tmp_path, ASSEMBLY.config()).environment
            assert env["REQUIRED_MARKER"] == str(tmp_path / f"{previous}.done")

    def test_resources_and_assembler_settings_come_from_the_config(self, tmp_path: Path) -> None:
        config = ASSEMBLY.config(
            {
                "assembly": {"cpus": 8, "memory_mb": 64000, "time_limit_minutes": 4320},
                "min_contig_len": 500,
                "partition": "bigmem",
            }
        )
        spec = ASSEMBLY.build_step_spec("assembly", PAIRED_RUN, tmp_path, config)
        assert isinstance(spec, JobSpec)
        assert (spec.cpus, spec.memory_mb, spec.time_limit_minutes, spec.partition) == (
            8,
            64000,
            4320,
            "bigmem",
        )
        assert spec.environment["THREADS"] == "8"
        assert spec.environment["MIN_CONTIG_LEN"] == "500"
        assert int(spec.environment["MEGAHIT_MEMORY_BYTES"]) < 64000 * 1024 * 1024
        assert spec.name == "emgapi-assembly-ERR9000001"
        assert spec.output_path == str(tmp_path / "assembly.log")
        qc = ASSEMBLY.build_step_spec("read_qc", PAIRED_RUN, tmp_path, config)
        default_qc = ASSEMBLY.config().resources("read_qc")
        assert (qc.cpus, qc.memory_mb) == (default_qc.cpus, default_qc.memory_mb)

    def test_single_end_runs_have_one_mate(self, tmp_path: Path) -> None:
        single = RunInputs("ERR1", "SINGLE", (URL_1,), (MD5_1,))
        env = ASSEMBLY.build_step_spec("read_qc", single, tmp_path, ASSEMBLY.config()).environment
        assert "RAW_READS_2" not in env and "QC_READS_2" not in env
        assert env["LIBRARY_LAYOUT"] == "SINGLE"

    def test_the_spec_is_the_same_every_time(self, tmp_path: Path) -> None:
        first = ASSEMBLY.build_step_spec("assembly", PAIRED_RUN, tmp_path, ASSEMBLY.config())
        assert first == ASSEMBLY.build_step_spec("assembly", PAIRED_RUN, tmp_path, ASSEMBLY.config())

    @pytest.mark.parametrize("workdir", ["relative/dir", "/data/with space", "/data/with,comma"])
    def test_unusable_workdirs(self, workdir: str) -> None:
        with pytest.raises(ValueError, match="workdir"):
            ASSEMBLY.build_step_spec("assembly", PAIRED_RUN, Path(workdir), ASSEMBLY.config())

    def test_unknown_step(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown pipeline step"):
            ASSEMBLY.build_step_spec("binning", PAIRED_RUN, tmp_path, ASSEMBLY.config())


class TestConfig:
    def test_partial_overrides_keep_the_other_defaults(self) -> None:
        config = ASSEMBLY.config({"assembly": {"memory_mb": 4096}})
        default = ASSEMBLY.config()
        assert config.resources("assembly") == dataclasses.replace(
            default.resources("assembly"), memory_mb=4096
        )
        assert config.resources("read_qc") == default.resources("read_qc")

    @pytest.mark.parametrize(
        "mapping",
        [
            {"asembly": {"cpus": 2}},
            {"assembly": {"threads": 2}},
            {"assembly": 4},
            {"assembly": {"cpus": 0}},
            {"min_contig_len": 0},
        ],
    )
    def test_mistakes_in_settings_are_errors(self, mapping: dict) -> None:
        with pytest.raises(ValueError):
            ASSEMBLY.config(mapping)

    def test_defaults_are_small(self) -> None:
        for step in STEPS:
            resources = ASSEMBLY.config().resources(step)
            assert isinstance(resources, StepResources)
            assert resources.cpus <= 2 and resources.memory_mb <= 2048
