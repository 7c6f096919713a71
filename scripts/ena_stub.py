"""A local stand-in for ENA's portal API and FASTQ server, for the demo and the tests.

It answers ``GET /ena/portal/api/search`` for ``result=study``, ``read_study`` and ``read_run`` in the
portal API's own shape (a JSON list of objects whose values are all strings; ``format=tsv`` too), from
fixture files in a data directory, and serves FASTQ files under ``GET /fastq/<file name>`` from a FASTQ
directory. The fixtures' format, and how the FASTQ files and their fields are made: scripts/ena_stub_data.py.

Like ENA, an accession it does not know gets ``200 []``, an unknown field or result gets a ``400`` with a JSON
body whose ``message`` explains it.

Usage::

    python scripts/ena_stub.py --data-dir demo/ena --port 0 --port-file /tmp/ena-stub.port \
        [--generated-study PRJEB770001:5000 ...]

``--generated-study ACCESSION:RUNS`` adds a study of that many runs, made up rather than read from a fixture
(scripts/ena_stub_data.py, ``add_generated_study``): bench/scale.py's study of 5,000 runs.

It prints the portal API base URL (``http://127.0.0.1:<port>/ena/portal/api``) once it is ready, and
writes the bound port to ``--port-file`` at that moment (write then rename, so a reader never sees a
partial file).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import signal
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

if __package__:
    from .ena_stub_data import (
        DEFAULT_FASTQ_DIR,
        FASTQ_PATH,
        GENERATED_ACCESSION,
        FastqScheme,
        StubData,
        load_stub_data,
    )
else:
    from ena_stub_data import (
        DEFAULT_FASTQ_DIR,
        FASTQ_PATH,
        GENERATED_ACCESSION,
        FastqScheme,
        StubData,
        load_stub_data,
    )

logger = logging.getLogger("ena_stub")

API_PATH = "/ena/portal/api"
SEARCH_PATH = f"{API_PATH}/search"

_TERM_RE = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_STUDY_KEYS = ("study_accession", "secondary_study_accession")
_ACCESSION_FIELD = {"study": "study_accession", "read_study": "study_accession", "read_run": "run_accession"}

# Fields ENA's portal API can return (a subset of its returnFields). A field the fixture lacks is served as "",
# as ENA serves a field with no value; a field outside these and the fixtures gets ENA's 400.
KNOWN_FIELDS: dict[str, frozenset[str]] = {
    "study": frozenset(
        "breed broker_name center_name cultivar datahub description first_public geo_accession isolate keywords "
        "last_updated parent_study_accession project_name scientific_name secondary_study_accession "
        "secondary_study_alias secondary_study_center_name status strain study_accession study_alias "
        "study_description study_name study_title submission_tool tag tax_division tax_id tax_lineage".split()
    ),
    "read_run": frozenset(
        "run_accession study_accession secondary_study_accession sample_accession secondary_sample_accession "
        "experiment_accession submission_accession tax_id scientific_name instrument_platform instrument_model "
        "library_name library_layout library_strategy library_source library_selection nominal_length read_count "
        "base_count center_name first_public last_updated experiment_title study_title sample_alias sample_title "
        "fastq_ftp fastq_md5 fastq_bytes fastq_aspera submitted_ftp submitted_md5 submitted_bytes "
        "submitted_format sra_ftp sra_md5 sra_bytes host_tax_id host_scientific_name lat lon location "
        "collection_date country".split()
    ),
}
KNOWN_FIELDS["read_study"] = KNOWN_FIELDS["study"]


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    data: StubData

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Tests clear this to hold FASTQ downloads open: a pipeline job then stays RUNNING until they set it.
        self.fastq_gate = threading.Event()
        self.fastq_gate.set()

    @property
    def root_url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # the address bound (its type allows the bytes a caller may pass in)
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.root_url}{API_PATH}"


class _Handler(BaseHTTPRequestHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._dispatch(send_body=False)

    def do_GET(self) -> None:
        self._dispatch(send_body=True)

    def _dispatch(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        if url.path.rstrip("/") == SEARCH_PATH:
            status, content_type, body = self._search(parse_qs(url.query, keep_blank_values=True))
        elif url.path.startswith(FASTQ_PATH):
            self._send_fastq(url.path.removeprefix(FASTQ_PATH), send_body)
            return
        else:
            status, content_type, body = _error(HTTPStatus.NOT_FOUND, f"No endpoint {url.path}", url.path)
        self._send(status, content_type, body, send_body)

    def _search(self, params: dict[str, list[str]]) -> tuple[int, str, bytes]:
        def param(name: str, default: str = "") -> str:
            return params.get(name, [default])[-1]

        result = param("result")
        if result not in _ACCESSION_FIELD:
            return _error(HTTPStatus.BAD_REQUEST, f"Invalid result: {result!r}", SEARCH_PATH)
        terms = _TERM_RE.findall(param("query"))
        if not terms:
            return _error(HTTPStatus.BAD_REQUEST, f"Invalid query: {param('query')!r}", SEARCH_PATH)
        try:
            limit = int(param("limit", "0") or "0")
        except ValueError:
            return _error(HTTPStatus.BAD_REQUEST, f"Invalid limit: {param('limit')!r}", SEARCH_PATH)

        accessions = {value for key, value in terms if key in _STUDY_KEYS}
        rows = self._rows(result, accessions)
        available = self._available_fields(result)
        requested = [f for f in param("fields").split(",") if f] or [_ACCESSION_FIELD[result]]
        unknown = [f for f in requested if f not in available]
        if unknown:
            return _error(
                HTTPStatus.BAD_REQUEST, f"Invalid fieldName(s) supplied: {','.join(unknown)}", SEARCH_PATH
            )
        # ENA always includes the result's accession field, whatever was asked for.
        columns = list(dict.fromkeys([_ACCESSION_FIELD[result], *requested]))
        selected = [{column: row.get(column, "") for column in columns} for row in rows]
        if limit > 0:
            selected = selected[:limit]
        if param("format", "tsv").lower() == "json":
            return HTTPStatus.OK, "application/json", json.dumps(selected).encode()
        return HTTPStatus.OK, "text/plain", _tsv(columns, selected)

    def _rows(self, result: str, accessions: set[str]) -> list[dict[str, str]]:
        study = self.server.data.study_for(accessions)
        if study is None:
            return []
        runs = self.server.data.runs.get(study["study_accession"], [])
        if result == "study":
            return [study]
        if result == "read_study":
            # read_study has a row per study and run: a study without reads is not in it.
            return [study for _ in runs]
        return runs

    def _available_fields(self, result: str) -> set[str]:
        data = self.server.data
        if result == "read_run":
            in_fixtures = {key for runs in data.runs.values() for run in runs for key in run}
        else:
            in_fixtures = {key for study in data.studies for key in study}
        return set(KNOWN_FIELDS[result]) | in_fixtures

    def _send_fastq(self, name: str, send_body: bool) -> None:
        path = self.server.data.fastq_files.get(name)
        if path is None:
            self._send(*_error(HTTPStatus.NOT_FOUND, f"No FASTQ file {name}", FASTQ_PATH + name), send_body)
            return
        self.server.fastq_gate.wait()
        self._send(HTTPStatus.OK, "application/octet-stream", path.read_bytes(), send_body)

    def _send(self, status: int, content_type: str, body: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def _error(status: HTTPStatus, message: str, path: str) -> tuple[int, str, bytes]:
    body = {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "status": int(status),
        "error": status.phrase,
        "message": message,
        "path": path,
    }
    return status, "application/json", json.dumps(body).encode()


def _tsv(columns: list[str], rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row[c] for c in columns] for row in rows)
    return out.getvalue().encode()


def make_server(
    data_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    fastq_dir: Path | str | None = None,
    fastq_scheme: FastqScheme = "http",
    generated: Sequence[tuple[str, int]] = (),
) -> StubServer:
    """Bind the stub and load its data (and the `generated` studies, (accession, runs) each); the caller runs
    ``serve_forever``."""
    server = StubServer((host, port), _Handler)
    try:
        server.data = load_stub_data(
            Path(data_dir),
            Path(fastq_dir) if fastq_dir else DEFAULT_FASTQ_DIR,
            server.root_url,
            fastq_scheme,
            generated=generated,
        )
    except BaseException:
        server.server_close()
        raise
    return server


def serve_in_thread(
    data_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    fastq_dir: Path | str | None = None,
    fastq_scheme: FastqScheme = "http",
    generated: Sequence[tuple[str, int]] = (),
) -> tuple[StubServer, str]:
    """Start the stub on a daemon thread; returns the server and the portal API base URL.

    Stop it with ``server.shutdown(); server.server_close()``.
    """
    server = make_server(
        data_dir, host, port, fastq_dir=fastq_dir, fastq_scheme=fastq_scheme, generated=generated
    )
    # A short poll interval keeps shutdown() quick; the server is otherwise idle-waiting in select().
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ena-stub", daemon=True
    )
    thread.start()
    return server, server.api_url


def parse_generated(text: str) -> tuple[str, int]:
    """``--generated-study``'s ``PRJEB<n>:<runs>`` as (accession, runs); ValueError naming what is wrong."""
    accession, _, runs = text.partition(":")
    if GENERATED_ACCESSION.match(accession) is None or not runs.isdigit() or int(runs) < 1:
        raise ValueError(f"expected PRJEB<6 to 9 digits>:<runs>, e.g. PRJEB770001:5000, not {text!r}")
    return accession, int(runs)


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local stand-in for ENA's portal API and FASTQ server.")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).resolve().parent.parent / "demo" / "ena"
    )
    parser.add_argument("--fastq-dir", type=Path, default=DEFAULT_FASTQ_DIR)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument(
        "--fastq-scheme",
        choices=["http", "file"],
        default="http",
        help="serve FASTQ URLs from this server (http) or as file:// paths to --fastq-dir",
    )
    parser.add_argument(
        "--generated-study",
        dest="generated",
        type=parse_generated,
        action="append",
        default=[],
        metavar="PRJEB<n>:RUNS",
        help="also serve a generated study of RUNS runs sharing one pair of FASTQ files (repeatable)",
    )
    args = parser.parse_args(argv)
    # The service's line format (emgapi/log_format.py, TEXT_FORMAT), which this script cannot import.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    server = make_server(
        args.data_dir,
        args.host,
        args.port,
        fastq_dir=args.fastq_dir,
        fastq_scheme=args.fastq_scheme,
        generated=args.generated,
    )

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if args.port_file:
            _write_port_file(args.port_file, server.server_address[1])
        logger.info("Serving the portal API at %s", server.api_url)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if args.port_file:
            args.port_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
