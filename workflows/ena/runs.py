"""What a pipeline takes from an ENA run, and the data QA every pipeline shares: usable FASTQ files.

A pipeline adds its own gate (which strategies, sources and platforms it accepts) and passes it to
:func:`~workflows.ena.study_sync.sync_study` as ``check_run``; the files' checks here apply to every pipeline.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from analyses.models import Run
from workflows.ena.client import EnaReadRun

PAIRED = "PAIRED"
SINGLE = "SINGLE"

_MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
_MATE_RE = re.compile(r"_([12])\.f(?:ast)?q(?:\.gz|\.bz2)?$")

RunCheck = Callable[[EnaReadRun], str | None]
"""A data QA gate: ``None`` if a pipeline can take the run, otherwise why not, in words a person can act on."""


class UnusableRun(ValueError):
    """A read run that the data QA gate turned away; the message says why."""


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


def fastq_problem(run: EnaReadRun) -> str | None:
    """Why the run's FASTQ files, as ENA lists them, cannot be used; ``None`` if they can."""
    selected = _select_fastq(run)
    return selected if isinstance(selected, str) else None


def run_inputs_from_ena(run: EnaReadRun, *, check_run: RunCheck = fastq_problem) -> RunInputs:
    """The pipeline inputs of a run that passes ``check_run``; raises :class:`UnusableRun` with its reason."""
    reason = check_run(run)
    if reason is not None:
        raise UnusableRun(reason)
    selected = _select_fastq(run)
    if isinstance(selected, str):
        raise UnusableRun(selected)
    return RunInputs(
        run_accession=run.run_accession,
        library_layout=run.library_layout.upper(),
        fastq_urls=tuple(run.fastq_urls[i] for i in selected),
        fastq_md5=tuple(run.fastq_md5[i].lower() for i in selected),
    )


def run_inputs(run: Run) -> RunInputs:
    """The inputs recorded on a synced run (the planner reads these, never ENA twice)."""
    return RunInputs(
        run_accession=run.accession,
        library_layout=run.library_layout,
        fastq_urls=tuple(run.fastq_urls),
        fastq_md5=tuple(run.fastq_md5),
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
