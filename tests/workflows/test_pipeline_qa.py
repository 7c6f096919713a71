"""A run's inputs for the assembly pipeline, and the QA gate deciding from ENA's record whether it can run."""

from typing import Any

import pytest

from tests.workflows.pipeline_inputs import MD5_1, MD5_2, PAIRED_RUN, URL_1, URL_2, check_run_usable
from workflows.ena.client import EnaReadRun
from workflows.ena.runs import RunInputs, UnusableRun, run_inputs_from_ena


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
    def test_an_amplicon_run_is_taken_by_the_amplicon_pipeline(self) -> None:
        assert check_run_usable(ena_run(library_strategy="AMPLICON")) is None

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
                {"library_strategy": "RNA-Seq"},
                "ERR9000001: no pipeline takes this run (amplicon: library strategy 'RNA-Seq' is not AMPLICON; "
                "assembly: library strategy 'RNA-Seq' is not WGS or WGA)",
            ),
            (
                {"library_strategy": ""},
                "ERR9000001: no pipeline takes this run (amplicon: library strategy '(empty)' is not AMPLICON; "
                "assembly: library strategy '(empty)' is not WGS or WGA)",
            ),
            (
                {"library_source": "TRANSCRIPTOMIC"},
                "ERR9000001: no pipeline takes this run (amplicon: library strategy 'WGS' is not AMPLICON; "
                "assembly: library source 'TRANSCRIPTOMIC' is not METAGENOMIC or GENOMIC)",
            ),
            (
                {"instrument_platform": "OXFORD_NANOPORE"},
                "ERR9000001: no pipeline takes this run (amplicon: library strategy 'WGS' is not AMPLICON; "
                "assembly: it refuses OXFORD_NANOPORE reads)",
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
