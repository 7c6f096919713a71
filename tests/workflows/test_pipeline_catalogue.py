"""Pipelines as data: the `when:` grammar, the metric parsers, the spec's new fields, and the catalogue that finds
every pipeline folder, checks them together and routes runs."""

import shutil
from pathlib import Path

import pytest
import yaml

from prefect_utils.job_spec import JobSpec
from prefect_utils.keys import job_key
from tests.workflows.pipeline_inputs import ASSEMBLY, PAIRED_RUN
from workflows.ena.client import EnaReadRun
from workflows.models import PlanStep
from workflows.orchestration.reconciler import _decide_skips, _outcomes, _RunState
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS
from workflows.pipelines.catalogue import BUILT_IN, load_catalogue
from workflows.pipelines.conditions import ConditionError, MissingMetric, parse_condition
from workflows.pipelines.metrics import MetricsError, MetricsSpec, read_metrics
from workflows.pipelines.spec import PipelineSpecError

# The assembly pipeline's keys before pipelines became data (computed at 6efb7d0 with the same run and directory):
# a redeploy must not change the identity of a job already submitted.
ASSEMBLY_KEYS = {
    "fetch_reads": "cdfb374307262dc6738588fba6d7367475897a15",
    "read_qc": "93426b4c4e18fcd2c0b3227b67d73e508dab49ec",
    "assembly": "7295ec16db239ae37f0617992ce74bb6f1112f70",
    "assembly_stats": "8c36674c081efcd2a70f34e113b8468a9dbae217",
}


def test_the_assembly_pipelines_submission_keys_did_not_change() -> None:
    workdir = Path("/jobs/request-7-abcdef12/ERR9000001")
    for step in ASSEMBLY.steps:
        spec = ASSEMBLY.build_step_spec(step, PAIRED_RUN, workdir, ASSEMBLY.config())
        inputs = (
            dict(zip(PAIRED_RUN.fastq_urls, PAIRED_RUN.fastq_md5, strict=True))
            if step == "fetch_reads"
            else {}
        )
        assert job_key(spec, inputs) == ASSEMBLY_KEYS[step], step


class TestConditions:
    METRICS = {"assembly_stats.total_length": 12345, "assembly_stats.contigs": 4, "read_qc.reads_out": 8000}

    @pytest.mark.parametrize(
        ("text", "holds"),
        [
            ("assembly_stats.total_length >= 20000", False),
            ("assembly_stats.total_length < 20000", True),
            ("assembly_stats.contigs == 4 and read_qc.reads_out > 100", True),
            ("assembly_stats.contigs != 4 or read_qc.reads_out > 100", True),
            ("not (assembly_stats.contigs == 4)", False),
            ("(assembly_stats.contigs > 1 or 1 > 2) and not read_qc.reads_out < 10", True),
            ("12345 <= assembly_stats.total_length", True),
        ],
    )
    def test_evaluated_on_recorded_metrics(self, text: str, holds: bool) -> None:
        assert parse_condition(text).holds(self.METRICS) is holds

    def test_a_false_condition_says_why_with_the_figures(self) -> None:
        condition = parse_condition("assembly_stats.total_length >= 20000 and assembly_stats.contigs > 1")
        assert condition.why_false(self.METRICS) == "assembly_stats.total_length 12,345 < 20,000"
        assert condition.metrics == {"assembly_stats.total_length", "assembly_stats.contigs"}

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "assembly_stats.total_length",
            "assembly_stats.total_length >= ",
            "__import__('os').system('true')",
            "total_length >= 1",  # a metric is <step>.<name>
            "(a.b > 1",
            "a.b > 1 c.d",
            "a.b => 1",
        ],
    )
    def test_anything_else_is_refused_at_parse(self, text: str) -> None:
        with pytest.raises(ConditionError):
            parse_condition(text)

    def test_a_metric_not_recorded_cannot_decide(self) -> None:
        with pytest.raises(MissingMetric, match=r"gene_calling\.cds"):
            parse_condition("gene_calling.cds > 1").holds(self.METRICS)


