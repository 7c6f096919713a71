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
parameters (``min_contig_len`` as ``MIN_CONTIG_LEN``); a parameter is a positive integer or text (a path).

A step may also say on which Slurm ``partition`` it runs, which figures of its outputs are recorded when it has
completed (``metrics``: named parsers, see `metrics.py`), and ``when`` it runs at all (a condition on recorded
metrics, see `conditions.py`): a step whose condition is false is skipped, with the steps after it, and that is
an outcome, not a failure. A run step may say ``batch: {max_runs: N}``: the runs ready for it go into one Slurm job
of up to N runs, each run's script in its own environment one after the other, with a status per run (see
`prefect_utils.batch`); its resources are one run's, the time limit N times one run's.

At the top level: ``route`` says which runs the pipeline takes as their first pipeline (library strategy and
source, platforms it refuses); ``chain`` names pipelines that run on its outputs, each ``when`` a condition holds;
``consumes`` names the files a chained pipeline reads from the pipeline that chains it; ``results`` the files
the archive keeps of the analysis (every analysis ends with a step that moves them, see engine.py), and
``results_may_be_empty`` those that may be empty; ``ingest_function``
names a function of the pipeline's own folder (``module:function``) for what declared metrics cannot record.

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

from workflows.pipelines.conditions import Condition, ConditionError, parse_condition
from workflows.pipelines.metrics import PARSERS, PARSERS_WITH_FIELDS, MetricsSpec

ENA_FASTQ = "ena_fastq"
STUDY_SCOPE = "study"

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
    partition: str | None = None
    metrics: tuple[MetricsSpec, ...] = ()
    when: Condition | None = None
    scope: str = "run"  # "study": once per request, after every run of the pipeline has ended
    batch_max_runs: int = 0  # `batch: {max_runs: N}`: up to N runs in one job; 0: a job per run

    @property
    def per_study(self) -> bool:
        return self.scope == STUDY_SCOPE

    @property
    def metric_names(self) -> tuple[str, ...]:
        """`<step>.<metric>` of every number this step records."""
        return tuple(f"{self.name}.{name}" for spec in self.metrics for name in spec.names)


@dataclass(frozen=True)
class Route:
    """Which runs a pipeline takes first: ENA's library strategy and source, and platforms it refuses."""

    library_strategy: tuple[str, ...]
    library_source: tuple[str, ...]
    refused_platforms: tuple[str, ...] = ()

    def refusal(self, strategy: str, source: str, platform: str) -> str | None:
        """None if the run fits, otherwise what does not."""
        if strategy.upper() not in self.library_strategy:
            return f"library strategy {strategy or '(empty)'!r} is not {' or '.join(self.library_strategy)}"
        if source.upper() not in self.library_source:
            return f"library source {source or '(empty)'!r} is not {' or '.join(self.library_source)}"
        if platform.upper() in self.refused_platforms:
            return f"it refuses {platform} reads"
        return None


@dataclass(frozen=True)
class ChainLink:
    """Run `pipeline` on this pipeline's outputs once `after` (default: the last step) has completed, if `when`."""

    pipeline: str
    when: Condition | None
    after: str


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    version: str
    parameters: Mapping[str, int | str]  # a positive integer, or text (a path)
    files: Mapping[str, FileSpec]
    steps: tuple[StepSpec, ...]
    source: str
    route: Route | None = None
    chain: tuple[ChainLink, ...] = ()
    consumes: tuple[str, ...] = ()
    ingest_function: str | None = None
    results: tuple[str, ...] = ()  # the files of the analysis the archive keeps (moved by the datamove step)
    results_may_be_empty: tuple[str, ...] = ()  # those of them an analysis may leave empty

    @property
    def metric_names(self) -> frozenset[str]:
        return frozenset(name for step in self.steps for name in step.metric_names)

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
        key: value
        if isinstance(value, str) and value.strip()
        else _positive_int(value, source, "parameters", key)
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
    consumes = _names(top.get("consumes", []), source, "the top level", "consumes")
    for item in consumes:
        if item in files or not _NAME.match(item):
            raise PipelineSpecError(
                f"{source}: consumes: {item!r} is a file of the chaining pipeline, not one declared here"
            )
    raw_steps = top.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PipelineSpecError(f"{source}: steps: a non-empty list of steps")
    steps: list[StepSpec] = []
    produced: set[str] = {ENA_FASTQ, *consumes}
    for index, raw in enumerate(raw_steps):
        label = (
            raw.get("name") if isinstance(raw, dict) and isinstance(raw.get("name"), str) else f"#{index + 1}"
        )
        step = _parse_step(raw, source, f"step {label!r}", files, parameters, steps, produced, consumes)
        produced.update(step.outputs)
        steps.append(step)
    results = _names(top.get("results", []), source, "the top level", "results")
    outputs = {name for step in steps for name in step.outputs}
    for item in results:
        if item not in outputs:
            raise PipelineSpecError(f"{source}: results: {item!r} is not an output of a step")
    may_be_empty = _names(
        top.get("results_may_be_empty", []), source, "the top level", "results_may_be_empty"
    )
    for item in may_be_empty:
        if item not in results:
            raise PipelineSpecError(f"{source}: results_may_be_empty: {item!r} is not one of the results")
    route = _parse_route(top.get("route", None), source)
    chain = _parse_chain(top.get("chain", []), source, steps)
    ingest_function = top.get("ingest_function", None)
    if ingest_function is not None and (
        not isinstance(ingest_function, str)
        or not re.fullmatch(r"[a-z_][a-z0-9_]*:[a-z_][a-z0-9_]*", ingest_function)
    ):
        raise PipelineSpecError(
            f"{source}: ingest_function: `module:function` of the pipeline's folder, got {ingest_function!r}"
        )
    top.done()
    return PipelineSpec(
        name=name,
        version=version,
        parameters=MappingProxyType(parameters),
        files=MappingProxyType(files),
        steps=tuple(steps),
        source=source,
        route=route,
        chain=chain,
        consumes=consumes,
        ingest_function=ingest_function,
        results=results,
        results_may_be_empty=may_be_empty,
    )


