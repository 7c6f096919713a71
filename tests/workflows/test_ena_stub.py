"""The real ENA client over real HTTP against scripts/ena_stub.py, and the QA gate on what it serves."""

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from tests.workflows.pipeline_inputs import check_run_usable
from workflows.ena.client import READ_RUN_FIELDS, EnaClient, EnaReadRun, EnaStudyNotFound
from workflows.ena.runs import run_inputs_from_ena

DEMO_ENA = Path(__file__).resolve().parents[2] / "demo" / "ena"


class TestAgainstTheStub:
    """The real client over real HTTP against scripts/ena_stub.py serving demo/ena."""

    def test_study_by_primary_and_secondary_accession(self, demo_stub) -> None:
        _, base_url = demo_stub
        with EnaClient(base_url, retries=0) as ena:
            by_primary = ena.fetch_study("PRJEB00001")
            by_secondary = ena.fetch_study("ERP900001")
        assert by_primary == by_secondary
        assert by_primary.secondary_study_accession == "ERP900001"
        assert by_primary.title.startswith("Demo metagenome")

    def test_unknown_study(self, demo_stub) -> None:
        _, base_url = demo_stub
        with EnaClient(base_url, retries=0) as ena, pytest.raises(EnaStudyNotFound):
            ena.fetch_study("PRJEB424242")

    def test_runs_carry_files_the_stub_serves_with_their_md5(self, demo_stub) -> None:
        _, base_url = demo_stub
        with EnaClient(base_url, retries=0) as ena:
            runs = ena.fetch_read_runs("PRJEB00001")
        assert [run.run_accession for run in runs] == ["ERR9000001", "ERR9000002"]
        for run in runs:
            assert check_run_usable(run) is None
            assert run.read_count == 4000
            for url, md5, size in zip(run.fastq_urls, run.fastq_md5, run.fastq_bytes, strict=True):
                body = httpx.get(url).raise_for_status().content
                assert hashlib.md5(body).hexdigest() == md5
                assert len(body) == size

    def test_qa_gate_on_a_study_with_a_run_lacking_fastq(self, demo_stub) -> None:
        _, base_url = demo_stub
        with EnaClient(base_url, retries=0) as ena:
            runs = {run.run_accession: run for run in ena.fetch_read_runs("ERP900002")}
        assert check_run_usable(runs["ERR9000003"]) is None
        assert run_inputs_from_ena(runs["ERR9000003"]).fastq_urls == runs["ERR9000003"].fastq_urls
        assert check_run_usable(runs["ERR9000004"]) == "ERR9000004: ENA lists no FASTQ files for this run"

    def test_unknown_field_is_a_400_with_enas_message(self, demo_stub) -> None:
        _, base_url = demo_stub
        response = httpx.get(
            f"{base_url}/search",
            params={
                "result": "study",
                "query": 'study_accession="PRJEB00001"',
                "fields": "nope",
                "format": "json",
            },
        )
        assert response.status_code == 400
        assert response.json()["message"] == "Invalid fieldName(s) supplied: nope"

    def test_data_driven_fixtures_and_file_urls(self, ena_stub, tmp_path: Path) -> None:
        data = tmp_path / "ena"
        data.mkdir()
        (data / "PRJEB7700.study.json").write_text(
            json.dumps(
                [
                    {
                        "study_accession": "PRJEB7700",
                        "secondary_study_accession": "ERP770000",
                        "study_title": "t",
                    }
                ]
            )
        )
        run = {key: "" for key in READ_RUN_FIELDS} | {
            "run_accession": "ERR770000",
            "library_strategy": "WGS",
            "library_source": "METAGENOMIC",
            "library_layout": "PAIRED",
            "fastq_ftp": "x/ERR770000_1.fastq.gz;x/ERR770000_2.fastq.gz",
            "fastq_md5": "@stub",
            "fastq_bytes": "@stub",
        }
        (data / "PRJEB7700.read_run.json").write_text(json.dumps([run]))
        server, base_url = ena_stub.serve_in_thread(data, fastq_dir=tmp_path / "fq", fastq_scheme="file")
        try:
            with EnaClient(base_url, retries=0) as ena:
                study = ena.fetch_study("ERP770000")
                [fetched] = ena.fetch_read_runs("PRJEB7700")
        finally:
            server.shutdown()
            server.server_close()
        # Fields the fixture leaves out come back empty, as ENA serves a field without a value.
        assert (study.study_accession, study.title, study.description) == ("PRJEB7700", "t", "")
        assert isinstance(fetched, EnaReadRun)
        assert fetched.fastq_urls == tuple(
            (tmp_path / "fq" / f"ERR770000_{m}.fastq.gz").as_uri() for m in (1, 2)
        )
        assert fetched.read_count is None
        assert check_run_usable(fetched) is None


class TestGeneratedStudy:
    """A study of many runs made up by the stub (for bench/scale.py): every run its own, one pair of files."""

    def test_many_runs_sharing_one_pair_of_files(self, ena_stub, tmp_path: Path) -> None:
        empty = tmp_path / "ena"
        empty.mkdir()
        server, base_url = ena_stub.serve_in_thread(
            empty, fastq_dir=tmp_path / "fq", generated=[ena_stub.parse_generated("PRJEB770001:300")]
        )
        try:
            with EnaClient(base_url, retries=0) as ena:
                study = ena.fetch_study("ERP770001")
                runs = ena.fetch_read_runs("PRJEB770001")
            [url_1, url_2] = runs[0].fastq_urls
            bodies = [httpx.get(url).raise_for_status().content for url in (url_1, url_2)]
        finally:
            server.shutdown()
            server.server_close()
        assert study.study_accession == "PRJEB770001"
        assert [run.run_accession for run in runs] == [f"ERR770001{i:06d}" for i in range(1, 301)]
        assert len({run.sample_accession for run in runs}) == 300
        assert all(check_run_usable(run) is None for run in runs)
        # One pair of files for all: a study of 5,000 runs costs one pair of downloads' worth of disk.
        assert {run.fastq_urls for run in runs} == {(url_1, url_2)}
        assert [hashlib.md5(body).hexdigest() for body in bodies] == list(runs[0].fastq_md5)
        assert list(runs[0].fastq_bytes) == [len(body) for body in bodies]
        assert runs[-1].read_count == 4000

    def test_beside_the_fixtures_and_never_twice(self, ena_stub, tmp_path: Path) -> None:
        data = ena_stub.load_stub_data(
            DEMO_ENA, tmp_path / "fq", "http://stub", generated=[("PRJEB770002", 2)]
        )
        assert data.study_for({"PRJEB00001"}) is not None
        assert [run["run_accession"] for run in data.runs["PRJEB770002"]] == [
            "ERR770002000001",
            "ERR770002000002",
        ]
        with pytest.raises(ValueError, match="PRJEB770002 is served already"):
            ena_stub.load_stub_data(
                DEMO_ENA, tmp_path / "fq", "http://stub", generated=[("PRJEB770002", 2), ("PRJEB770002", 3)]
            )

    @pytest.mark.parametrize("text", ["PRJEB770001", "PRJEB770001:0", "ERP770001:10", "PRJEB770001:x"])
    def test_a_bad_option_is_refused(self, ena_stub, text: str) -> None:
        with pytest.raises(ValueError):
            ena_stub.parse_generated(text)
