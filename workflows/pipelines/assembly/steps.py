"""What each step of the per-run assembly pipeline runs, where its files go, and with what resources.

This is the one place that knows the batch scripts. They are fixed text: every piece of data (URLs, md5s,
paths, the accession, thread and memory figures) reaches them through the job's environment, so a script
never has to be generated, quoted or escaped, and a job spec hashes the same way every time it is built.

Steps, in order, each in the run's own directory and each leaving ``<step>.done`` when it succeeded:

``fetch_reads``
    ``curl`` every FASTQ (http(s), ftp or file URLs) into ``raw/`` and check it against ENA's md5.
``read_qc``
    ``fastp`` on the raw reads (paired or single), writing QC'd reads and a JSON and HTML report to ``qc/``.
``assembly``
    ``megahit`` on the QC'd reads into ``assembly/megahit/final.contigs.fa``.
``assembly_stats``
    ``seqkit stats -a -T`` on the contigs into ``assembly/contigs.stats.tsv``.

No Django and no Prefect here: the flow turns ENA runs into :class:`RunInputs`, asks
:func:`build_step_spec` for each step's :class:`~prefect_utils.scheduler.JobSpec` and submits them in order.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from prefect_utils.scheduler import JobSpec
from workflows.ena import EnaReadRun

STEPS: tuple[str, ...] = ("fetch_reads", "read_qc", "assembly", "assembly_stats")

PAIRED = "PAIRED"
SINGLE = "SINGLE"

SUPPORTED_LIBRARY_STRATEGIES: frozenset[str] = frozenset({"WGS", "WGA"})
SUPPORTED_LIBRARY_SOURCES: frozenset[str] = frozenset({"METAGENOMIC", "GENOMIC"})
# MEGAHIT is a short-read assembler: long reads need another pipeline, not a failed job.
LONG_READ_PLATFORMS: frozenset[str] = frozenset({"OXFORD_NANOPORE", "PACBIO_SMRT"})

_MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_MATE_RE = re.compile(r"_([12])\.f(?:ast)?q(?:\.gz|\.bz2)?$")
# MEGAHIT splits its read arguments on commas, and none of the tools expects whitespace in a path.
_UNSAFE_PATH_RE = re.compile(r"[\s,]")
# Leave MEGAHIT's SdBG builder some room below the job's memory limit for everything else in the process.
MEGAHIT_MEMORY_FRACTION = 0.9

_PRELUDE = """#!/bin/bash
set -euo pipefail
export PATH="${PATH:-/usr/local/bin:/usr/bin:/bin}"
: "${RUN_ACCESSION:?}" "${RUN_DIR:?}" "${STEP_MARKER:?}"
cd "$RUN_DIR"
rm -f "$STEP_MARKER"
if [[ -n "${REQUIRED_MARKER:-}" && ! -f "$REQUIRED_MARKER" ]]; then
    echo "$RUN_ACCESSION: the previous step has not completed ($REQUIRED_MARKER is missing)" >&2
    exit 1
fi
"""

_FINISH = """
date -u +%Y-%m-%dT%H:%M:%SZ > "$STEP_MARKER"
"""

FETCH_READS_SCRIPT = (
    _PRELUDE
    + """: "${FASTQ_COUNT:?}"
md5_of() { md5sum "$1" | cut -d' ' -f1; }
for ((i = 1; i <= FASTQ_COUNT; i++)); do
    url_var="FASTQ_URL_$i" md5_var="FASTQ_MD5_$i" dest_var="RAW_READS_$i"
    url="${!url_var:?}" expected="${!md5_var:?}" dest="${!dest_var:?}"
    expected="${expected,,}"
    if [[ -f "$dest" && "$(md5_of "$dest")" == "$expected" ]]; then
        echo "$dest is already present with md5 $expected"
        continue
    fi
    mkdir -p "$(dirname "$dest")"
    curl -fsSL --retry 5 --retry-delay 10 --proto '=http,https,ftp,file' --output "$dest.part" "$url"
    actual="$(md5_of "$dest.part")"
    if [[ "$actual" != "$expected" ]]; then
        echo "$RUN_ACCESSION: md5 mismatch for $url: ENA lists $expected, the download has $actual" >&2
        rm -f "$dest.part"
        exit 1
    fi
    mv -f "$dest.part" "$dest"
    echo "fetched $url -> $dest (md5 $actual)"
