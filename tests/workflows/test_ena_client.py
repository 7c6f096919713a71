"""The ENA portal API client against respx mocks shaped like the portal's answers.

The same client against the local stub over real HTTP: test_ena_stub.py.
"""

import json

import httpx
import pytest
import respx

from workflows.ena.client import (
    READ_RUN_FIELDS,
    STUDY_FIELDS,
    EnaClient,
    EnaRequestRejected,
    EnaStudyNotFound,
    EnaUnavailable,
    InvalidAccession,
    fastq_url,
    validate_study_accession,
)

BASE = "https://ena.test/ena/portal/api"
SEARCH = f"{BASE}/search"

# Rows as the portal API returns them for format=json: every value a string, lists ";"-joined, "" for missing.
STUDY_ROW = {
    "study_accession": "PRJEB1787",
    "secondary_study_accession": "ERP001736",
    "study_title": "Shotgun Sequencing of Tara Oceans DNA samples corresponding to size fractions for prokaryotes.",
    "study_description": "The Tara Oceans expedition (2009-2013) sampled contrasting ecosystems of the world oceans.",
    "center_name": "Genoscope - CEA",
    "scientific_name": "marine metagenome",
    "tax_id": "408172",
    "first_public": "2013-04-11",
    "last_updated": "2019-10-22",
}

RUN_ROWS = [
    {
        "run_accession": "ERR599003",
        "sample_accession": "SAMEA2619799",
        "secondary_sample_accession": "ERS492652",
        "instrument_model": "Illumina HiSeq 2000",
        "instrument_platform": "ILLUMINA",
        "library_strategy": "WGS",
        "library_source": "METAGENOMIC",
        "library_layout": "PAIRED",
        "fastq_ftp": "ftp.sra.ebi.ac.uk/vol1/fastq/ERR599/003/ERR599003/ERR599003_1.fastq.gz;"
        "ftp.sra.ebi.ac.uk/vol1/fastq/ERR599/003/ERR599003/ERR599003_2.fastq.gz",
        "fastq_md5": "dd0d2a5b4a9b6f0f5c3e1b1e1f7d2c3a;5f0a3b2c1d4e6f708192a3b4c5d6e7f8",
        "fastq_bytes": "4325434211;4428212001",
        "read_count": "55362147",
        "base_count": "11072429400",
    },
    {
        "run_accession": "ERR598955",
        "sample_accession": "SAMEA2619800",
        "secondary_sample_accession": "ERS492653",
        "instrument_model": "Sequel II",
        "instrument_platform": "PACBIO_SMRT",
        "library_strategy": "WGS",
        "library_source": "METAGENOMIC",
        "library_layout": "SINGLE",
        "fastq_ftp": "",
        "fastq_md5": "",
        "fastq_bytes": "",
        "read_count": "",
        "base_count": "",
    },
]

# What ENA's portal API sends with a 400: a JSON object whose "message" names the problem.
ENA_400_BODY = {
    "timestamp": "2024-05-02T10:14:50.123+00:00",
    "status": 400,
    "error": "Bad Request",
    "message": "Invalid fieldName(s) supplied: not_a_field",
    "path": "/ena/portal/api/search",
}


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def client(sleep: RecordingSleep):
    with EnaClient(BASE, retries=3, backoff_seconds=1.0, max_backoff_seconds=30.0, sleep=sleep) as ena:
        yield ena


@pytest.fixture
def mock():
    with respx.mock(assert_all_called=False) as router:
        yield router


