"""Pipeline step specs, the QA gate, seqkit parsing, and the four step scripts run for real with bash."""

import dataclasses
import hashlib
import itertools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from prefect_utils.job_spec import JobSpec
from workflows.ena.client import EnaReadRun
from workflows.ena.runs import RunInputs, UnusableRun, run_inputs_from_ena
from workflows.pipelines.assembly.steps import (
    STEP_SCRIPTS,
    STEPS,
    AssemblyStats,
    PipelineConfig,
    StepResources,
    build_step_spec,
    check_run_usable,
    parse_seqkit_stats,
    read_assembly_stats,
    run_layout,
)

MD5_1 = "32bcc3950615f3640a4e2c438faf729a"
MD5_2 = "c5f1e7a2d79558422efacb66d289c4cd"
URL_1 = "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR900/001/ERR9000001/ERR9000001_1.fastq.gz"
URL_2 = "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR900/001/ERR9000001/ERR9000001_2.fastq.gz"
PAIRED_RUN = RunInputs("ERR9000001", "PAIRED", (URL_1, URL_2), (MD5_1, MD5_2))

# `seqkit stats -a -T mh/final.contigs.fa` (seqkit v2.3.0) on MEGAHIT's assembly of the demo reads.
SEQKIT_OUTPUT = (
    "file\tformat\ttype\tnum_seqs\tsum_len\tmin_len\tavg_len\tmax_len\tQ1\tQ2\tQ3\tsum_gap\tN50\tQ20(%)\tQ30(%)\tGC(%)\n"
    "mh/final.contigs.fa\tFASTA\tDNA\t2\t29973\t9978\t14986.5\t19995\t9978.0\t14986.5\t19995.0\t0\t19995\t0.00\t0.00\t49.70\n"
)
# The same command on an empty FASTA (an assembly that produced no contig): format and type are blank.
SEQKIT_EMPTY_OUTPUT = (
    "file\tformat\ttype\tnum_seqs\tsum_len\tmin_len\tavg_len\tmax_len\tQ1\tQ2\tQ3\tsum_gap\tN50\tQ20(%)\tQ30(%)\tGC(%)\n"
    "e.fa\t\t\t0\t0\t0\t0.0\t0\t0.0\t0.0\t0.0\t0\t0\t0.00\t0.00\t0.00\n"
)


def ena_run(**overrides: Any) -> EnaReadRun:
    fields: dict[str, Any] = {
        "run_accession": "ERR9000001",
        "sample_accession": "SAMEA900000001",
        "secondary_sample_accession": "ERS9000001",
        "instrument_model": "Illumina NovaSeq 6000",
        "instrument_platform": "ILLUMINA",
        "library_strategy": "WGS",
        "library_source": "METAGENOMIC",
        "library_layout": "PAIRED",
        "fastq_ftp": tuple(url.removeprefix("https://") for url in (URL_1, URL_2)),
        "fastq_md5": (MD5_1, MD5_2),
        "fastq_bytes": (139228, 139239),
        "read_count": 4000,
        "base_count": 800000,
    }
    fields.update(overrides)
    return EnaReadRun(**fields)