done
"""
    + _FINISH
)

READ_QC_SCRIPT = (
    _PRELUDE
    + """: "${LIBRARY_LAYOUT:?}" "${RAW_READS_1:?}" "${QC_READS_1:?}" "${FASTP_JSON:?}" "${FASTP_HTML:?}" "${THREADS:?}"
mkdir -p "$(dirname "$QC_READS_1")" "$(dirname "$FASTP_JSON")" "$(dirname "$FASTP_HTML")"
args=(--in1 "$RAW_READS_1" --out1 "$QC_READS_1")
case "$LIBRARY_LAYOUT" in
PAIRED) args+=(--in2 "${RAW_READS_2:?}" --out2 "${QC_READS_2:?}" --detect_adapter_for_pe) ;;
SINGLE) ;;
*)
    echo "$RUN_ACCESSION: unsupported library layout '$LIBRARY_LAYOUT'" >&2
    exit 1
    ;;
esac
# Duplication statistics cost fastp about 1 GB of memory whatever the input size; they are not needed here.
fastp "${args[@]}" --json "$FASTP_JSON" --html "$FASTP_HTML" --report_title "$RUN_ACCESSION" \\
    --thread "$THREADS" --dont_eval_duplication
"""
    + _FINISH
)

ASSEMBLY_SCRIPT = (
    _PRELUDE
    + """: "${LIBRARY_LAYOUT:?}" "${QC_READS_1:?}" "${MEGAHIT_DIR:?}" "${CONTIGS_FA:?}" "${MIN_CONTIG_LEN:?}"
: "${THREADS:?}" "${MEGAHIT_MEMORY_BYTES:?}"
case "$LIBRARY_LAYOUT" in
PAIRED) reads=(-1 "$QC_READS_1" -2 "${QC_READS_2:?}") ;;
SINGLE) reads=(-r "$QC_READS_1") ;;
*)
    echo "$RUN_ACCESSION: unsupported library layout '$LIBRARY_LAYOUT'" >&2
    exit 1
    ;;
esac
# MEGAHIT refuses an existing output directory; one left here is from an attempt that did not finish.
rm -rf "$MEGAHIT_DIR"
mkdir -p "$(dirname "$MEGAHIT_DIR")"
megahit "${reads[@]}" --out-dir "$MEGAHIT_DIR" --num-cpu-threads "$THREADS" \\
    --memory "$MEGAHIT_MEMORY_BYTES" --min-contig-len "$MIN_CONTIG_LEN"
if [[ ! -f "$CONTIGS_FA" ]]; then
    echo "$RUN_ACCESSION: megahit finished without writing $CONTIGS_FA" >&2
    exit 1
fi
"""
    + _FINISH
)

ASSEMBLY_STATS_SCRIPT = (
    _PRELUDE
    + """: "${CONTIGS_FA:?}" "${STATS_TSV:?}" "${THREADS:?}"
