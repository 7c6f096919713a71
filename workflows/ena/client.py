"""Client for ENA's portal API (``/search``): studies and their read runs.

Kept free of Django and Prefect so it can be tested on its own; the base URL and limits are passed in.

What the portal API does, and how each case surfaces here:

* Values are always JSON strings, lists are ``;``-joined strings, and a missing value is ``""``
  (``"fastq_ftp": "a;b"``, ``"fastq_bytes": "123;456"``, ``"read_count": "1000"``).
* ``fastq_ftp`` has no URL scheme (``ftp.sra.ebi.ac.uk/vol1/fastq/...``); the same tree is served over
  HTTPS, so ``https://`` is added. An explicit scheme (a local stub's ``http://127.0.0.1:...`` or
  ``file://...``) is kept.
* An unknown accession is not an error for ENA: the answer is an empty result, either ``200 []``
  (or an empty body) or ``204 No Content``. Private and suppressed studies look exactly the same without
  credentials. All of these raise :class:`EnaStudyNotFound`.
* A ``400`` carries ENA's own explanation in a JSON body's ``message`` (for example
  ``Invalid fieldName(s) supplied: ...``). It means the request itself was wrong, not that the study is
  missing, so it raises :class:`EnaRequestRejected` with that message.
* Transport errors, timeouts, ``5xx``, ``429`` and an unparseable ``200`` body are retried with exponential
  backoff (honouring ``Retry-After`` up to a cap) and then raise :class:`EnaUnavailable`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from analyses.accessions import ENA_STUDY_PATTERN

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://www.ebi.ac.uk/ena/portal/api"

STUDY_ACCESSION_RE = re.compile(ENA_STUDY_PATTERN)  # the one definition, shared with models and API

STUDY_FIELDS: tuple[str, ...] = (
    "study_accession",
    "secondary_study_accession",
    "study_title",
    "study_description",
    "center_name",
    "scientific_name",
    "tax_id",
    "first_public",
    "last_updated",
)

READ_RUN_FIELDS: tuple[str, ...] = (
    "run_accession",
    "sample_accession",
    "secondary_sample_accession",
    "instrument_model",
    "instrument_platform",
    "library_strategy",
    "library_source",
    "library_layout",
    "fastq_ftp",
    "fastq_md5",
    "fastq_bytes",
    "read_count",
    "base_count",
)

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class EnaError(Exception):
    """Any failure to get an answer from ENA."""


class InvalidAccession(EnaError, ValueError):
    """The accession is not an ENA/INSDC study accession; nothing was sent to ENA."""


class EnaStudyNotFound(EnaError):
    """ENA has no public study under this accession (unknown, private or suppressed)."""

    def __init__(self, accession: str) -> None:
        self.accession = accession
        super().__init__(
            f"ENA has no public study {accession}: it is unknown, or private or suppressed "
            "(the portal API answers all of these with an empty result)"
        )


class EnaRequestRejected(EnaError):
    """ENA refused the request (4xx other than 429); ``message`` is ENA's own explanation."""

    def __init__(self, accession: str, status_code: int, message: str) -> None:
        self.accession = accession
        self.status_code = status_code
        self.message = message
        super().__init__(f"ENA rejected the request for {accession} with HTTP {status_code}: {message}")


class EnaUnavailable(EnaError):
    """ENA could not be reached or kept failing (network, timeout, 5xx, 429) after all retries."""


@dataclass(frozen=True)
class EnaStudy:
    study_accession: str
    secondary_study_accession: str | None
    title: str
    description: str
    center_name: str
    scientific_name: str
    tax_id: str
    first_public: str
    last_updated: str
    # ENA joins several secondary accessions with ";" (rare, but seen on old NCBI projects).
    secondary_study_accessions: tuple[str, ...] = ()


@dataclass(frozen=True)
class EnaReadRun:
    run_accession: str
    sample_accession: str
    secondary_sample_accession: str
    instrument_model: str
    instrument_platform: str
    library_strategy: str
    library_source: str
    library_layout: str
    fastq_ftp: tuple[str, ...]
    fastq_md5: tuple[str, ...]
    fastq_bytes: tuple[int, ...]
    read_count: int | None
    base_count: int | None

    @property
    def fastq_urls(self) -> tuple[str, ...]:
        """``fastq_ftp`` as fetchable URLs, in ENA's order (aligned with ``fastq_md5``)."""
        return tuple(fastq_url(path) for path in self.fastq_ftp)


def fastq_url(ena_path: str) -> str:
    """Turn one ``fastq_ftp`` entry into a URL: ENA's scheme-less paths are served over HTTPS."""
    if "://" in ena_path:
        return ena_path
    return "https://" + ena_path.lstrip("/")


def validate_study_accession(accession: str) -> str:
    """Return the accession normalised (stripped, upper case) or raise :class:`InvalidAccession`.

    Accepts BioProject (PRJEB/PRJNA/PRJDB) and study (ERP/SRP/DRP) accessions.
    """
    normalised = accession.strip().upper()
    if not STUDY_ACCESSION_RE.match(normalised):
        raise InvalidAccession(
            f"{accession!r} is not an ENA study accession (expected PRJEB/PRJNA/PRJDB or ERP/SRP/DRP "
            "followed by digits)"
        )
    return normalised


def _split(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.split(";") if part)


def _optional_int(value: str, field: str, accession: str) -> int | None:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise EnaError(f"ENA returned a non-integer {field}={value!r} for {accession}") from None