class TestStepSpecs:
    def test_scripts_are_fixed_text_and_all_data_is_in_the_environment(self, tmp_path: Path) -> None:
        other = RunInputs(
            "SRR1972616",
            "PAIRED",
            ("file:///x/SRR1972616_1.fastq.gz", "file:///x/b_2.fq"),
            ("a" * 32, "b" * 32),
        )
        for step in STEPS:
            spec = build_step_spec(step, PAIRED_RUN, tmp_path / "ERR9000001", PipelineConfig())
            assert spec.script == STEP_SCRIPTS[step]
            assert (
                spec.script == build_step_spec(step, other, tmp_path / "elsewhere", PipelineConfig()).script
            )
            assert spec.script.startswith("#!/bin/bash\nset -euo pipefail\n")
            for value in ("ERR9000001", URL_1, MD5_1, str(tmp_path)):
                assert value not in spec.script
            assert spec.environment["RUN_ACCESSION"] == "ERR9000001"
            assert spec.environment["RUN_DIR"] == spec.workdir == str(tmp_path / "ERR9000001")
            assert all(isinstance(value, str) for value in spec.environment.values())

    def test_fetch_reads_gets_urls_md5s_and_destinations(self, tmp_path: Path) -> None:
        env = build_step_spec("fetch_reads", PAIRED_RUN, tmp_path, PipelineConfig()).environment
        assert env["FASTQ_COUNT"] == "2"
        assert (env["FASTQ_URL_1"], env["FASTQ_MD5_1"]) == (URL_1, MD5_1)
        assert (env["FASTQ_URL_2"], env["FASTQ_MD5_2"]) == (URL_2, MD5_2)
        assert env["RAW_READS_1"] == str(tmp_path / "raw" / "ERR9000001_1.fastq.gz")
        assert env["REQUIRED_MARKER"] == ""
        assert env["STEP_MARKER"] == str(tmp_path / "fetch_reads.done")

    def test_each_step_requires_the_previous_ones_marker(self, tmp_path: Path) -> None:
        for previous, step in itertools.pairwise(STEPS):
            env = build_step_spec(step, PAIRED_RUN, tmp_path, PipelineConfig()).environment
            assert env["REQUIRED_MARKER"] == str(tmp_path / f"{previous}.done")

    def test_resources_and_assembler_settings_come_from_the_config(self, tmp_path: Path) -> None:
        config = PipelineConfig.from_mapping(
            {
                "assembly": {"cpus": 8, "memory_mb": 64000, "time_limit_minutes": 4320},
                "min_contig_len": 500,
                "partition": "bigmem",
            }
        )
        spec = build_step_spec("assembly", PAIRED_RUN, tmp_path, config)
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
        qc = build_step_spec("read_qc", PAIRED_RUN, tmp_path, config)
        default_qc = PipelineConfig().resources("read_qc")
        assert (qc.cpus, qc.memory_mb) == (default_qc.cpus, default_qc.memory_mb)

    def test_single_end_runs_have_one_mate(self, tmp_path: Path) -> None:
        single = RunInputs("ERR1", "SINGLE", (URL_1,), (MD5_1,))
        env = build_step_spec("read_qc", single, tmp_path, PipelineConfig()).environment
        assert "RAW_READS_2" not in env and "QC_READS_2" not in env
        assert env["LIBRARY_LAYOUT"] == "SINGLE"

    def test_the_spec_is_the_same_every_time(self, tmp_path: Path) -> None:
        first = build_step_spec("assembly", PAIRED_RUN, tmp_path, PipelineConfig())
        assert first == build_step_spec("assembly", PAIRED_RUN, tmp_path, PipelineConfig())

    @pytest.mark.parametrize("workdir", ["relative/dir", "/data/with space", "/data/with,comma"])
    def test_unusable_workdirs(self, workdir: str) -> None:
        with pytest.raises(ValueError, match="workdir"):
            build_step_spec("assembly", PAIRED_RUN, Path(workdir), PipelineConfig())

    def test_unknown_step(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown pipeline step"):
            build_step_spec("binning", PAIRED_RUN, tmp_path, PipelineConfig())


class TestConfig:
    def test_partial_overrides_keep_the_other_defaults(self) -> None:
        config = PipelineConfig.from_mapping({"assembly": {"memory_mb": 4096}})
        default = PipelineConfig()
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
            PipelineConfig.from_mapping(mapping)

    def test_defaults_are_small(self) -> None:
        for step in STEPS:
            resources = PipelineConfig().resources(step)
            assert isinstance(resources, StepResources)
            assert resources.cpus <= 2 and resources.memory_mb <= 2048


class TestRunInputs:
    @pytest.mark.parametrize(
        ("layout", "urls", "md5s"),
        [
            ("PAIRED", (URL_1,), (MD5_1,)),
            ("SINGLE", (URL_1, URL_2), (MD5_1, MD5_2)),
            ("PAIRED", (URL_1, URL_2), (MD5_1,)),
            ("PAIRED", (URL_1, URL_2), (MD5_1, "not-an-md5")),
            ("INTERLEAVED", (URL_1,), (MD5_1,)),
        ],
    )
    def test_inconsistent_inputs_are_refused(self, layout: str, urls: tuple, md5s: tuple) -> None:
        with pytest.raises(ValueError):
            RunInputs("ERR1", layout, urls, md5s)


class TestQaGate:
    def test_a_good_paired_run(self) -> None:
        run = ena_run()
        assert check_run_usable(run) is None
        assert run_inputs_from_ena(run) == PAIRED_RUN

    def test_a_good_single_run(self) -> None:
        run = ena_run(
            library_layout="SINGLE", fastq_ftp=("ftp.sra.ebi.ac.uk/x/ERR1.fastq.gz",), fastq_md5=(MD5_1,)
        )
        assert check_run_usable(run) is None
        assert run_inputs_from_ena(run).fastq_urls == ("https://ftp.sra.ebi.ac.uk/x/ERR1.fastq.gz",)

    def test_paired_run_with_an_extra_unpaired_file_uses_the_mates(self) -> None:
        # ENA's order puts the unpaired file first (DRR057058: DRR057058.fastq.gz;..._1;..._2).
        run = ena_run(
            run_accession="DRR057058",
            fastq_ftp=(
                "ftp.sra.ebi.ac.uk/vol1/fastq/DRR057/DRR057058/DRR057058.fastq.gz",
                "ftp.sra.ebi.ac.uk/vol1/fastq/DRR057/DRR057058/DRR057058_2.fastq.gz",
                "ftp.sra.ebi.ac.uk/vol1/fastq/DRR057/DRR057058/DRR057058_1.fastq.gz",
            ),
            fastq_md5=("0" * 32, MD5_2, MD5_1),
        )
        assert check_run_usable(run) is None
        inputs = run_inputs_from_ena(run)
        assert [url.rsplit("/", 1)[1] for url in inputs.fastq_urls] == [
            "DRR057058_1.fastq.gz",
            "DRR057058_2.fastq.gz",
        ]
        assert inputs.fastq_md5 == (MD5_1, MD5_2)

    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            ({"fastq_ftp": (), "fastq_md5": ()}, "ERR9000001: ENA lists no FASTQ files for this run"),
            ({"fastq_md5": (MD5_1,)}, "ERR9000001: ENA lists 2 FASTQ file(s) but 1 md5 checksum(s)"),
            (
                {"fastq_md5": (MD5_1, "xyz")},
                "ERR9000001: ENA's md5 checksum(s) ['xyz'] are not 32-character hex digests",
            ),
            (
                {"library_strategy": "AMPLICON"},
                "ERR9000001: library strategy 'AMPLICON' is not assembled (supported: WGA, WGS)",
            ),
            (
                {"library_strategy": ""},
                "ERR9000001: library strategy '(empty)' is not assembled (supported: WGA, WGS)",
            ),
            (
                {"library_source": "TRANSCRIPTOMIC"},
                "ERR9000001: library source 'TRANSCRIPTOMIC' is not assembled (supported: GENOMIC, METAGENOMIC)",
            ),
            (
                {"instrument_platform": "OXFORD_NANOPORE"},
                "ERR9000001: OXFORD_NANOPORE long reads cannot be assembled by MEGAHIT",
            ),
            (
                {"fastq_ftp": ("x/ERR9000001_1.fastq.gz",), "fastq_md5": (MD5_1,)},
                "ERR9000001: a PAIRED run needs exactly one _1 and one _2 FASTQ file, ENA lists 1: ERR9000001_1.fastq.gz",
            ),
            (
                {"library_layout": "SINGLE"},
                "ERR9000001: a SINGLE run should have one FASTQ file, ENA lists 2: "
                "ERR9000001_1.fastq.gz, ERR9000001_2.fastq.gz",
            ),
            (
                {"library_layout": ""},
                "ERR9000001: unsupported library layout '(empty)' (expected PAIRED or SINGLE)",
            ),
        ],
    )
    def test_reasons(self, overrides: dict, reason: str) -> None:
        run = ena_run(**overrides)
        assert check_run_usable(run) == reason
        with pytest.raises(UnusableRun, match=r"^ERR9000001: "):
            run_inputs_from_ena(run, check_run=check_run_usable)


