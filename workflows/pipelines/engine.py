"""Jobs of any pipeline, built from its spec.yaml: the step protocol, the run's files, the site's settings.

What each step runs, with what resources and on which files is the spec's. This module adds what every step of
every pipeline shares: the prelude that runs in the run's own directory and refuses to start before the step
named in ``after`` has left its ``<step>.done`` marker, and the marker the step leaves. Scripts are fixed text:
every piece of data (URLs, md5s, paths, the accession, thread and memory figures) reaches them through the job's
environment, so a script is never generated, quoted or escaped, and a job spec hashes the same way every time it
is built.

No Django and no Prefect here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from prefect_utils.job_spec import JobSpec
from workflows.ena.runs import PAIRED, RunInputs
from workflows.pipelines.spec import ENA_FASTQ, FileSpec, PipelineSpec

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


# The step that ends every analysis (its name is `move_<pipeline>`): check that every result the spec declares is
# there and not empty (unless it may be), copy them with a manifest (path, size, sha256) into a directory beside
# the destination, check the copies against the sources, then rename it into place. A rerun finds the directory
# in place and only checks it against its manifest, so it changes nothing; a mismatch fails the step, saying which
# file. Everything it needs is in its environment (RESULTS_DIR, RESULT_COUNT, RESULT_PATH_<i>, RESULT_NAME_<i>,
# RESULT_MAY_BE_EMPTY_<i>).
_DATAMOVE = r"""
: "${RESULTS_DIR:?}" "${RESULT_COUNT:?}"
verify() {
    local dir=$1 name size sha actual
    while IFS=$'\t' read -r name size sha; do
        [[ "$name" == path ]] && continue
        actual="$(sha256sum "$dir/$name" 2>/dev/null | cut -d' ' -f1 || true)"
        if [[ "$actual" != "$sha" ]]; then
            echo "$RUN_ACCESSION: $dir/$name does not match its manifest (sha256 ${actual:-missing}, manifest $sha)" >&2
            return 1
        fi
    done < "$dir/manifest.tsv"
}
if [[ -d "$RESULTS_DIR" ]]; then
    verify "$RESULTS_DIR"
    echo "$RESULTS_DIR is in place and matches its manifest"
else
    for ((i = 1; i <= RESULT_COUNT; i++)); do
        path_var="RESULT_PATH_$i" empty_var="RESULT_MAY_BE_EMPTY_$i"
        path="${!path_var:?}"
        if [[ ! -f "$path" ]]; then
            echo "$RUN_ACCESSION: the analysis's output $path is missing" >&2
            exit 1
        fi
        if [[ ! -s "$path" && "${!empty_var:-0}" != 1 ]]; then
            echo "$RUN_ACCESSION: the analysis's output $path is empty" >&2
            exit 1
        fi
    done
    mkdir -p "$(dirname "$RESULTS_DIR")"
    staging="$(mktemp -d "$(dirname "$RESULTS_DIR")/.$(basename "$RESULTS_DIR").XXXXXX")"
    trap 'rm -rf "$staging"' EXIT
    printf 'path\tsize\tsha256\n' > "$staging/manifest.tsv"
    for ((i = 1; i <= RESULT_COUNT; i++)); do
        path_var="RESULT_PATH_$i" name_var="RESULT_NAME_$i"
        path="${!path_var}" name="${!name_var:?}"
        mkdir -p "$staging/$(dirname "$name")"
        cp -p "$path" "$staging/$name"
        printf '%s\t%s\t%s\n' "$name" "$(stat -c %s "$path")" "$(sha256sum "$path" | cut -d' ' -f1)" \
            >> "$staging/manifest.tsv"
    done
    verify "$staging"
    chmod 755 "$staging"
    mv -T "$staging" "$RESULTS_DIR"
    trap - EXIT
    echo "moved $RESULT_COUNT file(s) to $RESULTS_DIR"
fi
"""
DATAMOVE_SCRIPT = _PRELUDE + _DATAMOVE + _FINISH
DATAMOVE_RESOURCES = (1, 256, 60)  # cpus, memory_mb, time_limit_minutes: a copy


def datamove_step(pipeline: str, *, study: bool = False) -> str:
    """The name of the step that moves the results of `pipeline`'s analysis of a run (or of its study steps)."""
    return f"move_{pipeline}_study" if study else f"move_{pipeline}"