def params_of(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


def test_fetch_study_sends_a_search_built_from_params(client: EnaClient, mock: respx.MockRouter) -> None:
    route = mock.get(SEARCH).respond(200, json=[STUDY_ROW])

    study = client.fetch_study("PRJEB1787")

    assert study.study_accession == "PRJEB1787"
    assert study.secondary_study_accession == "ERP001736"
    assert study.title.startswith("Shotgun Sequencing of Tara Oceans")
    assert study.description.startswith("The Tara Oceans expedition")
    assert study.scientific_name == "marine metagenome"
    assert study.tax_id == "408172"
    assert route.call_count == 1
    assert params_of(route.calls.last.request) == {
        "result": "study",
        "query": 'study_accession="PRJEB1787" OR secondary_study_accession="PRJEB1787"',
        "fields": ",".join(STUDY_FIELDS),
        "format": "json",
        "limit": "0",
    }


def test_fetch_study_by_secondary_accession(client: EnaClient, mock: respx.MockRouter) -> None:
    route = mock.get(SEARCH).respond(200, json=[STUDY_ROW])

    study = client.fetch_study(" erp001736 ")

    assert study.study_accession == "PRJEB1787"
    assert 'secondary_study_accession="ERP001736"' in params_of(route.calls.last.request)["query"]


def test_several_secondary_accessions_are_split(client: EnaClient, mock: respx.MockRouter) -> None:
    row = {**STUDY_ROW, "study_accession": "PRJNA109315", "secondary_study_accession": "SRP000903;SRP001212"}
    mock.get(SEARCH).respond(200, json=[row])

    study = client.fetch_study("SRP001212")

    assert study.secondary_study_accession == "SRP000903"
    assert study.secondary_study_accessions == ("SRP000903", "SRP001212")


@pytest.mark.parametrize(
    "accession", ["PRJEB1787", "PRJNA398089", "PRJDB1234", "ERP001736", "SRP012064", "DRP000001"]
)
def test_accepted_accessions(accession: str) -> None:
    assert validate_study_accession(accession.lower()) == accession


@pytest.mark.parametrize("accession", ["", "ERR599003", "PRJEB", "MGYS00001234", 'PRJEB1" OR tax_id="1'])
def test_malformed_accession_never_reaches_ena(
    client: EnaClient, mock: respx.MockRouter, accession: str
) -> None:
    route = mock.get(SEARCH).respond(200, json=[STUDY_ROW])

    with pytest.raises(InvalidAccession):
        client.fetch_study(accession)

    assert not route.called


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json=[]),
        httpx.Response(200, content=b""),
        httpx.Response(204),
    ],
    ids=["empty-list", "empty-body", "no-content"],
)
def test_empty_answers_mean_study_not_found(client: EnaClient, mock: respx.MockRouter, response) -> None:
    mock.get(SEARCH).mock(return_value=response)

    with pytest.raises(EnaStudyNotFound, match="PRJEB99999999") as excinfo:
        client.fetch_study("PRJEB99999999")

    assert excinfo.value.accession == "PRJEB99999999"
    assert "private or suppressed" in str(excinfo.value)


def test_400_carries_enas_message_and_is_not_retried(
    client: EnaClient, mock: respx.MockRouter, sleep: RecordingSleep
) -> None:
    route = mock.get(SEARCH).respond(400, json=ENA_400_BODY)

    with pytest.raises(EnaRequestRejected) as excinfo:
        client.fetch_study("PRJEB1787")

    assert excinfo.value.status_code == 400
    assert excinfo.value.message == "Invalid fieldName(s) supplied: not_a_field"
    assert "PRJEB1787" in str(excinfo.value)
    assert route.call_count == 1
    assert sleep.delays == []


def test_400_with_a_plain_text_body(client: EnaClient, mock: respx.MockRouter) -> None:
    mock.get(SEARCH).respond(400, text="Unsupported param offset")

    with pytest.raises(EnaRequestRejected, match="Unsupported param offset"):
        client.fetch_study("PRJEB1787")


def test_500_then_success_is_retried(
    client: EnaClient, mock: respx.MockRouter, sleep: RecordingSleep
) -> None:
    route = mock.get(SEARCH).mock(side_effect=[httpx.Response(500), httpx.Response(200, json=[STUDY_ROW])])

    assert client.fetch_study("PRJEB1787").study_accession == "PRJEB1787"
    assert route.call_count == 2
    assert sleep.delays == [1.0]


def test_persistent_503_raises_unavailable_after_backing_off(
    client: EnaClient, mock: respx.MockRouter, sleep: RecordingSleep
) -> None:
    route = mock.get(SEARCH).respond(503, text="Service Temporarily Unavailable")

    with pytest.raises(EnaUnavailable, match=r"PRJEB1787.*HTTP 503"):
        client.fetch_study("PRJEB1787")

    assert route.call_count == 4
    assert sleep.delays == [1.0, 2.0, 4.0]


def test_backoff_is_capped(mock: respx.MockRouter, sleep: RecordingSleep) -> None:
    mock.get(SEARCH).respond(502)
    ena = EnaClient(BASE, retries=5, backoff_seconds=10.0, max_backoff_seconds=30.0, sleep=sleep)

    with pytest.raises(EnaUnavailable):
        ena.fetch_study("PRJEB1787")

    assert sleep.delays == [10.0, 20.0, 30.0, 30.0, 30.0]


def test_429_waits_as_long_as_retry_after_asks(
    client: EnaClient, mock: respx.MockRouter, sleep: RecordingSleep
) -> None:
    mock.get(SEARCH).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(200, json=[STUDY_ROW]),
        ]
    )

    client.fetch_study("PRJEB1787")

    assert sleep.delays == [7.0, 30.0]


