"""Every pipeline there is: a folder with a spec.yaml, found, checked together, and asked where a run goes.

The folders are this package's own (``workflows/pipelines/<name>/spec.yaml``) and those of a site's
``PIPELINE_DIRS``; adding a pipeline changes no file outside its folder. Each spec is checked alone when it is
read (spec.py); here they are checked together: a chain names a pipeline that exists, what a chained pipeline
``consumes`` is a file of the pipeline chaining it, the step names of a route are unique (a run's steps share a
directory and their ``<step>.done`` markers), and no pipeline chains itself back.

A run's *route* is the first pipeline whose ``route`` takes it, then the pipelines chained from it.

No Django and no Prefect here.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from workflows.ena.client import EnaReadRun
from workflows.ena.runs import fastq_problem
from workflows.pipelines.engine import PipelineDefinition
from workflows.pipelines.spec import ChainLink, FileSpec, PipelineSpec, PipelineSpecError, load_spec

BUILT_IN = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Catalogue:
    pipelines: Mapping[str, PipelineDefinition]

    def __getitem__(self, name: str) -> PipelineDefinition:
        return self.pipelines[name]

    @property
    def entry_pipelines(self) -> list[PipelineDefinition]:
        """The pipelines a run can be routed to, in name order (a run two of them take goes to the first)."""
        return [p for name, p in sorted(self.pipelines.items()) if p.spec.route is not None]

    def route(self, run: EnaReadRun) -> tuple[PipelineDefinition | None, str | None]:
        """The first pipeline of the run's route, or None and why no pipeline takes it (data QA's reason)."""
        pipeline, refusal = self.route_of(run.library_strategy, run.library_source, run.instrument_platform)
        if pipeline is None:
            return None, f"{run.run_accession or '(run without accession)'}: {refusal}"
        problem = fastq_problem(run)
        return (None, problem) if problem else (pipeline, None)

    def route_of(self, strategy: str, source: str, platform: str) -> tuple[PipelineDefinition | None, str]:
        """The first pipeline whose route takes a run of this strategy, source and platform, or why none does."""
        refusals = []
        for pipeline in self.entry_pipelines:
            assert pipeline.spec.route is not None
            refusal = pipeline.spec.route.refusal(strategy, source, platform)
            if refusal is None:
                return pipeline, ""
            refusals.append(f"{pipeline.name}: {refusal}")
        return None, f"no pipeline takes this run ({'; '.join(refusals) or 'no pipeline has a route'})"

    def check_run(self, run: EnaReadRun) -> str | None:
        """Data QA: None if some pipeline takes the run, otherwise why none does."""
        return self.route(run)[1]

    def chained(self, name: str) -> list[tuple[ChainLink, PipelineDefinition]]:
        """The pipelines chained from `name`, transitively, each with the link that leads to it, parents first."""
        found = []
        for link in self.pipelines[name].spec.chain:
            found.append((link, self.pipelines[link.pipeline]))
            found += self.chained(link.pipeline)
        return found

    def ingest_function(self, name: str) -> Callable[..., Any] | None:
        """The `ingest_function` of a pipeline's folder, imported from its file (once per process)."""
        pipeline = self.pipelines[name]
        if pipeline.spec.ingest_function is None:
            return None
        module_name, function_name = pipeline.spec.ingest_function.split(":")
        return _import_function(pipeline.folder / f"{module_name}.py", function_name, pipeline.spec.source)


@functools.cache
def _import_function(path: Path, function_name: str, source: str) -> Callable[..., Any]:
    spec = importlib.util.spec_from_file_location(f"emgapi_pipeline_{path.parent.name}_{path.stem}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise PipelineSpecError(f"{source}: ingest_function: {path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise PipelineSpecError(f"{source}: ingest_function: {path} has no {function_name}()")
    return function


def load_catalogue(extra_dirs: Iterable[Path | str] = ()) -> Catalogue:
    """Every pipeline folder of this package and of `extra_dirs`, checked together."""
    specs = {}
    for root in (BUILT_IN, *map(Path, extra_dirs)):
        for spec_file in sorted(Path(root).glob("*/spec.yaml")):
            spec = load_spec(spec_file)
            if spec.name != spec_file.parent.name:
                raise PipelineSpecError(f"{spec_file}: name: {spec.name!r} is not its folder's name")
            if spec.name in specs:
                raise PipelineSpecError(f"{spec_file}: a second pipeline named {spec.name!r}")
            specs[spec.name] = spec
    consumed: dict[str, dict[str, FileSpec]] = {name: {} for name in specs}
    for name, spec in specs.items():
        for link in spec.chain:
            if link.pipeline not in specs:
                raise PipelineSpecError(f"{spec.source}: chain: no pipeline named {link.pipeline!r}")
            child = specs[link.pipeline]
            available = {**consumed[name], **spec.files}
            missing = [file for file in child.consumes if file not in available]
            if missing:
                raise PipelineSpecError(
                    f"{child.source}: consumes: {missing} are not files of {name!r}, which chains it"
                )
            consumed[link.pipeline].update({file: available[file] for file in child.consumes})
    for name, spec in specs.items():
        if spec.route is not None:
            _check_route(specs, name, {step: name for step in spec.step_names}, [name])
    return Catalogue(
        MappingProxyType(
            {
                name: PipelineDefinition(
                    spec, Path(spec.source).parent, consumed_files=MappingProxyType(consumed[name])
                )
                for name, spec in specs.items()
            }
        )
    )


def _check_route(
    specs: Mapping[str, PipelineSpec], parent: str, seen: dict[str, str], path: list[str]
) -> None:
    """The pipelines chained from `parent`: none chains back, and no step name is used twice on the route."""
    for link in specs[parent].chain:
        child = specs[link.pipeline]
        if link.pipeline in path:
            raise PipelineSpecError(f"{specs[parent].source}: chain: {link.pipeline!r} chains back")
        for step in child.step_names:
            if step in seen:
                raise PipelineSpecError(
                    f"{child.source}: step {step!r} is also a step of {seen[step]!r} on the same route "
                    "(a run's steps share its directory and markers)"
                )
            seen[step] = link.pipeline
        _check_route(specs, link.pipeline, seen, [*path, link.pipeline])