# The directory below a request's work directory where its study steps run: not a run accession.
STUDY_DIR = "study"


@dataclass(frozen=True)
class StepResources:
    cpus: int = 1
    memory_mb: int = 1024
    time_limit_minutes: int = 60
    partition: str | None = (
        None  # the step's own (spec.yaml's `partition`, or the site's); None: the pipeline's
    )

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.memory_mb < 64 or self.time_limit_minutes < 1:
            raise ValueError(f"implausible step resources: {self}")


@dataclass(frozen=True)
class PipelineConfig:
    """Per-step Slurm resources and the pipeline's parameters: spec.yaml's, overridden by settings."""

    step_resources: Mapping[str, StepResources]
    parameters: Mapping[str, int | str]
    partition: str | None = None
    # The jobs' PATH, where a site's tools are not in /usr/bin (a conda env, modules); None: Slurm client's default.
    job_path: str | None = None

    def __post_init__(self) -> None:
        for name, value in self.parameters.items():
            if isinstance(value, int) and value < 1:
                raise ValueError(f"pipeline parameter {name} must be at least 1")

    def resources(self, step: str) -> StepResources:
        if step not in self.step_resources:
            raise ValueError(f"unknown pipeline step {step!r}; steps are {', '.join(self.step_resources)}")
        return self.step_resources[step]

    def with_settings(self, mapping: Mapping[str, Any]) -> PipelineConfig:
        """This config overridden by a settings dict, e.g. ``{"assembly": {"cpus": 16, "memory_mb": 128000,
        "time_limit_minutes": 4320, "partition": "bigmem"}, "min_contig_len": 500, "partition": "standard"}``.
        Unknown keys raise ``ValueError`` so a typo in settings is not ignored.
        """
        config = self
        resource_keys = {f.name for f in fields(StepResources)}
        for key, value in mapping.items():
            if key in self.step_resources:
                if not isinstance(value, Mapping):
                    raise ValueError(f"pipeline setting {key!r} must be a mapping of {sorted(resource_keys)}")
                unknown = set(value) - resource_keys
                if unknown:
                    raise ValueError(f"unknown resource(s) {sorted(unknown)} for pipeline step {key!r}")
                numbers = {k: v for k, v in value.items() if k != "partition"}
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers.values()):
                    raise ValueError(
                        f"resources of pipeline step {key!r} must be integers, got {dict(value)}"
                    )
                if "partition" in value and not isinstance(value["partition"], str | None):
                    raise ValueError(f"the partition of pipeline step {key!r} must be a name")
                resources = replace(config.resources(key), **dict(value))
                config = replace(
                    config, step_resources=MappingProxyType({**config.step_resources, key: resources})
                )
            elif key in self.parameters:
                kind = type(self.parameters[key])
                if isinstance(value, bool) or not isinstance(value, kind):
                    raise ValueError(
                        f"pipeline parameter {key!r} must be {'an integer' if kind is int else 'text'}, got {value!r}"
                    )
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
    """Where each step of one run reads and writes, all under ``run_dir`` (shared by the pipelines of a route)."""

    run_dir: Path
    run_accession: str
    library_layout: str
    files: Mapping[str, FileSpec]

    @property
    def mates(self) -> tuple[int, ...]:
        return (1, 2) if self.library_layout == PAIRED else (1,)

    def file(self, name: str) -> tuple[Path, ...]:
        """Where the spec's file `name` is for this run: one path per mate, or one."""
        return self.files[name].paths(self.run_dir, self.run_accession, self.mates)

    def one_file(self, name: str) -> Path:
        return self.file(name)[0]

    def marker(self, step: str) -> Path:
        return self.run_dir / f"{step}.done"