def test_timeouts_are_retried_then_reported(
    client: EnaClient, mock: respx.MockRouter, sleep: RecordingSleep
) -> None:
    route = mock.get(SEARCH).mock(side_effect=httpx.ReadTimeout("timed out"))

    with pytest.raises(EnaUnavailable, match="ReadTimeout"):
        client.fetch_read_runs("PRJEB1787")

    assert route.call_count == 4
    assert len(sleep.delays) == 3


def test_connection_error_then_success(client: EnaClient, mock: respx.MockRouter) -> None:
    mock.get(SEARCH).mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=RUN_ROWS)])

    assert [run.run_accession for run in client.fetch_read_runs("PRJEB1787")] == ["ERR598955", "ERR599003"]


def test_truncated_json_is_retried(client: EnaClient, mock: respx.MockRouter) -> None:
    truncated = json.dumps([STUDY_ROW])[:-20].encode()
    mock.get(SEARCH).mock(
        side_effect=[httpx.Response(200, content=truncated), httpx.Response(200, json=[STUDY_ROW])]
    )

    assert client.fetch_study("PRJEB1787").study_accession == "PRJEB1787"


def test_fetch_read_runs_parses_enas_strings(client: EnaClient, mock: respx.MockRouter) -> None:
    route = mock.get(SEARCH).respond(200, json=RUN_ROWS)

    runs = {run.run_accession: run for run in client.fetch_read_runs("PRJEB1787")}

    assert params_of(route.calls.last.request) == {
        "result": "read_run",
        "query": 'study_accession="PRJEB1787" OR secondary_study_accession="PRJEB1787"',
        "fields": ",".join(READ_RUN_FIELDS),
        "format": "json",
        "limit": "0",
    }
    paired = runs["ERR599003"]
    assert paired.fastq_ftp == (
        "ftp.sra.ebi.ac.uk/vol1/fastq/ERR599/003/ERR599003/ERR599003_1.fastq.gz",
        "ftp.sra.ebi.ac.uk/vol1/fastq/ERR599/003/ERR599003/ERR599003_2.fastq.gz",
    )
    assert paired.fastq_urls == (
        "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR599/003/ERR599003/ERR599003_1.fastq.gz",
        "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR599/003/ERR599003/ERR599003_2.fastq.gz",
    )
    assert paired.fastq_md5 == ("dd0d2a5b4a9b6f0f5c3e1b1e1f7d2c3a", "5f0a3b2c1d4e6f708192a3b4c5d6e7f8")
    assert paired.fastq_bytes == (4325434211, 4428212001)
    assert paired.read_count == 55362147
    assert paired.base_count == 11072429400
    assert paired.secondary_sample_accession == "ERS492652"
    assert paired.library_layout == "PAIRED"

    empty = runs["ERR598955"]
    assert empty.fastq_ftp == empty.fastq_md5 == empty.fastq_urls == ()
    assert empty.fastq_bytes == ()
    assert empty.read_count is None and empty.base_count is None


def test_a_study_without_runs_is_an_empty_list(client: EnaClient, mock: respx.MockRouter) -> None:
    mock.get(SEARCH).respond(204)

    assert client.fetch_read_runs("PRJEB1787") == []


@pytest.mark.parametrize(
    ("ena_path", "url"),
    [
        (
            "ftp.sra.ebi.ac.uk/vol1/fastq/ERR1/ERR1_1.fastq.gz",
            "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR1/ERR1_1.fastq.gz",
        ),
        ("http://127.0.0.1:8080/fastq/ERR1_1.fastq.gz", "http://127.0.0.1:8080/fastq/ERR1_1.fastq.gz"),
        ("file:///data/fastq/ERR1_1.fastq.gz", "file:///data/fastq/ERR1_1.fastq.gz"),
        ("ftp://ftp.sra.ebi.ac.uk/vol1/x.fastq.gz", "ftp://ftp.sra.ebi.ac.uk/vol1/x.fastq.gz"),
    ],
)
def test_fastq_url_adds_https_only_when_there_is_no_scheme(ena_path: str, url: str) -> None:
    assert fastq_url(ena_path) == url


def test_a_client_passed_in_is_not_closed(mock: respx.MockRouter) -> None:
    mock.get(SEARCH).respond(200, json=[STUDY_ROW])
    shared = httpx.Client()
    with EnaClient(BASE, client=shared) as ena:
        ena.fetch_study("PRJEB1787")
    assert not shared.is_closed
    shared.close()
