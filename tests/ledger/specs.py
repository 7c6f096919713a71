"""Job specs the ledger tests submit to the real Slurm."""

from prefect_utils.job_spec import JobSpec


def spec_in(tmp_path, script: str, **overrides) -> JobSpec:
    """A job running `script` in `tmp_path`; `overrides` are any other JobSpec fields (the name among them)."""
    return JobSpec(name=overrides.pop("name", "test-job"), script=script, workdir=str(tmp_path), **overrides)
