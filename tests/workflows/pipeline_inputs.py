"""The inputs of a demo run (ERR9000001, paired) as the pipelines' tests build jobs from them, and the pipelines."""

from pathlib import Path
from typing import Any

from workflows.ena.client import EnaReadRun
from workflows.ena.runs import RunInputs
from workflows.pipelines.analysis.pipeline import catalogue
from workflows.pipelines.metrics import read_metrics

MD5_1 = "32bcc3950615f3640a4e2c438faf729a"
MD5_2 = "c5f1e7a2d79558422efacb66d289c4cd"
URL_1 = "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR900/001/ERR9000001/ERR9000001_1.fastq.gz"
URL_2 = "https://ftp.sra.ebi.ac.uk/vol1/fastq/ERR900/001/ERR9000001/ERR9000001_2.fastq.gz"
PAIRED_RUN = RunInputs("ERR9000001", "PAIRED", (URL_1, URL_2), (MD5_1, MD5_2))

# The pipelines as the service reads them (one catalogue per process): a test that puts a script of its own in
# place of a step's patches the definition the reconciler uses.
ASSEMBLY = catalogue()["assembly"]
ASSEMBLY_ANALYSIS = catalogue()["assembly_analysis"]
STEPS = ASSEMBLY.steps
STEP_SCRIPTS = ASSEMBLY.scripts


def check_run_usable(run: EnaReadRun) -> str | None:
    """Data QA as the study sync applies it: None if some pipeline takes the run."""
    return catalogue().check_run(run)


def assembly_stats(path: Path) -> dict[str, Any]:
    """The assembly_stats step's metrics, read as the reconciler reads them (spec.yaml's `metrics`)."""
    values: dict[str, Any] = {}
    for declared in ASSEMBLY.spec.step("assembly_stats").metrics:
        values.update(read_metrics(declared, path))
    return values