class TestSeqkitStats:
    def test_real_seqkit_output(self) -> None:
        assert parse_seqkit_stats(SEQKIT_OUTPUT) == AssemblyStats(
            contigs=2, total_length=29973, n50=19995, largest=19995, min_len=9978, avg_len=14986.5
        )

    def test_an_empty_assembly(self) -> None:
        assert parse_seqkit_stats(SEQKIT_EMPTY_OUTPUT) == AssemblyStats(0, 0, 0, 0, 0, 0.0)

    def test_read_from_a_file(self, tmp_path: Path) -> None:
        path = tmp_path / "contigs.stats.tsv"
        path.write_text(SEQKIT_OUTPUT)
        assert read_assembly_stats(path).n50 == 19995

    @pytest.mark.parametrize(
        "text",
        [
            "",
            SEQKIT_OUTPUT.splitlines()[0] + "\n",
            SEQKIT_OUTPUT + SEQKIT_OUTPUT.splitlines()[1] + "\n",
            "file\tnum_seqs\nx\t2\n",  # seqkit stats without -a has no N50
            SEQKIT_OUTPUT.replace("\t29973\t", "\t29,973\t"),
        ],
    )
    def test_unexpected_output_is_an_error(self, text: str) -> None:
        with pytest.raises(ValueError):
            parse_seqkit_stats(text)


