"""The run of bench/chaos.py on the isolated stack: requests created over the kills, serve_flows killed (at random
moments, or aimed between a job's sbatch and the ledger's commit of its id) and started again, and the requests
watched until they finish."""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from bench._chaos.phases import request_phases
from bench._chaos.record import STUDIES, Kill, Posted
from bench._chaos.report import report
from bench._chaos.slurm import LIVE_STATES, slurm_jobs, squeue_comments
from bench._procs import cmdline, descendants, flow_processes, group_members, proc_state
from bench._report import say
from bench._setup import config_value, fresh_database, repo_state, seconds_value
from bench._stack import Stack

# The e2e tests' values (tests/stack.py), with the chaos test's shorter stall.
SERVICE_SETTINGS = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "SLURM_POLL_MIN_SECONDS": "0.5",
    "SLURM_POLL_MAX_SECONDS": "2",
    "WORKFLOWS_LINGER_SECONDS": "1",
    "WORKFLOWS_SWEEP_INTERVAL_SECONDS": "1",
    "WORKFLOWS_DISPATCH_INTERVAL_SECONDS": "1",
    "WORKFLOWS_STALL_SECONDS": "8",
}


class Chaos(Stack):
    """The stack of bench/chaos.py, its requests (`requests`) and its kills (`kills`)."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        super().__init__(tmp, args.database, SERVICE_SETTINGS)
        self.args = args
        self.rng = random.Random(args.seed)
        self.requests: list[Posted] = []
        self.kills: list[Kill] = []
        self.started_at = datetime.now().astimezone()

    # -- the run --

    def run(self) -> bool:
        """The kills and the figures; False when there is a finding (the temporary directory is then kept)."""
        args = self.args
        say(
            f"bench/chaos.py: seed {args.seed}; {args.kills} kills, {args.requests} requests, next kill "
            f"uniform({args.min_gap:g}, {args.max_gap:g}) s after a restart or uniform(0, {args.post_window:g}) s "
            f"after a new request, down uniform(0, {args.max_down:g}) s, {args.orphan_kills} aimed orphan kill(s); "
            f"repo at {repo_state()}"
        )
        self.min_job_age = seconds_value(config_value("MinJobAge"), 300)
        self.start()
        where = fresh_database(args.database)
        say(f"Django database {where} (fresh); JOBS_ROOT {self.jobs_root}; MinJobAge {self.min_job_age} s")
        self.start_serve_flows()
        say()

        # Every draw up front, in a fixed order: the seed replays the same schedule whatever the timing.
        gaps = [self.rng.uniform(args.min_gap, args.max_gap) for _ in range(args.kills)]
        downs = [self.rng.uniform(0, args.max_down) for _ in range(args.kills)]
        post_gaps = [self.rng.uniform(0, args.post_window) for _ in range(args.requests)]
        middle = range(args.kills // 5, max(args.kills // 5 + 1, 3 * args.kills // 5))
        aimed_from = sorted(self.rng.sample(middle, min(args.orphan_kills, len(middle))))
        last_post = 0
        self.t0 = time.time()

        for number in range(args.kills):
            # The kills left shared among the requests left: a request absorbs its share, or less if it ends.
            share = (args.kills - last_post) / (args.requests - len(self.requests) + 1)
            more = len(self.requests) < args.requests
            post = more and (not self.requests or not self.unfinished() or number - last_post >= share)
            if not post and not self.watch(gaps[number], until_idle=more):
                post = (
                    True  # the last request ended before this kill: the next one comes now, the kill after it
                )
            if post:
                self.post()
                last_post = number
                self.watch(post_gaps[len(self.requests) - 1])
            aimed = bool(aimed_from) and number >= aimed_from[0]
            kill = self.aimed_kill(number) if aimed else None
            if kill is not None and kill.orphans:
                aimed_from.pop(0)
                self.outage_until_gone(kill)
            else:
                kill = kill or self.kill(number)
                kill.down = downs[number]
                self.watch(kill.down)
            self.kills.append(kill)
            self.launch_serve_flows()
            self.show_kill(kill)
        while len(self.requests) < args.requests:  # fewer kills than requests
            self.post()
        last_kill = self.kills[-1].at
        say(f"last kill at +{last_kill - self.t0:.0f} s; waiting up to {args.deadline:g} s for every request")
        deadline = time.monotonic() + args.deadline
        while self.unfinished() and time.monotonic() < deadline:
            self.watch(1.0)
        return report(self, last_kill)

    def post(self) -> None:
        from analyses.services import create_assembly_analysis_request

        study = list(STUDIES)[len(self.requests) % len(STUDIES)]
        request = create_assembly_analysis_request(study_accession=study, requester=None)
        self.requests.append(Posted(request.pk, study, time.time()))
        say(f"  +{time.time() - self.t0:6.1f} s  request {request.pk} ({study}) created")

    def unfinished(self) -> list[Posted]:
        return [r for r in self.requests if r.finished_at is None]

    def watch(self, seconds: float, until_idle: bool = False) -> bool:
        """Sleep `seconds`, noting when requests finish (every 0.5 s); with `until_idle`, stop early (False) once
        every request has finished."""
        from analyses.models import AssemblyAnalysisRequest

        deadline = time.monotonic() + seconds
        while True:
            waiting = {r.request_id: r for r in self.unfinished()}
            if waiting:
                rows = AssemblyAnalysisRequest.objects.filter(pk__in=list(waiting)).values_list(
                    "pk", "status"
                )
                for pk, status in rows:
                    if status not in ("pending", "running"):
                        waiting[pk].finished_at = time.time()
                        waiting[pk].status = status
                if until_idle and not self.unfinished():
                    return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(0.5, left))

    # -- killing --

    def kill(self, number: int, aimed: bool = False) -> Kill:
        """SIGKILL to serve_flows' process group; the phases are read after it (nothing moves while it is down)."""
        server = self.flow_server
        flows = len(flow_processes(server.pid))
        at = time.time()
        server.kill()
        deadline = time.monotonic() + 5
        while (survivors := group_members(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return Kill(
            number + 1,
            at,
            request_phases([r.request_id for r in self.requests]),
            flows,
            aimed=aimed,
            survivors=len(survivors),
        )

    def aimed_kill(self, number: int) -> Kill | None:
        """Kill between a job's sbatch and the commit of its id; None if no such moment came in time.

        The ledger shows a batch (rows without a job id) from its first commit to its last; within it, the moment
        the batch's first sbatch process has exited, its job is on the cluster and only that process knew its id.
        """
        from prefect_utils.keys import submission_key
        from workflows.models import ClusterJob

        deadline = time.monotonic() + self.args.orphan_wait
        next_watch = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_watch:
                self.watch(0)
                next_watch = time.monotonic() + 0.5
            if ClusterJob.objects.filter(slurm_job_id__isnull=True, state="NEW").exists():
                kill = self.kill_after_sbatch(number, within=3.0)
                if kill is not None:
                    keys = {
                        submission_key(key, attempt)
                        for key, attempt in ClusterJob.objects.filter(
                            slurm_job_id__isnull=True, state="NEW"
                        ).values_list("key", "attempt")
                    }
                    kill.orphans = {c: j for j, c in squeue_comments().items() if c in keys}
                    if not kill.orphans:
                        say(f"  kill {number + 1}: aimed, but no job of the batch was left without its id")
                    return kill
            time.sleep(0.01)
        say(f"  kill {number + 1}: no submission window within {self.args.orphan_wait:g} s: a random kill")
        return None

    def kill_after_sbatch(self, number: int, within: float) -> Kill | None:
        """Kill the moment the first sbatch seen under serve_flows has exited; None if none ran in `within` s."""
        server = self.flow_server
        seen: set[int] = set()
        end = time.monotonic() + within
        while time.monotonic() < end:
            running = {
                pid
                for pid in descendants(server.pid)
                if cmdline(pid).split(" ", 1)[0].rsplit("/", 1)[-1] == "sbatch"
                and proc_state(pid) not in (None, "Z")
            }
            if seen and not seen & running:
                return self.kill(number, aimed=True)
            seen = seen or running
            time.sleep(0.002)  # an sbatch takes 10 ms or more
        return None

    def outage_until_gone(self, kill: Kill) -> None:
        """Stay down until the orphaned jobs have ended and left squeue: only sacct knows them then."""
        ids = sorted(kill.orphans.values())
        say(
            f"  kill {kill.number}: orphaned job(s) {', '.join(ids)} (on the cluster, not in the ledger); down until "
            f"they have left squeue (MinJobAge {self.min_job_age} s)"
        )
        start = time.monotonic()
        deadline = start + self.min_job_age + 300
        while time.monotonic() < deadline and set(ids) & set(squeue_comments()):
            self.watch(5)
        kill.down = time.monotonic() - start

    def show_kill(self, kill: Kill) -> None:
        phases = Counter(kill.phases.values())
        text = ", ".join(f"{phase} {n}" for phase, n in sorted(phases.items())) or "no request alive"
        say(
            f"  +{kill.at - self.t0:6.1f} s  kill {kill.number:>2}{' (aimed)' if kill.aimed else ''}: {text}; "
            f"{kill.flow_processes} flow process(es); down {kill.down:.1f} s"
            + (f"; {kill.survivors} SURVIVED" if kill.survivors else "")
        )

    # -- cleanup --

    def job_ids(self) -> list[str]:
        """The ledger's jobs and any other live job of the benchmark (to cancel them all)."""
        ids = set(super().job_ids())
        try:
            ids |= {
                job_id
                for job_id, (_, state) in slurm_jobs(self.started_at, self.jobs_root).items()
                if state in LIVE_STATES
            }
        except Exception as exc:
            say(f"cannot list the benchmark's jobs in Slurm: {exc}")
        return sorted(ids)