def parse_study(row: Mapping[str, Any]) -> EnaStudy:
    """Build an :class:`EnaStudy` from one row of a ``result=study`` JSON answer."""
    secondaries = _split(str(row.get("secondary_study_accession", "")))
    return EnaStudy(
        study_accession=str(row.get("study_accession", "")),
        secondary_study_accession=secondaries[0] if secondaries else None,
        title=str(row.get("study_title", "")),
        description=str(row.get("study_description", "")),
        center_name=str(row.get("center_name", "")),
        scientific_name=str(row.get("scientific_name", "")),
        tax_id=str(row.get("tax_id", "")),
        first_public=str(row.get("first_public", "")),
        last_updated=str(row.get("last_updated", "")),
        secondary_study_accessions=secondaries,
    )


def parse_read_run(row: Mapping[str, Any]) -> EnaReadRun:
    """Build an :class:`EnaReadRun` from one row of a ``result=read_run`` JSON answer."""
    accession = str(row.get("run_accession", ""))
    sizes = tuple(
        _optional_int(size, "fastq_bytes", accession) or 0 for size in _split(str(row.get("fastq_bytes", "")))
    )
    return EnaReadRun(
        run_accession=accession,
        sample_accession=str(row.get("sample_accession", "")),
        secondary_sample_accession=str(row.get("secondary_sample_accession", "")),
        instrument_model=str(row.get("instrument_model", "")),
        instrument_platform=str(row.get("instrument_platform", "")),
        library_strategy=str(row.get("library_strategy", "")),
        library_source=str(row.get("library_source", "")),
        library_layout=str(row.get("library_layout", "")),
        fastq_ftp=_split(str(row.get("fastq_ftp", ""))),
        fastq_md5=_split(str(row.get("fastq_md5", ""))),
        fastq_bytes=sizes,
        read_count=_optional_int(str(row.get("read_count", "")), "read_count", accession),
        base_count=_optional_int(str(row.get("base_count", "")), "base_count", accession),
    )


def _study_query(accession: str) -> str:
    return f'study_accession="{accession}" OR secondary_study_accession="{accession}"'


class EnaClient:
    """Synchronous ENA portal API client with retries.

    ``client`` lets tests (respx) or callers share an ``httpx.Client``; one passed in is not closed here.
    ``sleep`` is the pause between retries, replaceable so tests do not wait.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=timeout,
            follow_redirects=True,
            headers={"Accept": "application/json", "User-Agent": "emgapi (+ENA portal API client)"},
        )
        self._timeout = timeout

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> EnaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch_study(self, accession: str) -> EnaStudy:
        """The study with this primary (PRJ...) or secondary (ERP/SRP/DRP) accession."""
        accession = validate_study_accession(accession)
        rows = self._search(
            accession,
            {
                "result": "study",
                "query": _study_query(accession),
                "fields": ",".join(STUDY_FIELDS),
                "format": "json",
                "limit": 0,
            },
        )
        if not rows:
            raise EnaStudyNotFound(accession)
        # Prefer the row that matches the accession exactly if ENA ever returns more than one.
        for row in rows:
            if accession in (
                row.get("study_accession"),
                *_split(str(row.get("secondary_study_accession", ""))),
            ):
                return parse_study(row)
        return parse_study(rows[0])

    def fetch_read_runs(self, accession: str) -> list[EnaReadRun]:
        """Every public read run of the study, sorted by run accession (ENA's row order is not stable).

        An empty list means ENA lists no runs for that accession; call :meth:`fetch_study` first to tell
        an unknown study from one without reads.
        """
        accession = validate_study_accession(accession)
        rows = self._search(
            accession,
            {
                "result": "read_run",
                "query": _study_query(accession),
                "fields": ",".join(READ_RUN_FIELDS),
                "format": "json",
                # ENA's limit=0 means "all rows"; there is no pagination to fall back on.
                "limit": 0,
            },
        )
        return sorted((parse_read_run(row) for row in rows), key=lambda run: run.run_accession)

    def _search(self, accession: str, params: dict[str, str | int]) -> list[dict[str, Any]]:
        url = f"{self.base_url}/search"
        last_problem = ""
        for attempt in range(self.retries + 1):
            retry_after: float | None = None
            try:
                response = self._client.get(url, params=params, timeout=self._timeout)
            except httpx.TransportError as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in _RETRYABLE_STATUS:
                    last_problem = f"HTTP {response.status_code}"
                    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                elif response.status_code >= 400:
                    raise EnaRequestRejected(accession, response.status_code, _error_message(response))
                else:
                    rows = _rows(response)
                    if rows is not None:
                        return rows
                    last_problem = f"unparseable body from HTTP {response.status_code}"
            if attempt < self.retries:
                delay = self._delay(attempt, retry_after)
                logger.warning(
                    "ENA %s for %s (attempt %d of %d); retrying in %.1fs",
                    last_problem,
                    accession,
                    attempt + 1,
                    self.retries + 1,
                    delay,
                )
                self._sleep(delay)
        raise EnaUnavailable(
            f"ENA portal API at {self.base_url} did not answer the {params['result']} search for {accession} "
            f"after {self.retries + 1} attempts; last problem: {last_problem}"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = self.backoff_seconds * (2**attempt)
        if retry_after is not None:
            backoff = max(backoff, retry_after)
        return min(backoff, self.max_backoff_seconds)


def _rows(response: httpx.Response) -> list[dict[str, Any]] | None:
    """The result rows, ``[]`` for ENA's empty answers, or ``None`` when the body is not a JSON list."""
    if response.status_code == 204 or not response.content.strip():
        return []
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(body, list) or not all(isinstance(row, dict) for row in body):
        return None
    return body


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.text.strip() or response.reason_phrase


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds; it may be a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
