"""The four step scripts run for real with bash on the demo reads, and parsing the stats they end on."""

import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from prefect_utils.job_spec import JobSpec
from tests.workflows.pipeline_inputs import ASSEMBLY, STEPS, assembly_stats
from workflows.ena.runs import RunInputs
from workflows.pipelines.engine import PipelineConfig
from workflows.pipelines.metrics import MetricsError

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


class TestSeqkitStats:
    """spec.yaml's `metrics` of assembly_stats (a `tsv_row` parser) on what seqkit prints."""

    def test_real_seqkit_output(self, tmp_path: Path) -> None:
        (path := tmp_path / "stats.tsv").write_text(SEQKIT_OUTPUT)
        assert assembly_stats(path) == {
            "contigs": 2,
            "total_length": 29973,
            "n50": 19995,
            "largest_contig": 19995,
        }

    def test_an_empty_assembly(self, tmp_path: Path) -> None:
        (path := tmp_path / "stats.tsv").write_text(SEQKIT_EMPTY_OUTPUT)
        assert assembly_stats(path) == {"contigs": 0, "total_length": 0, "n50": 0, "largest_contig": 0}

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
    def test_unexpected_output_is_an_error_naming_the_file(self, text: str, tmp_path: Path) -> None:
        (path := tmp_path / "stats.tsv").write_text(text)
        with pytest.raises(MetricsError, match=r"stats\.tsv"):
            assembly_stats(path)


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
        result = run_locally(ASSEMBLY.build_step_spec(step, run, workdir, config))
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
        layout = ASSEMBLY.layout(workdir, run)
        # What an attempt killed mid-assembly leaves behind; MEGAHIT would refuse to start over it.
        layout.one_file("megahit_dir").mkdir(parents=True)
        (layout.one_file("megahit_dir") / "checkpoints.txt").write_text("partial\n")

        run_all_steps(run, workdir, ASSEMBLY.config())

        for step in STEPS:
            assert layout.marker(step).is_file()
        assert [md5_of(p) for p in layout.file("raw_reads")] == list(run.fastq_md5)
        assert all(path.is_file() for name in ("fastp_json", "fastp_html") for path in layout.file(name))
        assert all(p.stat().st_size > 0 for p in layout.file("qc_reads"))
        stats = assembly_stats(layout.one_file("stats_tsv"))
        assert stats["contigs"] > 0 and stats["total_length"] > 0 and stats["n50"] > 0
        # Two random genomes of 20 kb and 10 kb: a working assembly is a few long contigs.
        assert stats["largest_contig"] > 5000

    def test_single_end_run(self, demo_reads: list[Path], tmp_path: Path) -> None:
        run = file_run(demo_reads, layout="SINGLE")
        run_all_steps(run, tmp_path, ASSEMBLY.config())
        assert assembly_stats(ASSEMBLY.layout(tmp_path, run).one_file("stats_tsv"))["contigs"] > 0

    def test_md5_mismatch_fails_clearly_and_keeps_nothing(
        self, demo_reads: list[Path], tmp_path: Path
    ) -> None:
        good = file_run(demo_reads)
        run = dataclasses.replace(good, fastq_md5=(good.fastq_md5[0], "0" * 32))
        spec = ASSEMBLY.build_step_spec("fetch_reads", run, tmp_path, ASSEMBLY.config())

        result = run_locally(spec)

        assert result.returncode != 0
        assert f"ERR9000001: md5 mismatch for {run.fastq_urls[1]}: ENA lists {'0' * 32}" in result.stderr
        layout = ASSEMBLY.layout(tmp_path, run)
        assert not layout.marker("fetch_reads").exists()
        assert not layout.file("raw_reads")[1].exists()
        assert not list(layout.file("raw_reads")[1].parent.glob("*.part"))

    def test_a_failed_download_fails_the_step(self, tmp_path: Path) -> None:
        run = RunInputs("ERR1", "SINGLE", ((tmp_path / "missing.fastq.gz").as_uri(),), ("0" * 32,))
        result = run_locally(ASSEMBLY.build_step_spec("fetch_reads", run, tmp_path, ASSEMBLY.config()))
        assert result.returncode != 0
        assert not ASSEMBLY.layout(tmp_path, run).marker("fetch_reads").exists()

    def test_refetch_skips_files_already_verified(self, demo_reads: list[Path], tmp_path: Path) -> None:
        spec = ASSEMBLY.build_step_spec("fetch_reads", file_run(demo_reads), tmp_path, ASSEMBLY.config())
        assert run_locally(spec).returncode == 0
        again = run_locally(spec)
        assert again.returncode == 0
        assert again.stdout.count("is already present") == 2

    def test_a_step_refuses_to_run_before_the_previous_one(
        self, demo_reads: list[Path], tmp_path: Path
    ) -> None:
        result = run_locally(
            ASSEMBLY.build_step_spec("read_qc", file_run(demo_reads), tmp_path, ASSEMBLY.config())
        )
        assert result.returncode != 0
        assert "the previous step has not completed" in result.stderr