class TestMetricParsers:
    def spec(self, **fields) -> MetricsSpec:
        return MetricsSpec.from_dict({"file": "f", **fields})

    def test_json_paths(self, tmp_path: Path) -> None:
        (path := tmp_path / "fastp.json").write_text(
            '{"summary": {"before_filtering": {"total_reads": 8000}}}'
        )
        spec = self.spec(parser="json", fields={"reads_in": "summary.before_filtering.total_reads"})
        assert read_metrics(spec, path) == {"reads_in": 8000}
        missing = self.spec(parser="json", fields={"x": "summary.after_filtering.total_reads"})
        with pytest.raises(MetricsError, match=r"fastp\.json: has no 'summary.after_filtering.total_reads'"):
            read_metrics(missing, path)

    def test_fasta_and_line_counts(self, tmp_path: Path) -> None:
        (path := tmp_path / "p.faa").write_text(">a\nMK\n>b\nMV\n# comment\n\n")
        assert read_metrics(self.spec(parser="fasta_count", field="cds"), path) == {"cds": 2}
        assert read_metrics(self.spec(parser="line_count", field="lines"), path) == {"lines": 4}

    def test_a_table_counted_by_a_column_and_a_pattern(self, tmp_path: Path) -> None:
        # barrnap's GFF3 (a real line of its output, contig names shortened).
        (path := tmp_path / "rrna.gff").write_text(
            "##gff-version 3\n"
            "k141_1\tbarrnap:0.9\trRNA\t1\t1500\t0\t+\t.\tName=16S_rRNA;product=16S ribosomal RNA\n"
            "k141_1\tbarrnap:0.9\trRNA\t1800\t4700\t0\t+\t.\tName=23S_rRNA;product=23S ribosomal RNA\n"
            "k141_2\tbarrnap:0.9\trRNA\t1\t1500\t0\t-\t.\tName=16S_rRNA;product=16S ribosomal RNA\n"
        )
        spec = self.spec(parser="table_count_by", column=9, pattern="Name=([^;]+)", field="rrnas")
        assert read_metrics(spec, path) == {"rrnas": 3, "rrnas_by": {"16S_rRNA": 2, "23S_rRNA": 1}}

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(MetricsError, match="nothing-here"):
            read_metrics(self.spec(parser="fasta_count", field="cds"), tmp_path / "nothing-here")


def _pipeline_folder(root: Path, name: str, document: dict) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(document))
    return folder


def _spec(name: str, **extra) -> dict:
    return {
        "name": name,
        "version": "0.1",
        "files": {"table_tsv": "out/{run}.tsv"},
        "steps": [
            {
                "name": f"{name}_count",
                "resources": {"cpus": 1, "memory_mb": 64, "time_limit_minutes": 1},
                "escalation": {"max_escalations": 0, "factor": 2.0},
                "inputs": ["ena_fastq"],
                "outputs": ["table_tsv"],
                "partition": "datamover",
                "metrics": [{"parser": "tsv_row", "file": "table_tsv", "fields": {"reads": "reads"}}],
                "script": 'echo -e "reads\\n1" > "$TABLE_TSV"\n',
            }
        ],
        **extra,
    }


