"""A pipeline described as data: `workflows/pipelines/<name>/spec.yaml`, read and checked once, on import.

The file says what a reviewer needs without reading Python: the steps in order, what each runs (its batch
script), with what (cpus, memory, time; how a step that ran out of memory or time is retried), and which files it
reads and writes. A mistake in it fails at load with the file, the step and the field named, never as a
KeyError in the middle of a submission.

Files are declared once, under ``files``, as paths below a run's directory; ``{run}`` is the run accession and
``{mate}`` makes a file per FASTQ mate (1, or 1 and 2). A step's ``inputs`` and ``outputs`` name them, and each
reaches the step's script as an environment variable: ``qc_reads`` as ``QC_READS_1`` (and ``QC_READS_2``),
``contigs_fa`` as ``CONTIGS_FA``. An input must be the output of an earlier step, or ``ena_fastq`` (the run's FASTQ
files at ENA: ``FASTQ_COUNT``, ``FASTQ_URL_<mate>``, ``FASTQ_MD5_<mate>``). A step's ``parameters`` name pipeline
parameters (``min_contig_len`` as ``MIN_CONTIG_LEN``).

No Django and no Prefect here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

ENA_FASTQ = "ena_fastq"

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_FILE_PATH = re.compile(r"^[A-Za-z0-9_.{}-]+(/[A-Za-z0-9_.{}-]+)*$")
_PLACEHOLDER = re.compile(r"\{([^}]*)\}")


class PipelineSpecError(ValueError):
    """A spec file that cannot be used; the message names the file, the step and the field."""


@dataclass(frozen=True)
class Resources:
    cpus: int
    memory_mb: int
    time_limit_minutes: int


@dataclass(frozen=True)
class Escalation:
    """OUT_OF_MEMORY and TIMEOUT: up to `max_escalations` more attempts, each with `factor` times the memory or time."""

    max_escalations: int
    factor: float


@dataclass(frozen=True)
class FileSpec:
    name: str
    path: str  # below the run's directory, with {run} and maybe {mate}

    @property
    def per_mate(self) -> bool:
        return "{mate}" in self.path

    @property
    def variable(self) -> str:
        return self.name.upper()

    def paths(self, run_dir: Path, run_accession: str, mates: tuple[int, ...]) -> tuple[Path, ...]:
        if not self.per_mate:
            return (run_dir / self.path.format(run=run_accession),)
        return tuple(run_dir / self.path.format(run=run_accession, mate=mate) for mate in mates)


@dataclass(frozen=True)
class StepSpec:
    name: str
    description: str
    after: str | None
    resources: Resources
    escalation: Escalation
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    parameters: tuple[str, ...]
    # Variables that carry the tool's own memory limit, in bytes, as a fraction of the job's memory.
    memory_environment: Mapping[str, float]
    script: str


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    version: str
    parameters: Mapping[str, int]
    files: Mapping[str, FileSpec]
    steps: tuple[StepSpec, ...]
    source: str

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    def step(self, name: str) -> StepSpec:
        for step in self.steps:
            if step.name == name:
                return step
        raise ValueError(f"unknown pipeline step {name!r}; steps are {', '.join(self.step_names)}")


def load_spec(path: Path) -> PipelineSpec:
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineSpecError(f"{path}: not YAML: {exc}") from None
    return parse_spec(document, source=str(path))


def parse_spec(document: Any, *, source: str = "<spec>") -> PipelineSpec:
    top = _Fields(document, source, "the top level")
    name = top.string("name")
    version = top.string("version")
    parameters = {
        key: _positive_int(value, source, "parameters", key)
        for key, value in top.mapping("parameters", required=False).items()
    }
    files: dict[str, FileSpec] = {}
    for key, value in top.mapping("files").items():
        where = f"files.{key}"
        if not isinstance(key, str) or not _NAME.match(key) or key == ENA_FASTQ:
            raise PipelineSpecError(
                f"{source}: {where}: a file name is lower_snake_case (and not {ENA_FASTQ!r})"
            )
        if not isinstance(value, str) or not _FILE_PATH.match(value) or ".." in value.split("/"):
            raise PipelineSpecError(
                f"{source}: {where}: a relative path below the run's directory, got {value!r}"
            )
        unknown = set(_PLACEHOLDER.findall(value)) - {"run", "mate"}
        if unknown:
            raise PipelineSpecError(
                f"{source}: {where}: unknown placeholder(s) {sorted(unknown)}; use {{run}}, {{mate}}"
            )
        files[key] = FileSpec(key, value)
    raw_steps = top.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PipelineSpecError(f"{source}: steps: a non-empty list of steps")
    steps: list[StepSpec] = []
    produced: set[str] = {ENA_FASTQ}
    for index, raw in enumerate(raw_steps):
        label = (
            raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else f"#{index + 1}"
        )
        step = _parse_step(
            raw, source, f"step {label!r}", files, parameters, [s.name for s in steps], produced
        )
        produced.update(step.outputs)
        steps.append(step)
    top.done()
    return PipelineSpec(
        name=name,
        version=version,
        parameters=MappingProxyType(parameters),
        files=MappingProxyType(files),
        steps=tuple(steps),
        source=source,
    )


def _parse_step(
    raw: Any,
    source: str,
    where: str,
    files: Mapping[str, FileSpec],
    parameters: Mapping[str, int],
    earlier: list[str],
    produced: set[str],
) -> StepSpec:
    fields = _Fields(raw, source, where)
    name = fields.string("name")
    if not _NAME.match(name):
        raise PipelineSpecError(f"{source}: {where}: name: lower_snake_case, got {name!r}")
    if name in earlier:
        raise PipelineSpecError(f"{source}: {where}: a second step of that name")
    after = fields.get("after", None)
    if after is not None and after not in earlier:
        raise PipelineSpecError(
            f"{source}: {where}: after: {after!r} is not an earlier step ({earlier or 'none'})"
        )
    resources_fields = _Fields(fields.get("resources"), source, f"{where}: resources")
    resources = Resources(
        cpus=_positive_int(resources_fields.get("cpus"), source, where, "resources.cpus"),
        memory_mb=_positive_int(
            resources_fields.get("memory_mb"), source, where, "resources.memory_mb", minimum=64
        ),
        time_limit_minutes=_positive_int(
            resources_fields.get("time_limit_minutes"), source, where, "resources.time_limit_minutes"
        ),
    )
    resources_fields.done()
    escalation_fields = _Fields(fields.get("escalation"), source, f"{where}: escalation")
    factor = escalation_fields.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 < factor <= 16:
        raise PipelineSpecError(
            f"{source}: {where}: escalation.factor: a number above 1 (at most 16), got {factor!r}"
        )
    max_escalations = escalation_fields.get("max_escalations")
    if (
        isinstance(max_escalations, bool)
        or not isinstance(max_escalations, int)
        or not 0 <= max_escalations <= 5
    ):
        raise PipelineSpecError(
            f"{source}: {where}: escalation.max_escalations: an integer from 0 to 5, got {max_escalations!r}"
        )
    escalation_fields.done()
    inputs = _names(fields.get("inputs", []), source, where, "inputs")
    for item in inputs:
        if item != ENA_FASTQ and item not in files:
            raise PipelineSpecError(f"{source}: {where}: inputs: {item!r} is not a declared file")
        if item not in produced:
            raise PipelineSpecError(
                f"{source}: {where}: inputs: {item!r} is not the output of an earlier step"
            )
    outputs = _names(fields.get("outputs", []), source, where, "outputs")
    for item in outputs:
        if item not in files:
            raise PipelineSpecError(f"{source}: {where}: outputs: {item!r} is not a declared file")
        if item in produced:
            raise PipelineSpecError(
                f"{source}: {where}: outputs: {item!r} is already written by an earlier step"
            )
    step_parameters = _names(fields.get("parameters", []), source, where, "parameters")
    for item in step_parameters:
        if item not in parameters:
            raise PipelineSpecError(f"{source}: {where}: parameters: {item!r} is not a pipeline parameter")
    memory_environment = fields.get("memory_environment", {})
    if not isinstance(memory_environment, dict) or not all(
        isinstance(key, str)
        and re.fullmatch(r"[A-Z][A-Z0-9_]*", key)
        and isinstance(value, float)
        and 0 < value <= 1
        for key, value in memory_environment.items()
    ):
        raise PipelineSpecError(
            f"{source}: {where}: memory_environment: a mapping of VARIABLE: fraction of the job's memory (0 to 1)"
        )
    script = fields.string("script")
    if "#!" in script.split("\n", 1)[0]:
        raise PipelineSpecError(
            f"{source}: {where}: script: the body only; the step's prelude adds the #! line"
        )
    description = fields.get("description", "")
    fields.done()
    return StepSpec(
        name=name,
        description=str(description).strip(),
        after=after,
        resources=resources,
        escalation=Escalation(max_escalations=max_escalations, factor=float(factor)),
        inputs=inputs,
        outputs=outputs,
        parameters=step_parameters,
        memory_environment=MappingProxyType(dict(memory_environment)),
        script=script,
    )


class _Fields:
    """A mapping read field by field; `done()` refuses the keys nobody asked for (a typo is an error)."""

    def __init__(self, value: Any, source: str, where: str) -> None:
        if not isinstance(value, dict):
            raise PipelineSpecError(f"{source}: {where}: a mapping, got {type(value).__name__}")
        self.value, self.source, self.where = value, source, where
        self.seen: set[str] = set()

    def get(self, key: str, default: Any = ...) -> Any:
        self.seen.add(key)
        if key not in self.value:
            if default is ...:
                raise PipelineSpecError(f"{self.source}: {self.where}: {key}: missing")
            return default
        return self.value[key]

    def string(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value.strip():
            raise PipelineSpecError(f"{self.source}: {self.where}: {key}: a non-empty string, got {value!r}")
        return value

    def mapping(self, key: str, *, required: bool = True) -> dict:
        value = self.get(key, ... if required else {})
        if not isinstance(value, dict):
            raise PipelineSpecError(
                f"{self.source}: {self.where}: {key}: a mapping, got {type(value).__name__}"
            )
        return value

    def done(self) -> None:
        unknown = sorted(set(map(str, self.value)) - self.seen)
        if unknown:
            raise PipelineSpecError(f"{self.source}: {self.where}: unknown field(s) {unknown}")


def _positive_int(value: Any, source: str, where: str, field: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PipelineSpecError(
            f"{source}: {where}: {field}: an integer of at least {minimum}, got {value!r}"
        )
    return value


def _names(value: Any, source: str, where: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PipelineSpecError(f"{source}: {where}: {field}: a list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise PipelineSpecError(f"{source}: {where}: {field}: a name twice in {value}")
    return tuple(value)