def run_locally(spec: JobSpec) -> subprocess.CompletedProcess[str]:
    """Run a step the way its Slurm job would: the script text under bash, in workdir, with its environment."""
    workdir = Path(spec.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / f"{spec.name}.sh"
    script.write_text(spec.script)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), **spec.environment}
    result = subprocess.run(
        ["bash", str(script)], cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=600
    )
    assert spec.output_path is not None  # every step names its log
    Path(spec.output_path).write_text(result.stdout + result.stderr)
    return result


def run_all_steps(run: RunInputs, workdir: Path, config: PipelineConfig) -> None:
    for step in STEPS:
        result = run_locally(build_step_spec(step, run, workdir, config))
        assert result.returncode == 0, f"{step} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("curl", "md5sum", "fastp", "megahit", "seqkit")),
    reason="needs curl, md5sum, fastp, megahit and seqkit on PATH",
)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_reads(make_demo_reads, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_demo_reads.make_reads(tmp_path_factory.mktemp("reads"), run_accession="ERR9000001")


def file_run(reads: list[Path], layout: str = "PAIRED") -> RunInputs:
    chosen = reads if layout == "PAIRED" else reads[:1]
    return RunInputs(
        "ERR9000001", layout, tuple(p.as_uri() for p in chosen), tuple(md5_of(p) for p in chosen)
    )


@tools
class TestStepScriptsForReal:
    def test_paired_run_end_to_end(self, demo_reads: list[Path], tmp_path: Path) -> None:
        run = file_run(demo_reads)
        workdir = tmp_path / "ERR9000001"
        layout = run_layout(workdir, run)
        # What an attempt killed mid-assembly leaves behind; MEGAHIT would refuse to start over it.
        layout.megahit_dir.mkdir(parents=True)
        (layout.megahit_dir / "checkpoints.txt").write_text("partial\n")

        run_all_steps(run, workdir, PipelineConfig())

        for step in STEPS:
            assert layout.marker(step).is_file()
        assert [md5_of(p) for p in layout.raw_reads] == list(run.fastq_md5)
        assert all(path.is_file() for name in ("fastp_json", "fastp_html") for path in layout.file(name))
        assert all(p.stat().st_size > 0 for p in layout.qc_reads)
        stats = read_assembly_stats(layout.stats_tsv)
        assert stats.contigs > 0 and stats.total_length > 0 and stats.n50 > 0
        # Two random genomes of 20 kb and 10 kb: a working assembly is a few long contigs.
        assert stats.largest > 5000

    def test_single_end_run(self, demo_reads: list[Path], tmp_path: Path) -> None:
        run = file_run(demo_reads, layout="SINGLE")
        run_all_steps(run, tmp_path, PipelineConfig())
        assert read_assembly_stats(run_layout(tmp_path, run).stats_tsv).contigs > 0

    def test_md5_mismatch_fails_clearly_and_keeps_nothing(
        self, demo_reads: list[Path], tmp_path: Path
    ) -> None:
        good = file_run(demo_reads)
        run = dataclasses.replace(good, fastq_md5=(good.fastq_md5[0], "0" * 32))
        spec = build_step_spec("fetch_reads", run, tmp_path, PipelineConfig())

        result = run_locally(spec)

        assert result.returncode != 0
        assert f"ERR9000001: md5 mismatch for {run.fastq_urls[1]}: ENA lists {'0' * 32}" in result.stderr
        layout = run_layout(tmp_path, run)
        assert not layout.marker("fetch_reads").exists()
        assert not layout.raw_reads[1].exists()
        assert not list(layout.raw_reads[1].parent.glob("*.part"))

    def test_a_failed_download_fails_the_step(self, tmp_path: Path) -> None:
        run = RunInputs("ERR1", "SINGLE", ((tmp_path / "missing.fastq.gz").as_uri(),), ("0" * 32,))
        result = run_locally(build_step_spec("fetch_reads", run, tmp_path, PipelineConfig()))
        assert result.returncode != 0
        assert not run_layout(tmp_path, run).marker("fetch_reads").exists()

    def test_refetch_skips_files_already_verified(self, demo_reads: list[Path], tmp_path: Path) -> None:
        spec = build_step_spec("fetch_reads", file_run(demo_reads), tmp_path, PipelineConfig())
        assert run_locally(spec).returncode == 0
        again = run_locally(spec)
        assert again.returncode == 0
        assert again.stdout.count("is already present") == 2

    def test_a_step_refuses_to_run_before_the_previous_one(
        self, demo_reads: list[Path], tmp_path: Path
    ) -> None:
        result = run_locally(build_step_spec("read_qc", file_run(demo_reads), tmp_path, PipelineConfig()))
        assert result.returncode != 0
        assert "the previous step has not completed" in result.stderr