class TestCatalogue:
    def test_the_built_in_pipelines_and_their_chain(self) -> None:
        catalogue = load_catalogue()
        assert {"assembly", "assembly_analysis"} <= set(catalogue.pipelines)
        (link, analysis), *_ = catalogue.chained("assembly")
        assert analysis.name == "assembly_analysis" and link.after == "assembly_stats"
        assert link.when is not None and link.when.text == "assembly_stats.total_length >= 20000"
        assert analysis.consumed_files["contigs_fa"].path == "assembly/megahit/final.contigs.fa"

    def test_a_new_folder_is_a_new_pipeline_and_a_route(self, tmp_path: Path) -> None:
        _pipeline_folder(
            tmp_path,
            "metatranscriptomics",
            _spec(
                "metatranscriptomics",
                route={"library_strategy": ["RNA-Seq"], "library_source": ["METATRANSCRIPTOMIC"]},
            ),
        )
        catalogue = load_catalogue([tmp_path])
        run = EnaReadRun(
            run_accession="ERR1",
            sample_accession="SAMEA1",
            secondary_sample_accession="ERS1",
            instrument_model="Illumina NovaSeq 6000",
            fastq_bytes=(10,),
            read_count=1,
            base_count=100,
            library_strategy="RNA-Seq",
            library_source="METATRANSCRIPTOMIC",
            instrument_platform="ILLUMINA",
            library_layout="SINGLE",
            fastq_ftp=("x/ERR1.fastq.gz",),
            fastq_md5=("a" * 32,),
        )
        pipeline, reason = catalogue.route(run)
        assert reason is None and pipeline is not None and pipeline.name == "metatranscriptomics"
        job = pipeline.build_step_spec(
            "metatranscriptomics_count", _inputs(), tmp_path / "ERR1", pipeline.config()
        )
        assert job.partition == "datamover"  # the step's own partition, over the pipeline's
        assert (
            pipeline.config({"metatranscriptomics_count": {"partition": "short"}})
            .resources("metatranscriptomics_count")
            .partition
            == "short"
        )

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            ({"chain": [{"pipeline": "nowhere"}]}, "chain: no pipeline named 'nowhere'"),
            (
                {"chain": [{"pipeline": "assembly_analysis", "when": "x_count.reads > 1"}]},
                r"consumes: \['contigs_fa'\] are not files of 'x', which chains it",
            ),
        ],
    )
    def test_a_broken_chain_fails_at_load_naming_the_spec(
        self, tmp_path: Path, extra: dict, message: str
    ) -> None:
        _pipeline_folder(tmp_path, "x", _spec("x", **extra))
        with pytest.raises(PipelineSpecError, match=message):
            load_catalogue([tmp_path])

    def test_a_when_naming_an_unknown_metric_fails_at_load(self, tmp_path: Path) -> None:
        document = _spec("x", chain=[{"pipeline": "y", "when": "x_count.bases > 1"}])
        _pipeline_folder(tmp_path, "x", document)
        _pipeline_folder(tmp_path, "y", _spec("y"))
        with pytest.raises(
            PipelineSpecError, match=r"x/spec.yaml: chain #1: when: x_count.bases is not a metric"
        ):
            load_catalogue([tmp_path])

    def test_two_pipelines_of_one_route_cannot_share_a_step_name(self, tmp_path: Path) -> None:
        _pipeline_folder(
            tmp_path,
            "x",
            _spec(
                "x", route={"library_strategy": ["WGS"], "library_source": ["X"]}, chain=[{"pipeline": "y"}]
            ),
        )
        clash = _spec("y")
        clash["steps"][0]["name"] = "x_count"
        _pipeline_folder(tmp_path, "y", clash)
        with pytest.raises(PipelineSpecError, match="step 'x_count' is also a step of 'x'"):
            load_catalogue([tmp_path])

    def test_a_folder_must_be_named_as_its_pipeline(self, tmp_path: Path) -> None:
        _pipeline_folder(tmp_path, "other", _spec("x"))
        with pytest.raises(PipelineSpecError, match="is not its folder's name"):
            load_catalogue([tmp_path])

    def test_a_copy_of_a_built_in_pipeline_is_refused(self, tmp_path: Path) -> None:
        shutil.copytree(BUILT_IN / "assembly", tmp_path / "assembly")
        with pytest.raises(PipelineSpecError, match="a second pipeline named 'assembly'"):
            load_catalogue([tmp_path])


def _inputs():
    from workflows.ena.runs import RunInputs

    return RunInputs("ERR1", "SINGLE", ("file:///x/ERR1.fastq.gz",), ("a" * 32,))


class TestSkips:
    """A `when:` that does not hold skips its step and every step after it: an outcome, decided on recorded
    metrics only (the reconciler's `_decide_skips`, on plan steps as they are frozen)."""

    def run(self, metrics: dict) -> _RunState:
        def step(name: str, position: int, after: str | None, pipeline: str, when: str = "") -> PlanStep:
            return PlanStep(
                run_accession="ERR1", step=name, position=position, pipeline=pipeline, when=when,
                depends_on=[after] if after else [],
            )  # fmt: skip

        steps = [
            step("assembly_stats", 0, None, "assembly"),
            step(
                "gene_calling",
                1,
                "assembly_stats",
                "assembly_analysis",
                "assembly_stats.total_length >= 20000",
            ),
            step("domain_search", 2, "gene_calling", "assembly_analysis"),
        ]
        run = _RunState("ERR1", steps, metrics=metrics)
        return run

    def test_below_the_threshold_the_chain_is_skipped_with_why(self) -> None:
        run = self.run({"assembly_stats.total_length": 12345})
        _decide_skips(run, {"assembly_stats"}, STUDY_ANALYSIS.unmet)
        why = "skipped: assembly_stats.total_length 12,345 < 20,000"
        assert run.skipped == {"gene_calling": why, "domain_search": why} and run.failure is None
        run.done = {"assembly_stats"}
        assert _outcomes([run]) == {
            "ERR1": {"route": "assembly", "pipelines": {"assembly": "completed", "assembly_analysis": why}}
        }

    def test_above_it_nothing_is_skipped(self) -> None:
        run = self.run({"assembly_stats.total_length": 29000})
        _decide_skips(run, {"assembly_stats"}, STUDY_ANALYSIS.unmet)
        assert run.skipped == {} and run.failure is None

    def test_a_metric_never_recorded_fails_the_run_rather_than_guess(self) -> None:
        run = self.run({})
        _decide_skips(run, {"assembly_stats"}, STUDY_ANALYSIS.unmet)
        assert run.skipped == {}
        assert run.failure == (
            "gene_calling: cannot decide `when: assembly_stats.total_length >= 20000`: "
            "assembly_stats.total_length was not recorded"
        )

    def test_nothing_is_decided_before_the_step_it_waits_for_completed(self) -> None:
        run = self.run({})
        _decide_skips(run, set(), STUDY_ANALYSIS.unmet)
        assert run.skipped == {} and run.failure is None


