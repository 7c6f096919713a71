"""The benchmark's jobs as Slurm sees them (squeue, and sacct for the jobs that have left the queue): a job's
comment is its submission key, so two jobs with one comment are a key submitted twice."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from bench._setup import run

LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def squeue_comments() -> dict[str, str]:
    """Job id -> comment of every job squeue lists (any user: the service's jobs may run as another)."""
    out = run(["squeue", "-a", "-h", "--states=all", "-o", "%i|%k"], check=False).stdout
    return {
        job_id.strip(): comment.strip()
        for job_id, _, comment in (line.partition("|") for line in out.splitlines())
        if job_id.strip()
    }


def slurm_jobs(started_at: datetime, jobs_root: Path) -> dict[str, tuple[str, str]]:
    """Job id -> (comment, state) of the benchmark's jobs (work directory under `jobs_root`) since `started_at`,
    from accounting and from squeue (a live job's comment may reach accounting only when it ends)."""
    since = (started_at - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    root = str(jobs_root) + "/"
    jobs: dict[str, tuple[str, str]] = {}
    sacct = run(
        ["sacct", "-a", "-X", "-n", "-P", "-S", since, "-o", "JobID,Comment,WorkDir,State"], check=False
    )
    squeue = run(["squeue", "-a", "-h", "--states=all", "-o", "%i|%k|%Z|%T"], check=False)
    for line in sacct.stdout.splitlines() + squeue.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 4 or not (parts[2] + "/").startswith(root):
            continue
        job_id, comment, _, state = (p.strip() for p in parts[:4])
        if comment or job_id not in jobs:
            jobs[job_id] = (comment, state.split()[0] if state else "")
    return jobs


def sacct_lines(job_ids: list[str]) -> list[str]:
    """Everything accounting says of these jobs, a line each (for evidence.txt)."""
    out = run(
        [
            "sacct",
            "-a",
            "-X",
            "-P",
            "-j",
            ",".join(job_ids),
            "-o",
            "JobID,JobName%60,Comment,State,Submit,Start,End,WorkDir",
        ],
        check=False,
    ).stdout
    return out.splitlines()
