"""The ENA stub's data: the fixtures it serves and the FASTQ files their runs name (served by ena_stub.py).

A data directory holds, for each study:

* ``<PRIMARY_ACCESSION>.study.json``: a one-element list, the study row as ``result=study`` returns it;
* ``<PRIMARY_ACCESSION>.read_run.json``: the study's runs as ``result=read_run`` rows (optional).

Every value is a string, as in all that ENA's portal API returns.

For every run whose ``fastq_ftp`` lists files, the stub serves files of those names from a FASTQ directory,
generating them with :func:`make_demo_reads.make_demo_run` when they are missing, and rewrites ``fastq_ftp`` to its
own URLs (or to ``file://`` paths). The fields ``fastq_md5``, ``fastq_bytes``, ``read_count`` and
``base_count`` are computed from the files when the fixture holds the placeholder ``"@stub"``; any other value is
served as written, so a fixture can carry a wrong md5 or a missing one on purpose. A run with ``"fastq_ftp": ""``
is served as ENA serves a run without FASTQ.

A study can also be generated instead of written (:func:`add_generated_study`, ``--generated-study`` of
ena_stub.py): ``PRJEB<n>`` with as many paired-end runs as asked, every run its own accession and sample, all
naming one pair of FASTQ files, so that a benchmark's study of 5,000 runs costs one pair of files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

if __package__:
    from .make_demo_reads import make_demo_run
else:
    from make_demo_reads import make_demo_run

FASTQ_PATH = "/fastq/"
PLACEHOLDER = "@stub"
DEFAULT_FASTQ_DIR = Path(tempfile.gettempdir()) / "emgapi-ena-stub" / "fastq"
GENERATED_ACCESSION = re.compile(r"^PRJEB(\d{6,9})$")  # ERP<n> needs six digits or more
MAX_GENERATED_RUNS = 999_999  # six digits of the run accessions

FastqScheme = Literal["http", "file"]


@dataclass
class StubData:
    """The fixtures, with the FASTQ fields already filled in for the files being served."""

    studies: list[dict[str, str]] = field(default_factory=list)
    runs: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    fastq_files: dict[str, Path] = field(default_factory=dict)

    def study_for(self, accessions: set[str]) -> dict[str, str] | None:
        for study in self.studies:
            own = {study.get("study_accession", "")} | set(
                study.get("secondary_study_accession", "").split(";")
            )
            if own & accessions:
                return study
        return None


def load_stub_data(
    data_dir: Path,
    fastq_dir: Path,
    server_root: str,
    fastq_scheme: FastqScheme = "http",
    *,
    generated: Sequence[tuple[str, int]] = (),
) -> StubData:
    """Read the fixtures in ``data_dir`` and prepare the FASTQ files they name in ``fastq_dir``; then add the
    ``generated`` studies, (accession, runs) each."""
    data = StubData()
    for study_file in sorted(Path(data_dir).glob("*.study.json")):
        rows = json.loads(study_file.read_text())
        if not isinstance(rows, list) or len(rows) != 1:
            raise ValueError(f"{study_file} must hold a JSON list with exactly one study row")
        study = _stringly(rows[0])
        primary = study_file.name.removesuffix(".study.json")
        if study.get("study_accession") != primary:
            raise ValueError(f"{study_file}: study_accession {study.get('study_accession')!r} != {primary!r}")
        data.studies.append(study)
        run_file = study_file.with_name(f"{primary}.read_run.json")
        runs = [_stringly(row) for row in json.loads(run_file.read_text())] if run_file.exists() else []
        data.runs[primary] = [
            _prepare_run(run, Path(fastq_dir), server_root, fastq_scheme, data) for run in runs
        ]
    for accession, runs_wanted in generated:
        add_generated_study(data, accession, runs_wanted, Path(fastq_dir), server_root, fastq_scheme)
    return data


def add_generated_study(
    data: StubData,
    accession: str,
    runs: int,
    fastq_dir: Path,
    server_root: str,
    fastq_scheme: FastqScheme = "http",
) -> None:
    """Study ``PRJEB<n>`` (secondary ``ERP<n>``) with ``runs`` paired-end metagenomic WGS runs ``ERR<n><i>``
    (i = 000001 ...), each from its own sample ``SAMEA<n><i>``, all naming the one pair of FASTQ files of
    ``ERR<n>000000`` (generated once, its fields computed once): as many runs as a benchmark wants, for the disk
    and start-up time of one."""
    match = GENERATED_ACCESSION.match(accession)
    if match is None:
        raise ValueError(
            f"a generated study's accession is PRJEB followed by 6 to 9 digits, not {accession!r}"
        )
    if not 1 <= runs <= MAX_GENERATED_RUNS:
        raise ValueError(f"a generated study has 1 to {MAX_GENERATED_RUNS:,} runs, not {runs}")
    if data.study_for({accession}) is not None:
        raise ValueError(f"study {accession} is served already")
    number = match.group(1)
    secondary = f"ERP{number}"
    first_public = "2024-01-15"
    data.studies.append(
        {
            "study_accession": accession,
            "secondary_study_accession": secondary,
            "study_title": f"Generated study of {runs:,} runs",
            "study_description": "Generated by scripts/ena_stub_data.py for benchmarks; not an ENA record.",
            "center_name": "EMGAPI-BENCH",
            "scientific_name": "metagenome",
            "tax_id": "256318",
            "first_public": first_public,
            "last_updated": first_public,
        }
    )
    files = f"ERR{number}000000"
    shared = _prepare_run(
        {
            "run_accession": files,
            "fastq_ftp": ";".join(f"ftp.sra.ebi.ac.uk/vol1/fastq/{files}_{mate}.fastq.gz" for mate in (1, 2)),
            **dict.fromkeys(("fastq_md5", "fastq_bytes", "read_count", "base_count"), PLACEHOLDER),
        },
        fastq_dir,
        server_root,
        fastq_scheme,
        data,
    )
    data.runs[accession] = [
        {
            **shared,
            "run_accession": f"ERR{number}{i:06d}",
            "study_accession": accession,
            "secondary_study_accession": secondary,
            "sample_accession": f"SAMEA{number}{i:06d}",
            "secondary_sample_accession": f"ERS{number}{i:06d}",
            "experiment_accession": f"ERX{number}{i:06d}",
            "scientific_name": "metagenome",
            "tax_id": "256318",
            "instrument_model": "Illumina NovaSeq 6000",
            "instrument_platform": "ILLUMINA",
            "library_strategy": "WGS",
            "library_source": "METAGENOMIC",
            "library_selection": "RANDOM",
            "library_layout": "PAIRED",
            "first_public": first_public,
        }
        for i in range(1, runs + 1)
    ]


def _stringly(row: dict[str, Any]) -> dict[str, str]:
    # ENA's JSON never carries numbers or nulls; a fixture that does is a fixture bug.
    for key, value in row.items():
        if not isinstance(value, str):
            raise ValueError(f"fixture field {key}={value!r} is not a string, unlike everything ENA returns")
    return dict(row)


def _prepare_run(
    run: dict[str, str], fastq_dir: Path, server_root: str, fastq_scheme: FastqScheme, data: StubData
) -> dict[str, str]:
    names = [path.rsplit("/", 1)[-1] for path in run.get("fastq_ftp", "").split(";") if path]
    if not names:
        return run
    accession = run["run_accession"]
    paths = [fastq_dir / name for name in names]
    if not all(path.exists() for path in paths):
        generated = {
            p.name: p for p in make_demo_run(fastq_dir, accession, seed=zlib.crc32(accession.encode()))
        }
        missing = [name for name in names if name not in generated]
        if missing:
            raise ValueError(
                f"{accession}: the stub can only generate {sorted(generated)}, the fixture names {missing}"
            )
    for path in paths:
        data.fastq_files[path.name] = path
    filled = dict(run)
    if fastq_scheme == "file":
        filled["fastq_ftp"] = ";".join(path.resolve().as_uri() for path in paths)
    else:
        filled["fastq_ftp"] = ";".join(f"{server_root}{FASTQ_PATH}{quote(path.name)}" for path in paths)
    computed = _measure(paths)
    for key, value in computed.items():
        if filled.get(key) == PLACEHOLDER:
            filled[key] = value
    return filled


def _measure(paths: list[Path]) -> dict[str, str]:
    md5s, sizes = [], []
    first_file_reads = 0
    bases = 0
    for index, path in enumerate(paths):
        raw = path.read_bytes()
        md5s.append(hashlib.md5(raw).hexdigest())
        sizes.append(str(len(raw)))
        lines = gzip.decompress(raw).decode().splitlines()
        bases += sum(len(line) for line in lines[1::4])
        if index == 0:
            # ENA's read_count counts fragments: the reads of the first mate file.
            first_file_reads = len(lines) // 4
    return {
        "fastq_md5": ";".join(md5s),
        "fastq_bytes": ";".join(sizes),
        "read_count": str(first_file_reads),
        "base_count": str(bases),
    }