def _parse_route(raw: Any, source: str) -> Route | None:
    if raw is None:
        return None
    fields = _Fields(raw, source, "route")
    route = Route(
        library_strategy=_upper_names(fields.get("library_strategy"), source, "route.library_strategy"),
        library_source=_upper_names(fields.get("library_source"), source, "route.library_source"),
        refused_platforms=_upper_names(
            fields.get("refused_platforms", []), source, "route.refused_platforms", empty=True
        ),
    )
    fields.done()
    return route


def _parse_chain(raw: Any, source: str, steps: list[StepSpec]) -> tuple[ChainLink, ...]:
    if not isinstance(raw, list):
        raise PipelineSpecError(f"{source}: chain: a list of {{pipeline, when, after}}, got {raw!r}")
    links = []
    for index, item in enumerate(raw):
        where = f"chain #{index + 1}"
        fields = _Fields(item, source, where)
        pipeline = fields.string("pipeline")
        run_steps = [step.name for step in steps if not step.per_study]
        after = fields.get("after", run_steps[-1] if run_steps else None)
        if after not in run_steps:
            raise PipelineSpecError(
                f"{source}: {where}: after: {after!r} is not a step of each run of this pipeline"
            )
        earlier = [step for step in steps[: [s.name for s in steps].index(after) + 1] if not step.per_study]
        when = _parse_when(fields.get("when", None), source, where, earlier)
        fields.done()
        links.append(ChainLink(pipeline=pipeline, when=when, after=after))
    return tuple(links)