class TestStudySteps:
    """`scope: study`: a step once per request, after every run of its pipeline has ended."""

    def test_the_amplicon_study_step_reads_each_runs_file_and_writes_the_studys(self, tmp_path: Path) -> None:
        amplicon = load_catalogue()["amplicon"]
        assert amplicon.run_steps == ("fetch_reads", "trim_primers", "merge_and_filter", "denoise")
        job = amplicon.build_study_step_spec(
            "study_asv_table", tmp_path / "request-1", amplicon.config(), label="MGYS1"
        )
        assert job.workdir == str(tmp_path / "request-1" / "study")
        assert job.environment["REQUEST_DIR"] == str(tmp_path / "request-1")
        assert job.environment["FILTERED_FASTA_PATH"] == "merged/filtered.fasta"  # below each run's directory
        assert job.environment["STUDY_ASV_TABLE"] == str(
            tmp_path / "request-1" / "study" / "amplicon" / "asv_table.tsv"
        )
        assert job.environment["REQUIRED_MARKER"] == ""  # it waits for the runs, which the reconciler knows
        assert amplicon.study_results() == ("study_asv_table", "study_asv_fasta", "study_runs")

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"scope": "everything"}, "scope: 'run' \\(the default\\) or 'study'"),
            ({"inputs": ["ena_fastq"]}, "without \\{run\\} or \\{mate\\} in its path"),
            (
                {"after": "x_count"},
                "a study step waits for every run's steps; it can name only another study step",
            ),
        ],
    )
    def test_a_broken_study_step_fails_at_load(self, tmp_path: Path, change: dict, message: str) -> None:
        document = _spec("x")
        study = {
            "name": "x_merge",
            "scope": "study",
            "resources": {"cpus": 1, "memory_mb": 64, "time_limit_minutes": 1},
            "escalation": {"max_escalations": 0, "factor": 2.0},
            "inputs": [],
            "outputs": [],
            "script": "true\n",
            **change,
        }
        document["steps"].append(study)
        _pipeline_folder(tmp_path, "x", document)
        with pytest.raises(PipelineSpecError, match=message):
            load_catalogue([tmp_path])

    def test_the_study_step_waits_until_every_run_of_its_pipeline_has_ended(self) -> None:
        from prefect_utils.ledger import LedgerRecord
        from prefect_utils.states import JobState
        from workflows.orchestration.reconciler import _evaluate

        def step(run: str, name: str, position: int, after: str | None = None) -> PlanStep:
            return PlanStep(
                run_accession=run, step=name, position=position, pipeline="amplicon",
                depends_on=[after] if after else [], key=f"{run}-{name}", spec={}, inputs={}, policy={},
            )  # fmt: skip

        steps = [step("ERR1", "denoise", 0), step("ERR2", "denoise", 0), step("study", "study_asv_table", 1)]

        def record(key: str, state: JobState) -> LedgerRecord:
            spec = JobSpec(name=key, script="true", workdir="/tmp").canonical()
            return LedgerRecord(key=key, attempt=1, spec=spec, job_id="1", state=state, exit_code=1)

        running = {
            "ERR1-denoise": [record("ERR1-denoise", JobState.COMPLETED)],
            "ERR2-denoise": [record("ERR2-denoise", JobState.RUNNING)],
        }
        study = _evaluate(steps, running, {})[-1]
        assert study.accession == "study" and study.to_submit == []
        # A run that failed for good has ended too: the study step pools what the others left.
        ended = {**running, "ERR2-denoise": [record("ERR2-denoise", JobState.FAILED)]}
        study = _evaluate(steps, ended, {})[-1]
        assert [s.key for s in study.to_submit] == ["study-study_asv_table"]