@dataclass(frozen=True)
class PipelineDefinition:
    """One pipeline folder: its checked spec, and the files it reads from the pipeline that chains it."""

    spec: PipelineSpec
    folder: Path
    consumed_files: Mapping[str, FileSpec] = field(default_factory=lambda: MappingProxyType({}))
    # A dict, not a view of the spec: tests put a script of their own in place of one step's.
    scripts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.scripts:
            self.scripts.update({step.name: _PRELUDE + step.script + _FINISH for step in self.spec.steps})

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def steps(self) -> tuple[str, ...]:
        return self.spec.step_names

    @property
    def run_steps(self) -> tuple[str, ...]:
        """The steps of each run, in order (the others run once per request, for the study)."""
        return tuple(step.name for step in self.spec.steps if not step.per_study)

    def config(self, settings: Mapping[str, Any] | None = None) -> PipelineConfig:
        """spec.yaml's resources and parameters, overridden by `settings` (see `PipelineConfig.with_settings`)."""
        defaults = PipelineConfig(
            step_resources=MappingProxyType(
                {
                    step.name: StepResources(
                        step.resources.cpus,
                        step.resources.memory_mb,
                        step.resources.time_limit_minutes,
                        step.partition,
                    )
                    for step in self.spec.steps
                }
            ),
            parameters=MappingProxyType(dict(self.spec.parameters)),
        )
        return defaults.with_settings(settings or {})

    def layout(self, workdir: Path, run: RunInputs) -> RunLayout:
        return RunLayout(
            run_dir=Path(workdir),
            run_accession=run.run_accession,
            library_layout=run.library_layout,
            files=MappingProxyType({**self.consumed_files, **self.spec.files}),
        )

    def study_results(self) -> tuple[str, ...]:
        """The `results` written by study steps (moved once per request), not by a run's."""
        written = {name for step in self.spec.steps if step.per_study for name in step.outputs}
        return tuple(name for name in self.spec.results if name in written)

    def run_results(self) -> tuple[str, ...]:
        return tuple(name for name in self.spec.results if name not in self.study_results())

    def build_datamove_spec(
        self,
        run: RunInputs | None,
        workdir: Path,
        results_dir: Path,
        config: PipelineConfig,
        *,
        after: str,
        partition: str | None,
        label: str = "",
    ) -> JobSpec:
        """The job that moves this pipeline's declared `results` of one run (or, with `run` None, those of its study
        steps, `workdir` then being the request's study directory and `label` the study) into `results_dir` (see
        _DATAMOVE), once the step `after` has completed, on the data movers' `partition`."""
        workdir = Path(workdir)
        step = datamove_step(self.name, study=run is None)
        if run is not None:
            layout = self.layout(workdir, run)
            paths = [(path, name) for name in self.run_results() for path in layout.file(name)]
            environment = {"RUN_ACCESSION": run.run_accession, "LIBRARY_LAYOUT": run.library_layout}
        else:
            paths = [(workdir / self.spec.files[name].path, name) for name in self.study_results()]
            environment = {"RUN_ACCESSION": label}
        environment.update(
            {
                "RUN_DIR": str(workdir),
                "STEP_MARKER": str(workdir / f"{step}.done"),
                "REQUIRED_MARKER": str(workdir / f"{after}.done"),
                "RESULTS_DIR": str(results_dir),
                "RESULT_COUNT": str(len(paths)),
            }
        )
        for index, (path, name) in enumerate(paths, 1):
            environment[f"RESULT_PATH_{index}"] = str(path)
            environment[f"RESULT_NAME_{index}"] = str(path.relative_to(workdir))
            environment[f"RESULT_MAY_BE_EMPTY_{index}"] = (
                "1" if name in self.spec.results_may_be_empty else "0"
            )
        if config.job_path:
            environment["PATH"] = config.job_path
        cpus, memory_mb, minutes = DATAMOVE_RESOURCES
        return JobSpec(
            name=f"emgapi-{step}-{run.run_accession if run else label}",
            script=DATAMOVE_SCRIPT,
            partition=partition,
            cpus=cpus,
            memory_mb=memory_mb,
            time_limit_minutes=minutes,
            workdir=str(workdir),
            environment=environment,
            output_path=str(workdir / f"{step}.log"),
            error_path=None,
        )

    def build_study_step_spec(
        self, step: str, request_dir: Path, config: PipelineConfig, *, label: str
    ) -> JobSpec:
        """The job of a study step: it runs in `request_dir`/study, after every run of the pipeline has ended. An
        input written by the runs' steps reaches it as `<NAME>_PATH`, its path below each run's directory (the
        script looks in every run directory of `REQUEST_DIR`: a run that failed has none); a study file as `<NAME>`."""
        step_spec = self.spec.step(step)
        if not step_spec.per_study:
            raise ValueError(f"{step!r} is a step of each run, not of the study")
        request_dir = Path(request_dir)
        study_dir = request_dir / STUDY_DIR
        resources = config.resources(step)
        study_outputs = {name for s in self.spec.steps if s.per_study for name in s.outputs}
        environment = {
            "RUN_ACCESSION": label,
            "RUN_DIR": str(study_dir),
            "REQUEST_DIR": str(request_dir),
            "STEP_MARKER": str(study_dir / f"{step}.done"),
            "REQUIRED_MARKER": str(study_dir / f"{step_spec.after}.done") if step_spec.after else "",
            "THREADS": str(resources.cpus),
        }
        for name in step_spec.inputs:
            file = self.spec.files[name]
            if name in study_outputs:
                environment[file.variable] = str(study_dir / file.path)
            else:
                environment[f"{file.variable}_PATH"] = file.path
        for name in step_spec.outputs:
            environment[self.spec.files[name].variable] = str(study_dir / self.spec.files[name].path)
        return self._job(step, label, study_dir, environment, config)

    def build_step_spec(
        self, step: str, run: RunInputs, workdir: Path, config: PipelineConfig, *, after: str | None = None
    ) -> JobSpec:
        """The job for one step of one run. ``workdir`` is that run's own directory; ``after`` is the step of the
        chaining pipeline that the first step of a chained one waits for.

        Pure: touches no file. ``workdir`` must exist before the job is submitted (Slurm opens the log there).
        """
        step_spec = self.spec.step(step)
        workdir = Path(workdir)
        if not workdir.is_absolute():
            raise ValueError(f"workdir must be an absolute path, got {workdir}")
        if _UNSAFE_PATH_RE.search(str(workdir)):
            raise ValueError(f"workdir must not contain whitespace or commas, got {str(workdir)!r}")
        layout = self.layout(workdir, run)
        resources = config.resources(step)
        required = step_spec.after or after
        environment = {
            "RUN_ACCESSION": run.run_accession,
            "RUN_DIR": str(workdir),
            "LIBRARY_LAYOUT": run.library_layout,
            "STEP_MARKER": str(layout.marker(step)),
            "REQUIRED_MARKER": str(layout.marker(required)) if required else "",
            "THREADS": str(resources.cpus),
        }
        for name in (*step_spec.inputs, *step_spec.outputs):
            if name == ENA_FASTQ:
                environment["FASTQ_COUNT"] = str(len(run.fastq_urls))
                for mate, url, md5 in zip(layout.mates, run.fastq_urls, run.fastq_md5, strict=True):
                    environment[f"FASTQ_URL_{mate}"] = url
                    environment[f"FASTQ_MD5_{mate}"] = md5.lower()
                continue
            file = layout.files[name]
            paths = layout.file(name)
            if file.per_mate:
                environment.update(
                    {f"{file.variable}_{m}": str(p) for m, p in zip(layout.mates, paths, strict=True)}
                )
            else:
                environment[file.variable] = str(paths[0])
        return self._job(step, run.run_accession, workdir, environment, config)

    def _job(
        self, step: str, label: str, workdir: Path, environment: dict[str, str], config: PipelineConfig
    ) -> JobSpec:
        """The step's job in `workdir` (its log there too), with the step's parameters and memory figures added to
        `environment`, on the step's partition or the pipeline's."""
        step_spec = self.spec.step(step)
        resources = config.resources(step)
        for name in step_spec.parameters:
            environment[name.upper()] = str(config.parameters[name])
        for name, fraction in step_spec.memory_environment.items():
            environment[name] = str(int(resources.memory_mb * 1024 * 1024 * fraction))
        if config.job_path:
            environment["PATH"] = config.job_path
        return JobSpec(
            name=f"emgapi-{step}-{label}",
            script=self.scripts[step],
            partition=resources.partition or config.partition,
            cpus=resources.cpus,
            memory_mb=resources.memory_mb,
            time_limit_minutes=resources.time_limit_minutes,
            workdir=str(workdir),
            environment=environment,
            output_path=str(workdir / f"{step}.log"),
            error_path=None,
        )