def _parse_when(raw: Any, source: str, where: str, earlier: list[StepSpec]) -> Condition | None:
    """A condition on metrics that the steps in `earlier` record (checked here, so a typo fails at load)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise PipelineSpecError(f"{source}: {where}: when: a condition as text, got {raw!r}")
    try:
        condition = parse_condition(raw)
    except ConditionError as exc:
        raise PipelineSpecError(f"{source}: {where}: when: {exc}") from None
    known = {name for step in earlier for name in step.metric_names}
    unknown = sorted(condition.metrics - known)
    if unknown:
        raise PipelineSpecError(
            f"{source}: {where}: when: {', '.join(unknown)} is not a metric of an earlier step "
            f"(known: {', '.join(sorted(known)) or 'none'})"
        )
    return condition


def _parse_metrics(
    raw: Any, source: str, where: str, files: Mapping[str, FileSpec], outputs: tuple[str, ...]
) -> tuple[MetricsSpec, ...]:
    if not isinstance(raw, list):
        raise PipelineSpecError(f"{source}: {where}: metrics: a list of parsers, got {raw!r}")
    specs = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        at = f"{where}: metrics #{index + 1}"
        fields = _Fields(item, source, at)
        parser = fields.string("parser")
        if parser not in PARSERS:
            raise PipelineSpecError(f"{source}: {at}: parser: {parser!r} is not one of {', '.join(PARSERS)}")
        file = fields.string("file")
        if file not in outputs:
            raise PipelineSpecError(f"{source}: {at}: file: {file!r} is not an output of this step")
        if files[file].per_mate:
            raise PipelineSpecError(
                f"{source}: {at}: file: {file!r} is one file per mate; a parser reads one"
            )
        mapping: dict[str, str] = {}
        field: str | None = None
        column: int | None = None
        pattern: str | None = None
        if parser in PARSERS_WITH_FIELDS:
            mapping = fields.mapping("fields")
            if not mapping or not all(
                isinstance(k, str) and _NAME.match(k) and isinstance(v, str) and v for k, v in mapping.items()
            ):
                raise PipelineSpecError(f"{source}: {at}: fields: a mapping of metric: column or path")
        else:
            field = fields.string("field")
            if not _NAME.match(field):
                raise PipelineSpecError(f"{source}: {at}: field: lower_snake_case, got {field!r}")
            if parser == "table_count_by":
                column = _positive_int(fields.get("column"), source, at, "column")
                pattern = fields.get("pattern", None)
                if pattern is not None:
                    try:
                        if not isinstance(pattern, str) or re.compile(pattern).groups < 1:
                            raise re.error("needs a group")
                    except re.error as exc:
                        raise PipelineSpecError(
                            f"{source}: {at}: pattern: a regular expression with a group: {exc}"
                        ) from None
        fields.done()
        spec = MetricsSpec(parser, file, MappingProxyType(mapping), field, column, pattern)
        twice = seen & set(spec.names)
        if twice:
            raise PipelineSpecError(f"{source}: {at}: metric(s) {sorted(twice)} recorded twice by this step")
        seen.update(spec.names)
        specs.append(spec)
    return tuple(specs)


def _parse_step(
    raw: Any,
    source: str,
    where: str,
    files: Mapping[str, FileSpec],
    parameters: Mapping[str, int | str],
    earlier_steps: list[StepSpec],
    produced: set[str],
    consumes: tuple[str, ...] = (),
) -> StepSpec:
    earlier = [step.name for step in earlier_steps]
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
        if item != ENA_FASTQ and item not in files and item not in consumes:
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
    scope = fields.get("scope", "run")
    if scope not in ("run", STUDY_SCOPE):
        raise PipelineSpecError(f"{source}: {where}: scope: 'run' (the default) or 'study', got {scope!r}")
    if scope == STUDY_SCOPE:
        _check_study_step(source, where, files, after, earlier_steps, inputs, outputs)
    elif after is not None and next(s for s in earlier_steps if s.name == after).per_study:
        raise PipelineSpecError(
            f"{source}: {where}: after: {after!r} is a study step; a run's step cannot wait for it"
        )
    partition = fields.get("partition", None)
    if partition is not None and (
        not isinstance(partition, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", partition)
    ):
        raise PipelineSpecError(f"{source}: {where}: partition: a Slurm partition name, got {partition!r}")
    metrics = _parse_metrics(fields.get("metrics", []), source, where, files, outputs)
    when = _parse_when(fields.get("when", None), source, where, earlier_steps)
    batch_max_runs = _parse_batch(fields.get("batch", None), source, where, scope)
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
        partition=partition,
        metrics=metrics,
        when=when,
        scope=scope,
        batch_max_runs=batch_max_runs,
    )


# A batch job runs its runs one after another: its time limit is max_runs times one run's.
MAX_BATCH_RUNS = 500


def _parse_batch(raw: Any, source: str, where: str, scope: str) -> int:
    if raw is None:
        return 0
    if scope == STUDY_SCOPE:
        raise PipelineSpecError(
            f"{source}: {where}: batch: a study step runs once; only a run's step is batched"
        )
    fields = _Fields(raw, source, f"{where}: batch")
    max_runs = fields.get("max_runs")
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or not 2 <= max_runs <= MAX_BATCH_RUNS:
        raise PipelineSpecError(
            f"{source}: {where}: batch.max_runs: an integer from 2 to {MAX_BATCH_RUNS}, got {max_runs!r}"
        )
    fields.done()
    return max_runs


def _check_study_step(
    source: str,
    where: str,
    files: Mapping[str, FileSpec],
    after: str | None,
    earlier_steps: list[StepSpec],
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
) -> None:
    """A study step reads one file of each run (found below each run's directory) and writes files of its own
    below the request's `study` directory: none of them may depend on the run or the mate."""
    if after is not None and not next(s for s in earlier_steps if s.name == after).per_study:
        raise PipelineSpecError(
            f"{source}: {where}: after: a study step waits for every run's steps; it can name only another study step"
        )
    for item in (*inputs, *outputs):
        if item == ENA_FASTQ or "{" in files[item].path:
            raise PipelineSpecError(
                f"{source}: {where}: {item!r}: a study step reads and writes one file per run or study, "
                "without {run} or {mate} in its path"
            )
    run_outputs = {name for step in earlier_steps if not step.per_study for name in step.outputs}
    study_outputs = {name for step in earlier_steps if step.per_study for name in step.outputs}
    for item in inputs:
        if item not in run_outputs | study_outputs:
            raise PipelineSpecError(
                f"{source}: {where}: inputs: {item!r} is not written by a step of this pipeline"
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


def _upper_names(value: Any, source: str, where: str, *, empty: bool = False) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or (not value and not empty)
        or not all(isinstance(item, str) and item.strip() for item in value)
    ):
        raise PipelineSpecError(f"{source}: {where}: a list of ENA values, got {value!r}")
    return tuple(item.upper() for item in value)


def _names(value: Any, source: str, where: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PipelineSpecError(f"{source}: {where}: {field}: a list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise PipelineSpecError(f"{source}: {where}: {field}: a name twice in {value}")
    return tuple(value)
