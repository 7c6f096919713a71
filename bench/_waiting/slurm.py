"""The Slurm side of bench/waiting.py: a private slurm.conf whose client-side filter holds every sbatch of the
benchmark's service, and what squeue and sacct say of the held jobs and of their end."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from bench._setup import chunks, run, scancel

HOLD_FILTER = """-- emgapi bench/waiting.py: every sbatch of the benchmark's service is submitted held (as with --hold).
function slurm_cli_setup_defaults(options, early_pass)
    return slurm.SUCCESS
end
function slurm_cli_pre_submit(options, pack_offset)
    options["hold"] = "true"
    return slurm.SUCCESS
end
function slurm_cli_post_submit(offset, job_id, step_id)
    return slurm.SUCCESS
end
"""


def hold_everything_conf(directory: Path) -> Path:
    """A private slurm.conf: the cluster's own, plus a client-side filter that holds every sbatch."""
    source = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    directory.mkdir(parents=True)
    text = source.read_text()
    if re.search(r"^\s*CliFilterPlugins\s*=", text, re.MULTILINE | re.IGNORECASE):
        raise SystemExit(f"{source} already sets CliFilterPlugins: cannot add the hold filter")
    conf = directory / "slurm.conf"
    conf.write_text(
        text + "\n# bench/waiting.py: hold every job at submission\nCliFilterPlugins=cli_filter/lua\n"
    )
    (directory / "cli_filter.lua").write_text(HOLD_FILTER)
    plugstack = source.parent / "plugstack.conf"
    if plugstack.is_file():
        shutil.copy(plugstack, directory / "plugstack.conf")
    return conf


def held_job_works(conf: Path, workdir: Path) -> None:
    """One job through the private configuration must be pending with reason JobHeldUser."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SLURM_CONF": str(conf)}
    proc = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={workdir}", "--output=/dev/null", "--time=1", "--wrap", "true"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"sbatch through the hold filter failed: {proc.stderr.strip()}")
    job_id = proc.stdout.strip().split(";", 1)[0]
    try:
        reason = run(["squeue", "--noheader", "-j", job_id, "-o", "%T %r"], check=False).stdout.strip()
    finally:
        scancel([job_id])
    if reason != "PENDING JobHeldUser":
        raise SystemExit(f"the hold filter does not hold jobs (squeue says {reason!r} for job {job_id})")


def squeue_reasons(job_ids: Iterable[str]) -> Counter[str]:
    reasons: Counter[str] = Counter()
    for part in chunks(sorted(set(job_ids))):
        out = run(["squeue", "--noheader", f"--jobs={','.join(part)}", "-o", "%T/%r"], check=False).stdout
        reasons.update(line.strip() for line in out.splitlines() if line.strip())
    return reasons


def sacct_end(job_id: str, since: datetime) -> tuple[str, datetime | None]:
    """(state, end) of a job from accounting; end None while it has not ended."""
    out = run(
        [
            "sacct",
            "-j",
            job_id,
            "-X",
            "-n",
            "-P",
            "-o",
            "State,End",
            f"--starttime={since.astimezone().strftime('%Y-%m-%dT%H:%M:%S')}",
        ],
        check=False,
    ).stdout.strip()
    if not out:
        return "", None
    state, _, end = out.splitlines()[0].partition("|")
    state = state.split()[0] if state else ""  # "CANCELLED by 0" -> "CANCELLED"
    if not end or end in ("Unknown", "None"):
        return state, None
    return state, datetime.fromisoformat(end).astimezone()  # local time, whole seconds
