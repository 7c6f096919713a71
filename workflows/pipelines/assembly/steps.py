"""The assembly pipeline's jobs, built from spec.yaml: the step protocol, the run's files, the data QA gate.

What each step runs, with what resources and on which files is spec.yaml's (fetch_reads → read_qc →
assembly → assembly_stats). This module adds what every step shares: the prelude that runs in the run's own
directory and refuses to start before the previous step's ``<step>.done`` marker, and the marker the step leaves.
Scripts are fixed text: every piece of data (URLs, md5s, paths, the accession, thread and memory figures) reaches
them through the job's environment, so a script is never generated, quoted or escaped, and a job spec hashes the
same way every time it is built.

No Django and no Prefect here: the flow turns ENA runs into :class:`RunInputs`, asks
:func:`build_step_spec` for each step's :class:`~prefect_utils.job_spec.JobSpec` and submits them in order.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from prefect_utils.job_spec import JobSpec
from workflows.ena.client import EnaReadRun
from workflows.ena.runs import PAIRED, RunInputs, fastq_problem
from workflows.pipelines.spec import ENA_FASTQ, PipelineSpec, load_spec

SUPPORTED_LIBRARY_STRATEGIES: frozenset[str] = frozenset({"WGS", "WGA"})
SUPPORTED_LIBRARY_SOURCES: frozenset[str] = frozenset({"METAGENOMIC", "GENOMIC"})
# MEGAHIT is a short-read assembler: long reads need another pipeline, not a failed job.
LONG_READ_PLATFORMS: frozenset[str] = frozenset({"OXFORD_NANOPORE", "PACBIO_SMRT"})

# MEGAHIT splits its read arguments on commas, and none of the tools expects whitespace in a path.
_UNSAFE_PATH_RE = re.compile(r"[\s,]")

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

SPEC: PipelineSpec = load_spec(Path(__file__).with_name("spec.yaml"))
STEPS: tuple[str, ...] = SPEC.step_names
# A dict, not a view of SPEC: tests put a script of their own in place of one step's.
STEP_SCRIPTS: dict[str, str] = {step.name: _PRELUDE + step.script + _FINISH for step in SPEC.steps}


@dataclass(frozen=True)
class StepResources:
    cpus: int = 1
    memory_mb: int = 1024
    time_limit_minutes: int = 60

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.memory_mb < 64 or self.time_limit_minutes < 1:
            raise ValueError(f"implausible step resources: {self}")


def _default_resources() -> Mapping[str, StepResources]:
    return MappingProxyType(
        {
            step.name: StepResources(
                step.resources.cpus, step.resources.memory_mb, step.resources.time_limit_minutes
            )
            for step in SPEC.steps
        }
    )


@dataclass(frozen=True)
class PipelineConfig:
    """Per-step Slurm resources and the pipeline's parameters: spec.yaml's, overridden by settings."""

    step_resources: Mapping[str, StepResources] = field(default_factory=_default_resources)
    parameters: Mapping[str, int] = field(default_factory=lambda: MappingProxyType(dict(SPEC.parameters)))
    partition: str | None = None
    # The jobs' PATH, where a site's tools are not in /usr/bin (a conda env, modules); None: Slurm client's default.
    job_path: str | None = None

    def __post_init__(self) -> None:
        for name, value in self.parameters.items():
            if value < 1:
                raise ValueError(f"pipeline parameter {name} must be at least 1")

    def resources(self, step: str) -> StepResources:
        _check_step(step)
        return self.step_resources[step]

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], base: PipelineConfig | None = None) -> PipelineConfig:
        """``base`` (spec.yaml's defaults) overridden by a settings dict, e.g.
        ``{"assembly": {"cpus": 16, "memory_mb": 128000, "time_limit_minutes": 4320}, "min_contig_len": 500,
        "partition": "bigmem"}``. Unknown keys raise ``ValueError`` so a typo in settings is not ignored.
        """
        config = base or cls()
        resource_keys = {f.name for f in fields(StepResources)}
        for key, value in mapping.items():
            if key in STEPS:
                if not isinstance(value, Mapping):
                    raise ValueError(f"pipeline setting {key!r} must be a mapping of {sorted(resource_keys)}")
                unknown = set(value) - resource_keys
                if unknown:
                    raise ValueError(f"unknown resource(s) {sorted(unknown)} for pipeline step {key!r}")
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
                    raise ValueError(
                        f"resources of pipeline step {key!r} must be integers, got {dict(value)}"
                    )
                resources = replace(config.resources(key), **dict(value))
                config = replace(
                    config, step_resources=MappingProxyType({**config.step_resources, key: resources})
                )
            elif key in SPEC.parameters:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"pipeline parameter {key!r} must be an integer, got {value!r}")
                config = replace(config, parameters=MappingProxyType({**config.parameters, key: value}))
            elif key == "partition":
                config = replace(config, partition=str(value) if value else None)
            elif key == "job_path":
                config = replace(config, job_path=str(value) if value else None)
            else:
                raise ValueError(f"unknown pipeline setting {key!r}")
        return config


@dataclass(frozen=True)
class RunLayout:
    """Where each step of one run reads and writes, all under ``run_dir``."""

    run_dir: Path
    run_accession: str
    library_layout: str

    @property
    def mates(self) -> tuple[int, ...]:
        return (1, 2) if self.library_layout == PAIRED else (1,)

    def file(self, name: str) -> tuple[Path, ...]:
        """Where spec.yaml's file `name` is for this run: one path per mate, or one."""
        return SPEC.files[name].paths(self.run_dir, self.run_accession, self.mates)

    @property
    def raw_reads(self) -> tuple[Path, ...]:
        return self.file("raw_reads")

    @property
    def qc_reads(self) -> tuple[Path, ...]:
        return self.file("qc_reads")

    @property
    def megahit_dir(self) -> Path:
        return self.file("megahit_dir")[0]

    @property
    def contigs_fa(self) -> Path:
        return self.file("contigs_fa")[0]

    @property
    def stats_tsv(self) -> Path:
        return self.file("stats_tsv")[0]

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
    step_spec = SPEC.step(step)
    environment = {
        "RUN_ACCESSION": run.run_accession,
        "RUN_DIR": str(workdir),
        "LIBRARY_LAYOUT": run.library_layout,
        "STEP_MARKER": str(layout.marker(step)),
        "REQUIRED_MARKER": str(layout.marker(step_spec.after)) if step_spec.after else "",
        "THREADS": str(resources.cpus),
    }
    for name in (*step_spec.inputs, *step_spec.outputs):
        if name == ENA_FASTQ:
            environment["FASTQ_COUNT"] = str(len(run.fastq_urls))
            for mate, url, md5 in zip(layout.mates, run.fastq_urls, run.fastq_md5, strict=True):
                environment[f"FASTQ_URL_{mate}"] = url
                environment[f"FASTQ_MD5_{mate}"] = md5.lower()
            continue
        file = SPEC.files[name]
        paths = layout.file(name)
        if file.per_mate:
            environment.update(
                {f"{file.variable}_{m}": str(p) for m, p in zip(layout.mates, paths, strict=True)}
            )
        else:
            environment[file.variable] = str(paths[0])
    for name in step_spec.parameters:
        environment[name.upper()] = str(config.parameters[name])
    for name, fraction in step_spec.memory_environment.items():
        environment[name] = str(int(resources.memory_mb * 1024 * 1024 * fraction))
    if config.job_path:
        environment["PATH"] = config.job_path
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


def check_run_usable(run: EnaReadRun) -> str | None:
    """The assembly's data QA gate: ``None`` if the run can be assembled, otherwise a reason a person can act on."""
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
    return fastq_problem(run)


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