mkdir -p "$(dirname "$STATS_TSV")"
seqkit stats --all --tabular --threads "$THREADS" "$CONTIGS_FA" > "$STATS_TSV.part"
mv -f "$STATS_TSV.part" "$STATS_TSV"
"""
    + _FINISH
)

STEP_SCRIPTS: Mapping[str, str] = {
    "fetch_reads": FETCH_READS_SCRIPT,
    "read_qc": READ_QC_SCRIPT,
    "assembly": ASSEMBLY_SCRIPT,
    "assembly_stats": ASSEMBLY_STATS_SCRIPT,
}


class UnusableRun(ValueError):
    """A read run that the data QA gate turned away; the message says why."""


@dataclass(frozen=True)
class StepResources:
    cpus: int = 1
    memory_mb: int = 1024
    time_limit_minutes: int = 60

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.memory_mb < 64 or self.time_limit_minutes < 1:
            raise ValueError(f"implausible step resources: {self}")


@dataclass(frozen=True)
class PipelineConfig:
    """Per-step Slurm resources and assembler settings. The defaults suit the tiny demo data."""

    fetch_reads: StepResources = StepResources(cpus=1, memory_mb=512, time_limit_minutes=60)
    read_qc: StepResources = StepResources(cpus=1, memory_mb=1024, time_limit_minutes=60)
    assembly: StepResources = StepResources(cpus=2, memory_mb=2048, time_limit_minutes=120)
    assembly_stats: StepResources = StepResources(cpus=1, memory_mb=512, time_limit_minutes=30)
    min_contig_len: int = 200
    partition: str | None = None

    def __post_init__(self) -> None:
        if self.min_contig_len < 1:
            raise ValueError("min_contig_len must be at least 1")

    def resources(self, step: str) -> StepResources:
        _check_step(step)
        resources: StepResources = getattr(self, step)
        return resources

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PipelineConfig:
        """Defaults overridden by a settings dict, e.g.
        ``{"assembly": {"cpus": 16, "memory_mb": 128000, "time_limit_minutes": 4320}, "min_contig_len": 500,
        "partition": "bigmem"}``. Unknown keys raise ``ValueError`` so a typo in settings is not ignored.
        """
        config = cls()
        resource_keys = {f.name for f in fields(StepResources)}
        for key, value in mapping.items():
            if key in STEPS:
                if not isinstance(value, Mapping):
                    raise ValueError(f"pipeline setting {key!r} must be a mapping of {sorted(resource_keys)}")
                unknown = set(value) - resource_keys
                if unknown:
                    raise ValueError(f"unknown resource(s) {sorted(unknown)} for pipeline step {key!r}")
                config = replace(config, **{key: replace(config.resources(key), **dict(value))})
            elif key == "min_contig_len":
                config = replace(config, min_contig_len=int(value))
            elif key == "partition":
                config = replace(config, partition=str(value) if value else None)
            else:
                raise ValueError(f"unknown pipeline setting {key!r}")
        return config


@dataclass(frozen=True)
class RunInputs:
    """What the pipeline needs from ENA for one run: the files to fetch and their checksums, in mate order."""

    run_accession: str
    library_layout: str
    fastq_urls: tuple[str, ...]
    fastq_md5: tuple[str, ...]

    def __post_init__(self) -> None:
        expected = {PAIRED: 2, SINGLE: 1}.get(self.library_layout)
        if expected is None:
            raise ValueError(f"{self.run_accession}: unsupported library layout {self.library_layout!r}")
        if len(self.fastq_urls) != expected or len(self.fastq_md5) != expected:
            raise ValueError(
                f"{self.run_accession}: a {self.library_layout} run needs {expected} FASTQ URL(s) and md5(s), "
                f"got {len(self.fastq_urls)} and {len(self.fastq_md5)}"
            )
        bad = [md5 for md5 in self.fastq_md5 if not _MD5_RE.match(md5)]
        if bad:
            raise ValueError(f"{self.run_accession}: not md5 digests: {bad}")


@dataclass(frozen=True)
class RunLayout:
    """Where each step of one run reads and writes, all under ``run_dir``."""

    run_dir: Path
    run_accession: str
    library_layout: str

    @property
    def mates(self) -> tuple[int, ...]:
        return (1, 2) if self.library_layout == PAIRED else (1,)

    @property
    def raw_reads(self) -> tuple[Path, ...]:
        return tuple(self.run_dir / "raw" / f"{self.run_accession}_{mate}.fastq.gz" for mate in self.mates)

    @property
    def qc_reads(self) -> tuple[Path, ...]:
        return tuple(self.run_dir / "qc" / f"{self.run_accession}_{mate}.fastq.gz" for mate in self.mates)

    @property
    def fastp_json(self) -> Path:
        return self.run_dir / "qc" / "fastp.json"

    @property
    def fastp_html(self) -> Path:
        return self.run_dir / "qc" / "fastp.html"

    @property
    def megahit_dir(self) -> Path:
        return self.run_dir / "assembly" / "megahit"

    @property
    def contigs_fa(self) -> Path:
        return self.megahit_dir / "final.contigs.fa"

    @property
    def stats_tsv(self) -> Path:
        return self.run_dir / "assembly" / "contigs.stats.tsv"

    def marker(self, step: str) -> Path:
        _check_step(step)
        return self.run_dir / f"{step}.done"

    def log(self, step: str) -> Path:
        _check_step(step)
        return self.run_dir / f"{step}.log"


@dataclass(frozen=True)
class AssemblyStats:
    contigs: int
    total_length: int
    n50: int
    largest: int
    min_len: int
    avg_len: float


def _check_step(step: str) -> None:
    if step not in STEPS:
        raise ValueError(f"unknown pipeline step {step!r}; steps are {', '.join(STEPS)}")


def run_layout(workdir: Path, run: RunInputs) -> RunLayout:
    return RunLayout(
        run_dir=Path(workdir), run_accession=run.run_accession, library_layout=run.library_layout
    )


def build_step_spec(step: str, run: RunInputs, workdir: Path, config: PipelineConfig) -> JobSpec:
    """The job for one step of one run. ``workdir`` is that run's own directory.

    Pure: touches no file. ``workdir`` must exist before the job is submitted (Slurm opens the log there).
    """
    _check_step(step)
    workdir = Path(workdir)
    if not workdir.is_absolute():
        raise ValueError(f"workdir must be an absolute path, got {workdir}")
    if _UNSAFE_PATH_RE.search(str(workdir)):
        raise ValueError(f"workdir must not contain whitespace or commas, got {str(workdir)!r}")
    layout = run_layout(workdir, run)
    resources = config.resources(step)
    previous = STEPS.index(step) - 1
    environment = {
        "RUN_ACCESSION": run.run_accession,
        "RUN_DIR": str(workdir),
        "LIBRARY_LAYOUT": run.library_layout,
        "STEP_MARKER": str(layout.marker(step)),
        "REQUIRED_MARKER": str(layout.marker(STEPS[previous])) if previous >= 0 else "",
        "THREADS": str(resources.cpus),
    }
    environment.update(_step_environment(step, run, layout, config, resources))
    return JobSpec(
        name=f"emgapi-{step}-{run.run_accession}",
        script=STEP_SCRIPTS[step],
        partition=config.partition,
        cpus=resources.cpus,
        memory_mb=resources.memory_mb,
        time_limit_minutes=resources.time_limit_minutes,
        workdir=str(workdir),
        environment=environment,
        output_path=str(layout.log(step)),
        error_path=None,
    )


def _step_environment(
    step: str, run: RunInputs, layout: RunLayout, config: PipelineConfig, resources: StepResources
) -> dict[str, str]:
    env: dict[str, str] = {}
    if step == "fetch_reads":
        env["FASTQ_COUNT"] = str(len(run.fastq_urls))
        for mate, url, md5, dest in zip(
            layout.mates, run.fastq_urls, run.fastq_md5, layout.raw_reads, strict=True
        ):
            env[f"FASTQ_URL_{mate}"] = url
            env[f"FASTQ_MD5_{mate}"] = md5.lower()
            env[f"RAW_READS_{mate}"] = str(dest)
    elif step == "read_qc":
        for mate, raw, qc in zip(layout.mates, layout.raw_reads, layout.qc_reads, strict=True):
            env[f"RAW_READS_{mate}"] = str(raw)
            env[f"QC_READS_{mate}"] = str(qc)
        env["FASTP_JSON"] = str(layout.fastp_json)
        env["FASTP_HTML"] = str(layout.fastp_html)
    elif step == "assembly":
        for mate, qc in zip(layout.mates, layout.qc_reads, strict=True):
            env[f"QC_READS_{mate}"] = str(qc)
        env["MEGAHIT_DIR"] = str(layout.megahit_dir)
        env["CONTIGS_FA"] = str(layout.contigs_fa)
        env["MIN_CONTIG_LEN"] = str(config.min_contig_len)
        env["MEGAHIT_MEMORY_BYTES"] = str(int(resources.memory_mb * 1024 * 1024 * MEGAHIT_MEMORY_FRACTION))
    else:
        env["CONTIGS_FA"] = str(layout.contigs_fa)
        env["STATS_TSV"] = str(layout.stats_tsv)
    return env


def check_run_usable(run: EnaReadRun) -> str | None:
    """The data QA gate: ``None`` if the run can be assembled, otherwise a reason a person can act on."""
    acc = run.run_accession or "(run without accession)"
    strategy = run.library_strategy.upper()
    if strategy not in SUPPORTED_LIBRARY_STRATEGIES:
        return (
            f"{acc}: library strategy {run.library_strategy or '(empty)'!r} is not assembled "
            f"(supported: {', '.join(sorted(SUPPORTED_LIBRARY_STRATEGIES))})"
        )
    source = run.library_source.upper()
    if source not in SUPPORTED_LIBRARY_SOURCES:
        return (
            f"{acc}: library source {run.library_source or '(empty)'!r} is not assembled "
            f"(supported: {', '.join(sorted(SUPPORTED_LIBRARY_SOURCES))})"
        )
    if run.instrument_platform.upper() in LONG_READ_PLATFORMS:
        return f"{acc}: {run.instrument_platform} long reads cannot be assembled by MEGAHIT"
    selected = _select_fastq(run)
    return selected if isinstance(selected, str) else None


def run_inputs_from_ena(run: EnaReadRun) -> RunInputs:
    """The pipeline inputs for a run that passes :func:`check_run_usable`; raises :class:`UnusableRun`."""
    reason = check_run_usable(run)
    if reason is not None:
        raise UnusableRun(reason)
    selected = _select_fastq(run)
    if isinstance(selected, str):
        raise UnusableRun(selected)
    urls = run.fastq_urls
    return RunInputs(
        run_accession=run.run_accession,
        library_layout=run.library_layout.upper(),
        fastq_urls=tuple(urls[i] for i in selected),
        fastq_md5=tuple(run.fastq_md5[i].lower() for i in selected),
    )


def _select_fastq(run: EnaReadRun) -> tuple[int, ...] | str:
    """Indices of the FASTQ files to use, in mate order, or the reason there are none usable."""
    acc = run.run_accession or "(run without accession)"
    files = run.fastq_ftp
    if not files:
        return f"{acc}: ENA lists no FASTQ files for this run"
    if len(run.fastq_md5) != len(files):
        return f"{acc}: ENA lists {len(files)} FASTQ file(s) but {len(run.fastq_md5)} md5 checksum(s)"
    bad = [md5 for md5 in run.fastq_md5 if not _MD5_RE.match(md5)]
    if bad:
        return f"{acc}: ENA's md5 checksum(s) {bad} are not 32-character hex digests"
    names = [path.rsplit("/", 1)[-1] for path in files]
    layout = run.library_layout.upper()
    if layout == SINGLE:
        if len(files) != 1:
            return (
                f"{acc}: a SINGLE run should have one FASTQ file, ENA lists {len(files)}: {', '.join(names)}"
            )
        return (0,)
    if layout == PAIRED:
        # ENA may add a third file of unpaired reads (and sorts it first): use only the _1/_2 mates.
        by_mate: dict[str, list[int]] = {"1": [], "2": []}
        for index, name in enumerate(names):
            match = _MATE_RE.search(name)
            if match:
                by_mate[match.group(1)].append(index)
        if len(by_mate["1"]) != 1 or len(by_mate["2"]) != 1:
            return (
                f"{acc}: a PAIRED run needs exactly one _1 and one _2 FASTQ file, "
                f"ENA lists {len(files)}: {', '.join(names)}"
            )
        return (by_mate["1"][0], by_mate["2"][0])
    return (
        f"{acc}: unsupported library layout {run.library_layout or '(empty)'!r} (expected PAIRED or SINGLE)"
    )


def parse_seqkit_stats(tsv_text: str) -> AssemblyStats:
    """Parse the output of ``seqkit stats -a -T`` for one FASTA file."""
    rows = list(csv.DictReader(io.StringIO(tsv_text), delimiter="\t", quoting=csv.QUOTE_NONE))
    if len(rows) != 1:
        raise ValueError(f"expected one row of seqkit stats, got {len(rows)}")
    row = rows[0]
    try:
        return AssemblyStats(
            contigs=int(row["num_seqs"]),
            total_length=int(row["sum_len"]),
            n50=int(row["N50"]),
            largest=int(row["max_len"]),
            min_len=int(row["min_len"]),
            avg_len=float(row["avg_len"]),
        )
    except KeyError as exc:
        raise ValueError(f"seqkit stats output lacks column {exc}; was it run with -a -T?") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"seqkit stats output has a non-numeric value: {exc}") from None


def read_assembly_stats(path: Path) -> AssemblyStats:
    return parse_seqkit_stats(Path(path).read_text())
