"""The four step scripts run for real with bash on the demo reads, and parsing the stats they end on."""

import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from prefect_utils.job_spec import JobSpec
from tests.workflows.pipeline_inputs import ASSEMBLY, ASSEMBLY_ANALYSIS, PAIRED_RUN, STEPS, assembly_stats
from workflows.ena.runs import RunInputs
from workflows.pipelines.engine import PipelineConfig
from workflows.pipelines.metrics import MetricsError, read_metrics

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


# The genome Debian's prodigal ships as test data: a real bacterial chromosome (174 kb), with genes and a 16S.
PRODIGAL_GENOME = Path("/usr/share/doc/prodigal/test-data/genome.fna.gz")
analysis_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("prodigal", "hmmsearch", "barrnap"))
    or not PRODIGAL_GENOME.exists(),
    reason="prodigal, hmmer and barrnap are installed by `make install` (scripts/bootstrap.sh)",
)


@analysis_tools
class TestAssemblyAnalysisAndDatamoveForReal:
    """The chained analysis's scripts and the datamove that ends every analysis, under bash with the real tools,
    on contigs that are a real genome (its assembly is what the end-to-end cases run)."""

    def analysed(
        self, tmp_path: Path, library: Path | None = None
    ) -> tuple[Path, dict[str, subprocess.CompletedProcess[str]]]:
        workdir = tmp_path / "ERR9000001"
        contigs = ASSEMBLY.layout(workdir, PAIRED_RUN).one_file("contigs_fa")
        contigs.parent.mkdir(parents=True)
        contigs.write_bytes(gzip.decompress(PRODIGAL_GENOME.read_bytes()))
        ASSEMBLY.layout(workdir, PAIRED_RUN).marker("assembly_stats").write_text("done\n")
        config = ASSEMBLY_ANALYSIS.config({"hmm_library": str(library)} if library else None)
        results = {}
        for step in ASSEMBLY_ANALYSIS.steps:
            spec = ASSEMBLY_ANALYSIS.build_step_spec(
                step, PAIRED_RUN, workdir, config, after="assembly_stats" if step == "gene_calling" else None
            )
            results[step] = run_locally(spec)
            if results[step].returncode:
                break
        return workdir, results

    def test_genes_and_the_16s_of_a_real_genome(self, tmp_path: Path) -> None:
        workdir, results = self.analysed(tmp_path)
        assert all(result.returncode == 0 for result in results.values()), results
        layout = ASSEMBLY_ANALYSIS.layout(workdir, PAIRED_RUN)
        metrics: dict[str, Any] = {}
        for step in ASSEMBLY_ANALYSIS.spec.steps:
            for declared in step.metrics:
                metrics.update(read_metrics(declared, layout.one_file(declared.file)))
        assert metrics["cds"] > 150 and metrics["rrnas_by"] == {"16S_rRNA": 1}
        assert metrics["domain_hits"] == 0  # the demo's six profiles match none of its proteins; Pfam would

    def test_a_missing_hmm_library_fails_the_step_naming_the_file(self, tmp_path: Path) -> None:
        missing = tmp_path / "Pfam-A.hmm"
        _, results = self.analysed(tmp_path, library=missing)
        assert results["gene_calling"].returncode == 0
        assert results["domain_search"].returncode == 1
        assert f"the profile-HMM library {missing} is missing or empty" in results["domain_search"].stderr

    def move(self, workdir: Path, store: Path) -> subprocess.CompletedProcess[str]:
        spec = ASSEMBLY_ANALYSIS.build_datamove_spec(
            PAIRED_RUN, workdir, store, ASSEMBLY_ANALYSIS.config(), after="rrna_search", partition=None
        )
        return run_locally(spec)

    def test_the_move_copies_the_results_with_a_manifest_and_a_rerun_changes_nothing(
        self, tmp_path: Path
    ) -> None:
        workdir, _ = self.analysed(tmp_path)
        store = tmp_path / "results" / "MGYS00000001" / "MGYA00000001"
        first = self.move(workdir, store)
        assert first.returncode == 0, first.stderr
        manifest = (store / "manifest.tsv").read_text().splitlines()
        assert manifest[0] == "path\tsize\tsha256"
        rows = {line.split("\t")[0]: line.split("\t") for line in manifest[1:]}
        assert set(rows) == {
            "analysis/genes.gff",
            "analysis/proteins.faa",
            "analysis/domains.tbl",
            "analysis/rrna.gff",
        }
        for name, (_, size, sha) in rows.items():
            copied = (store / name).read_bytes()
            assert len(copied) == int(size) and hashlib.sha256(copied).hexdigest() == sha
        assert not [p for p in store.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
        before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}

        again = self.move(workdir, store)
        assert again.returncode == 0 and "matches its manifest" in again.stdout
        assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before

    def test_a_result_changed_in_the_store_fails_the_move_saying_which(self, tmp_path: Path) -> None:
        workdir, _ = self.analysed(tmp_path)
        store = tmp_path / "results" / "MGYA00000002"
        assert self.move(workdir, store).returncode == 0
        (store / "analysis" / "rrna.gff").write_text("tampered\n")
        result = self.move(workdir, store)
        assert result.returncode == 1
        assert f"{store}/analysis/rrna.gff does not match its manifest" in result.stderr

    def test_a_missing_output_fails_the_move_naming_it_and_moves_nothing(self, tmp_path: Path) -> None:
        workdir, _ = self.analysed(tmp_path)
        gone = ASSEMBLY_ANALYSIS.layout(workdir, PAIRED_RUN).one_file("rrna_gff")
        gone.unlink()
        store = tmp_path / "results" / "MGYA00000003"
        result = self.move(workdir, store)
        assert result.returncode == 1 and f"the analysis's output {gone} is missing" in result.stderr
        assert not store.exists()
