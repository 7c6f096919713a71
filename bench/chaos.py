"""Benchmark: kill -9 anywhere. The flow server dies at random moments of the requests' lives and comes back;
what does that cost, and does anything get lost or done twice?

    .venv/bin/python bench/chaos.py [--kills 50] [--requests 8] [--seed S] [--min-gap 1] [--max-gap 8]
                                    [--max-down 10] [--post-window 3] [--orphan-kills 1] [--deadline 600] [--keep]

The promise (DESIGN.md, "Idempotent, crash-safe submission", "Flows are reconcilers", "Recovery is a sweep over
requests"): a kill -9 of the orchestrator at any line never submits a job twice, never makes a domain row twice
and never loses a request. Goal: >= 50 kills, 0 duplicates, 0 stuck requests.

The whole service runs for real and isolated (bench/_stack.py: its own Prefect server and database, the ENA stub,
a fresh Django database) and the demo's jobs really run on the cluster (each is over in about a second).
`--requests` requests are created with `create_assembly_analysis_request` (the API's service: the request and its
trigger commit together, and the commit wakes serve_flows' dispatcher), cycling over the demo studies PRJEB00001 (2 runs,
2 analyses) and PRJEB00002 (data QA rejects one of its 2 runs: 1 analysis), spread over the kills: the next
request comes as soon as no request is unfinished (then the next kill comes right after it), or once the last one
has lived through its share of the kills left. So, until the last request has ended, every kill lands in a
request's life, in every phase of it: Scheduled and Pending in the runner (its PENDING window), planning,
submission, a pass lingering on short jobs, Suspended, Resuming, ingest, and "finishing" (the request is done,
its flow run not final yet). Undisturbed, a demo request is done in about 20 s; every kill stretches its life.

A killer sends SIGKILL to serve_flows' whole process group (os.killpg on the pid of the serve_flows it started:
the runner, every flow-run process, the service loop's squeue/sacct) and starts a new one after a random delay
(uniform 0..--max-down s). The next kill comes uniform(--min-gap, --max-gap) s after the restart, or, right after
a request was created, uniform(0, --post-window) s after it. All random draws are made up front from --seed
(always printed): a run can be replayed, up to what the timing of the machine changes.

`--orphan-kills` kills (default 1, at random positions in the middle of the run) are aimed instead: the killer
watches the ledger for rows without a Slurm job id (a batch between its first commit and the commit of its job
ids), then serve_flows' processes for an sbatch, and kills the moment that sbatch has exited: the job is on the
cluster, the ledger does not know its id (squeue, read after the kill, must list a job with such a row's key). serve_flows then stays down until that job has ended and left squeue (MinJobAge, 300 s on
the development cluster), so the next pass must find it through sacct and adopt it. If no window is caught within
--orphan-wait s, that kill falls back to a random one.

Right after each kill (nothing moves while serve_flows is down) the phase of every request is read: its flow
run's state in Prefect and, for a running one, the plan and the ledger. After the last kill, requests have --deadline s to finish; one that has not is
stuck. Then:

  * duplicate keys in Slurm: `sacct -a -X -P -S <start> -o JobID,Comment,WorkDir` plus squeue for live jobs,
    restricted to the benchmark's jobs (work directory under its JOBS_ROOT); a comment on two jobs is a
    submission key submitted twice. Jobs of the benchmark the ledger does not know are counted too;
  * duplicate domain rows: Assembly and Analysis rows per (request, run);
  * time to recover: from serve_flows' restart after the last kill that found a request unfinished to every
    request finished, and per request from the restart after the last kill of its life to its end (the outage
    itself is not counted);
  * flow runs left not final in Prefect (a finished request whose flow run stays Running forever);
  * per request: kills lived through, life time, reconciler passes, resumes, recoveries by the sweep, flow-run
    generations, analyses.

For a stuck request, a failed one, a flow run left not final or a duplicate the evidence (request, RequestProgress
and ClusterJob rows, the flow runs' state histories, the serve_flows log lines that name it) is written to
evidence.txt and the temporary directory is kept. At the end every job of the benchmark is cancelled and what it started is stopped by pid.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import fmt, say, say_goal
from bench._setup import (
    bench_parser,
    config_value,
    fresh_database,
    repo_state,
    run,
    seconds_value,
    wait_for_slurm,
)
from bench._stack import (
    Stack,
    add_stack_options,
    cmdline,
    descendants,
    flow_processes,
    group_members,
    proc_state,
    run_stack,
)

# Demo studies and the analyses each request of them ends with (PRJEB00002 has a run that data QA rejects).
STUDIES = {"PRJEB00001": 2, "PRJEB00002": 1}
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
PHASES = (
    "undispatched",
    "scheduled",
    "pending",
    "planning",
    "submission",
    "pass",
    "lingering",
    "ingest",
    "suspended",
    "resuming",
    "finishing",
)


@dataclass
class Kill:
    number: int
    at: float  # time.time()
    phases: dict[int, str]  # unfinished request -> its phase, read just before
    flow_processes: int
    aimed: bool = False
    orphans: dict[str, str] = field(default_factory=dict)  # submission key -> Slurm job id
    down: float = 0.0
    survivors: int = 0


@dataclass
class Posted:
    request_id: int
    study: str
    at: float
    finished_at: float | None = None
    status: str = "pending"


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--kills", type=int, default=50, help="kills of serve_flows (default 50)")
    parser.add_argument(
        "--requests", type=int, default=8, help="requests, cycling over PRJEB00001, PRJEB00002 (default 8)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of every random draw (default: new one)")
    parser.add_argument(
        "--min-gap", type=float, default=1.0, help="least seconds from a restart to the next kill (default 1)"
    )
    parser.add_argument(
        "--max-gap",
        type=float,
        default=8.0,
        help="most seconds from a restart to the next kill (default 8)",
    )
    parser.add_argument(
        "--max-down", type=float, default=10.0, help="most seconds serve_flows stays dead (default 10)"
    )
    parser.add_argument(
        "--post-window",
        type=float,
        default=3.0,
        help="a kill comes uniform(0, this) s after each new request (default 3: its PENDING window)",
    )
    parser.add_argument(
        "--orphan-kills",
        type=int,
        default=1,
        help="kills aimed between a job's sbatch and the ledger's commit of its id, each followed by an "
        "outage until the job has left squeue (MinJobAge) (default 1)",
    )
    parser.add_argument(
        "--orphan-wait",
        type=float,
        default=180.0,
        help="seconds an aimed kill waits for a submission window before it falls back to a random kill",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=600.0,
        help="seconds after the last kill within which every request must finish (default 600)",
    )
    add_stack_options(parser, "emgapi_bench_chaos")
    args = parser.parse_args()
    if args.kills < 1 or args.requests < 1 or not 0 <= args.min_gap <= args.max_gap:
        parser.error("--kills and --requests must be positive, 0 <= --min-gap <= --max-gap")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big") % 1_000_000

    wait_for_slurm()
    try:
        run_stack(
            lambda tmp: Chaos(args, tmp),
            name="chaos",
            keep=args.keep,
            logs="serve_flows*.log, prefect_server.log, ena_stub.log; evidence.txt if any",
        )
    finally:
        say(f"seed {args.seed} (replay with --seed {args.seed})")
    return 0


class Chaos(Stack):
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
        return self.report(last_kill)

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
        server = self.serve_flows
        flows = len(flow_processes(server.pid))
        at = time.time()
        server.kill()
        deadline = time.monotonic() + 5
        while (survivors := group_members(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return Kill(number + 1, at, self.phases(), flows, aimed=aimed, survivors=len(survivors))

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
                    kill.orphans = {c: j for j, c in self.squeue_comments().items() if c in keys}
                    if not kill.orphans:
                        say(f"  kill {number + 1}: aimed, but no job of the batch was left without its id")
                    return kill
            time.sleep(0.01)
        say(f"  kill {number + 1}: no submission window within {self.args.orphan_wait:g} s: a random kill")
        return None

    def kill_after_sbatch(self, number: int, within: float) -> Kill | None:
        """Kill the moment the first sbatch seen under serve_flows has exited; None if none ran in `within` s."""
        server = self.serve_flows
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
        while time.monotonic() < deadline and set(ids) & set(self.squeue_comments()):
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

    # -- reading state --

    def phases(self) -> dict[int, str]:
        """Where each request is: its flow run's state, and for a running one the plan and ledger. A finished
        request whose flow run is not final yet (its process was writing the end of the run) is "finishing"."""
        from prefect.client.schemas.objects import StateType

        from analyses.models import Analysis, AssemblyAnalysisRequest
        from workflows.models import ClusterJob, PlanStep

        requests = list(AssemblyAnalysisRequest.objects.filter(pk__in=[r.request_id for r in self.requests]))
        runs = self.flow_runs(r.flow_run_id for r in requests if r.flow_run_id)
        finished = [r for r in requests if r.is_terminal]
        requests = [r for r in requests if not r.is_terminal]
        phases = {
            r.pk: "finishing"
            for r in finished
            if (run_ := runs.get(r.flow_run_id)) is not None
            and run_.state is not None
            and not run_.state.is_final()
        }
        if not requests:
            return phases
        steps = defaultdict(list)
        for step in PlanStep.objects.filter(plan__request__in=requests).values(
            "plan__request_id", "key", "run_id"
        ):
            steps[step["plan__request_id"]].append(step)
        jobs = defaultdict(list)
        for job in (
            ClusterJob.objects.filter(request__in=requests)
            .order_by("pk")
            .values("request_id", "key", "slurm_job_id", "state")
        ):
            jobs[job["request_id"]].append(job)
        analysed = set(Analysis.objects.filter(request__in=requests).values_list("request_id", "run_id"))
        for request in requests:
            flow_run = runs.get(request.flow_run_id) if request.flow_run_id else None
            if flow_run is None or flow_run.state is None:
                phases[request.pk] = "undispatched"
                continue
            state = flow_run.state
            if state.type == StateType.PAUSED:
                phase = "suspended"
            elif state.type == StateType.SCHEDULED:
                phase = "resuming" if state.name == "Resuming" else "scheduled"
            elif state.type == StateType.PENDING:
                phase = "pending"
            elif state.type == StateType.RUNNING:
                phase = _running_phase(request.pk, steps[request.pk], jobs[request.pk], analysed)
            else:
                phase = (state.name or state.type.value).lower()
            phases[request.pk] = phase
        return phases

    def squeue_comments(self) -> dict[str, str]:
        """Job id -> comment of every job squeue lists (any user: the service's jobs may run as another)."""
        out = run(["squeue", "-a", "-h", "--states=all", "-o", "%i|%k"], check=False).stdout
        return {
            job_id.strip(): comment.strip()
            for job_id, _, comment in (line.partition("|") for line in out.splitlines())
            if job_id.strip()
        }

    def slurm_jobs(self) -> dict[str, tuple[str, str]]:
        """Job id -> (comment, state) of the benchmark's jobs (work directory under its JOBS_ROOT), from
        accounting and from squeue (a live job's comment may reach accounting only when it ends)."""
        since = (self.started_at - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
        root = str(self.jobs_root) + "/"
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

    def job_ids(self) -> list[str]:
        """The ledger's jobs and any other live job of the benchmark (to cancel them all)."""
        ids = set(super().job_ids())
        try:
            ids |= {job_id for job_id, (_, state) in self.slurm_jobs().items() if state in LIVE_STATES}
        except Exception as exc:
            say(f"cannot list the benchmark's jobs in Slurm: {exc}")
        return sorted(ids)

    def adoptions(self) -> int:
        """ "Adopting Slurm job ..." lines (prefect_utils.submission) in every serve_flows log."""
        return sum(
            log.read_text(errors="replace").count("Adopting Slurm job")
            for log in self.serve_flows_logs
            if log.exists()
        )

    # -- the figures --

    def report(self, last_kill: float) -> bool:
        from django.db.models import Count

        from analyses.models import Analysis, Assembly
        from workflows.models import ClusterJob, RequestProgress

        args = self.args
        ids = [r.request_id for r in self.requests]
        self.watch(0)
        done = [r for r in self.requests if r.finished_at is not None]
        completed = [r for r in done if r.status == "completed"]
        stuck = [r for r in self.requests if r.finished_at is None]
        failed = [r for r in done if r.status != "completed"]

        slurm = self.slurm_jobs()
        by_comment: dict[str, set[str]] = defaultdict(set)
        for job_id, (comment, _) in slurm.items():
            by_comment[comment].add(job_id)
        duplicated = {c: sorted(j) for c, j in by_comment.items() if c and len(j) > 1}
        ledger_ids = set(ClusterJob.objects.exclude(slurm_job_id=None).values_list("slurm_job_id", flat=True))
        unknown = sorted(set(slurm) - ledger_ids)
        missing = sorted(ledger_ids - set(slurm))
        doubles = {
            model.__name__: list(
                model.objects.filter(request__in=ids)
                .values("request", "run")
                .annotate(n=Count("pk"))
                .filter(n__gt=1)
                .values_list("request", "run", "n")
            )
            for model in (Assembly, Analysis)
        }
        analyses = Counter(Analysis.objects.filter(request__in=ids).values_list("request_id", flat=True))
        progress = {p.request_id: p for p in RequestProgress.objects.filter(request_id__in=ids)}
        current_runs = self.flow_run_ids(ids)
        reschedules = {
            request_id: self.recovery_reschedules(request_id, flow_run_id) if flow_run_id else []
            for request_id, flow_run_id in current_runs.items()
        }
        all_reschedules = [x for per_request in reschedules.values() for x in per_request]
        premature = [x for x in all_reschedules if x["premature"]]

        orphans = {k: j for kill in self.kills for k, j in kill.orphans.items()}
        adopted = {
            key
            for key, job_id in orphans.items()
            if ClusterJob.objects.filter(slurm_job_id=job_id).exists() and len(by_comment.get(key, ())) == 1
        }

        # Per request: the kills of its life, and from the last of them to its end.
        rows = []
        for r in self.requests:
            end = r.finished_at
            lived = [k for k in self.kills if k.at >= r.at and (end is None or k.at <= end)]
            rows.append(
                {
                    "request": r,
                    "kills": len(lived),
                    "life": end - r.at if end else None,
                    # From serve_flows' restart after the last kill of its life: the outage itself is not recovery.
                    "recover": max(0.0, end - lived[-1].at - lived[-1].down) if end and lived else None,
                    "progress": progress.get(r.request_id),
                    "analyses": analyses.get(r.request_id, 0),
                    "backoff": max((x["delay"] for x in reschedules.get(r.request_id, [])), default=None),
                }
            )
        finished_at = max((r.finished_at for r in done), default=None)
        # Kills after every request had finished have nothing to recover: measure from the last one before.
        in_life = [k for k in self.kills if set(k.phases.values()) - {"finishing"}]
        restart = in_life[-1].at + in_life[-1].down if in_life else last_kill
        overall = max(0.0, finished_at - restart) if finished_at and not stuck else None
        flow_runs = self.flow_runs(i for i in current_runs.values() if i)
        not_final = {
            request_id: flow_runs[flow_run_id].state.name if flow_runs[flow_run_id].state else "no state"
            for request_id, flow_run_id in current_runs.items()
            if flow_run_id in flow_runs
            and (flow_runs[flow_run_id].state is None or not flow_runs[flow_run_id].state.is_final())
        }
        incidences = Counter(p for k in self.kills for p in k.phases.values())
        kills_in = Counter(p for k in self.kills for p in set(k.phases.values()))
        positions = Counter()
        for row in rows:
            r = row["request"]
            if r.finished_at:
                for k in self.kills:
                    if r.at <= k.at <= r.finished_at:
                        positions[min(9, int(10 * (k.at - r.at) / (r.finished_at - r.at)))] += 1
        aimed = [k for k in self.kills if k.aimed]
        downs = [k.down for k in self.kills if not k.orphans]

        say()
        say(
            f"{'request':>7} {'study':<10} {'status':<9} {'kills':>5} {'life s':>7} {'last restart -> end s':>21} "
            f"{'passes':>6} {'resumes':>7} {'recoveries':>10} {'max backoff s':>13} {'generation':>10} "
            f"{'analyses':>8}"
        )
        say("-" * 121)
        for row in rows:
            r, p = row["request"], row["progress"]
            say(
                f"{r.request_id:>7} {r.study:<10} {r.status if r.finished_at else 'STUCK':<9} {row['kills']:>5} "
                f"{fmt(row['life']):>7} {fmt(row['recover']):>21} {p.passes if p else 0:>6} "
                f"{p.resumes if p else 0:>7} {p.total_recoveries if p else 0:>10} {fmt(row['backoff']):>13} "
                f"{p.flow_run_generation if p else 0:>10} {row['analyses']:>4} / {STUDIES[r.study]}"
            )
        say()
        lives = [row["life"] for row in rows if row["life"] is not None]
        recovers = [row["recover"] for row in rows if row["recover"] is not None]
        figures = [
            (
                "kills",
                f"{len(self.kills)} ({len(in_life)} in an unfinished request's life; {len(aimed)} aimed at a submission, "
                f"{sum(1 for k in aimed if k.orphans)} of them orphaning a job); down "
                + (f"median {statistics.median(downs):.1f} s, max {max(downs):.1f} s" if downs else "-")
                + "".join(f"; {k.down:.0f} s after kill {k.number}" for k in self.kills if k.orphans),
            ),
            (
                "kills by phase",
                ", ".join(f"{p} {kills_in[p]} ({incidences[p]})" for p in _phase_order(incidences))
                + "  [kills that found a request there (requests there)]",
            ),
            (
                "kills by tenth of a request's life",
                " ".join(str(positions[i]) for i in range(10)),
            ),
            ("flow processes killed", f"{sum(k.flow_processes for k in self.kills)}"),
            ("processes surviving a kill", f"{sum(k.survivors for k in self.kills)}"),
            (
                "requests completed",
                f"{len(completed)} / {len(self.requests)}"
                + (
                    f"; FAILED/CANCELLED {', '.join(f'{r.request_id} {r.status}' for r in failed)}"
                    if failed
                    else ""
                )
                + f"; analyses as expected {sum(1 for row in rows if row['analyses'] == STUDIES[row['request'].study])}"
                f" / {len(rows)}",
            ),
            (
                "requests stuck",
                f"{len(stuck)} (deadline {args.deadline:g} s after the last kill)"
                + "".join(f"; {self.describe_stuck(r.request_id, current_runs, progress)}" for r in stuck),
            ),
            (
                "recovery reschedules",
                f"{len(all_reschedules)} by the sweep, delay max "
                + (f"{max(x['delay'] for x in all_reschedules):.0f} s" if all_reschedules else "-")
                + f"; {len(premature)} of a run the runner had taken (Pending) before its start time, less than "
                f"WORKFLOWS_STALL_SECONDS after that start"
                + (
                    f" (requests {', '.join(str(i) for i in sorted({x['request'] for x in premature}))})"
                    if premature
                    else ""
                ),
            ),
            (
                "duplicate keys in Slurm",
                f"{len(duplicated)} (of {len(slurm)} jobs of the benchmark, {len([c for c in by_comment if c])} keys)"
                + "".join(f"; {c}: jobs {', '.join(j)}" for c, j in duplicated.items()),
            ),
            (
                "jobs the ledger does not know",
                f"{len(unknown)}"
                + (f" ({', '.join(unknown)})" if unknown else "")
                + f"; ledger job ids not in Slurm: {len(missing)}",
            ),
            (
                "duplicate domain rows",
                ", ".join(f"{name} {len(rows_)}" for name, rows_ in doubles.items())
                + " (per request and run)",
            ),
            (
                "orphaned jobs adopted",
                f"{len(adopted)} / {len(orphans)}"
                + (f" ({', '.join(sorted(orphans.values()))})" if orphans else "")
                + f"; serve_flows logged {self.adoptions()} adoption(s) in all",
            ),
            (
                "recovery: last restart -> all done",
                (f"{overall:.1f} s" if overall is not None else "-")
                + (
                    f"; per request (restart after the last kill of its life -> its end) median {statistics.median(recovers):.1f} s, "
                    f"max {max(recovers):.1f} s over {len(recovers)}"
                    if recovers
                    else ""
                ),
            ),
            (
                "flow runs not final in Prefect",
                f"{len(not_final)} of the requests' {len(flow_runs)} current flow runs"
                + "".join(f"; request {i}: {name}" for i, name in sorted(not_final.items())),
            ),
            (
                "request life",
                f"median {statistics.median(lives):.1f} s, max {max(lives):.1f} s" if lives else "-",
            ),
            (
                "sweep recoveries, resumes, passes",
                f"{sum(p.total_recoveries for p in progress.values())}, {sum(p.resumes for p in progress.values())}, "
                f"{sum(p.passes for p in progress.values())} (all requests)",
            ),
            ("wall time", f"{time.time() - self.t0:.0f} s from the first request"),
        ]
        width = max(len(name) for name, _ in figures)
        for name, value in figures:
            say(f"{name:<{width}}  {value}")
        say()
        dup_rows = sum(len(v) for v in doubles.values())
        goals = [
            (f">= 50 kills: {len(self.kills)}", len(self.kills) >= 50),
            (
                f"0 duplicates: {len(duplicated)} keys in Slurm, {dup_rows} domain rows",
                not duplicated and not dup_rows,
            ),
            (f"0 stuck: {len(stuck)}", not stuck),
        ]
        for text, ok in goals:
            say_goal(ok, text)
        self.log_findings()
        findings = bool(stuck or failed or duplicated or dup_rows or unknown or not_final)
        if findings:
            self.write_evidence([r.request_id for r in stuck + failed] + list(not_final), duplicated)
        return not findings

    def recovery_reschedules(self, request_id: int, flow_run_id: str) -> list[dict]:
        """The sweep's reschedules of a flow run ("emgapi recovery: ..." Scheduled states): when, with what delay,
        and whether premature: the run was Pending because the runner took it before its start time (Prefect's
        runner fetches runs due within its next 10 s), and the sweep put it back less than WORKFLOWS_STALL_SECONDS
        after that start time, although its process may have been waiting for it."""
        stall = float(SERVICE_SETTINGS["WORKFLOWS_STALL_SECONDS"])
        found, previous = [], None
        for state in self.flow_run_states(flow_run_id):
            details = state.state_details
            if (
                state.type.value == "SCHEDULED"
                and (state.message or "").startswith("emgapi recovery")
                and details.scheduled_time
            ):
                start = previous.state_details.scheduled_time if previous is not None else None
                early = (
                    previous is not None
                    and previous.type.value == "PENDING"
                    and start is not None
                    and (start - previous.timestamp).total_seconds() > 1
                )
                found.append(
                    {
                        "request": request_id,
                        "at": state.timestamp.timestamp(),
                        "delay": max(0.0, (details.scheduled_time - state.timestamp).total_seconds()),
                        "premature": bool(early and (state.timestamp - start).total_seconds() < stall),
                    }
                )
            previous = state
        return found

    def describe_stuck(self, request_id: int, current_runs: dict, progress: dict) -> str:
        """Where a stuck request's flow run is: its state and, if scheduled, when it will start."""
        flow_run_id = current_runs.get(request_id)
        run_ = self.flow_runs([flow_run_id]).get(flow_run_id) if flow_run_id else None
        p = progress.get(request_id)
        if run_ is None or run_.state is None:
            return f"request {request_id}: no flow run"
        text = f"request {request_id}: flow run {run_.state.name}"
        scheduled = run_.state.state_details.scheduled_time
        if run_.state.type.value == "SCHEDULED" and scheduled:
            text += f" to start in {(scheduled.timestamp() - time.time()):.0f} s"
        return text + (f", {p.recoveries} recoveries in a row" if p else "")

    def write_evidence(self, request_ids: list[int], duplicated: dict[str, list[str]]) -> None:
        from analyses.models import AssemblyAnalysisRequest
        from workflows.models import ClusterJob, RequestProgress, Trigger
        from workflows.selectors import source_label

        path = self.tmp / "evidence.txt"
        out: list[str] = []
        keys = {c.rsplit("-", 1)[0] for c in duplicated}
        request_ids = sorted(
            set(request_ids)
            | set(
                ClusterJob.objects.filter(key__in=keys)
                .exclude(request=None)
                .values_list("request_id", flat=True)
            )
        )
        logs = [(log.name, log.read_text(errors="replace").splitlines()) for log in self.serve_flows_logs]
        for comment, job_ids in duplicated.items():
            out.append(f"== key {comment}: Slurm jobs {', '.join(job_ids)}")
            out += [f"  sacct {line}" for line in _sacct_lines(job_ids)]
        for request_id in request_ids:
            request = AssemblyAnalysisRequest.objects.get(pk=request_id)
            out.append(
                f"== request {request_id} ({request.study_accession}): {request.status} {request.status_detail!r}"
            )
            out.append(f"  request_metadata {request.request_metadata}")
            progress = RequestProgress.objects.filter(pk=request_id).values().first()
            out.append(f"  RequestProgress {progress}")
            for job in (
                ClusterJob.objects.filter(request_id=request_id)
                .order_by("pk")
                .values(
                    "pk",
                    "name",
                    "key",
                    "attempt",
                    "slurm_job_id",
                    "state",
                    "slurm_state",
                    "exit_code",
                    "reason",
                    "claim",
                    "flow_run_id",
                    "created",
                    "submitted_at",
                    "state_changed_at",
                    "ended_at",
                )
            ):
                out.append(f"  ClusterJob {job}")
            flow_run_ids = {request.flow_run_id} | set(
                Trigger.objects.filter(source=source_label(request)).values_list("flow_run_id", flat=True)
            )
            for trigger in Trigger.objects.filter(source=source_label(request)).values():
                out.append(f"  Trigger {trigger}")
            for flow_run_id in sorted(i for i in flow_run_ids if i):
                out.append(f"  flow run {flow_run_id} states:")
                try:
                    for state in self.flow_run_states(flow_run_id):
                        out.append(
                            f"    {state.timestamp.astimezone():%H:%M:%S.%f} {state.type.value:<10} "
                            f"{state.name!r} {(state.message or '')[:200]!r}"
                            + (
                                f" scheduled for {state.state_details.scheduled_time.astimezone():%H:%M:%S.%f}"
                                if state.state_details.scheduled_time
                                else ""
                            )
                        )
                except Exception as exc:
                    out.append(f"    cannot read: {exc}")
            needles = [f"Request {request_id}:", f"request {request_id}", f"request-{request_id}-"]
            needles += [i for i in flow_run_ids if i]
            for name, lines in logs:
                hits = [line for line in lines if any(n in line for n in needles)]
                if hits:
                    out.append(f"  {name}: {len(hits)} lines")
                    out += [f"    {line[:300]}" for line in hits[-80:]]
        path.write_text("\n".join(out) + "\n")
        say(f"evidence for requests {request_ids or '-'} and {len(duplicated)} duplicated key(s): {path}")


LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}


def _running_phase(request_id: int, steps: list[dict], jobs: list[dict], analysed: set) -> str:
    """What a running flow run of the request is doing, from the plan and the ledger."""
    if not steps:
        return "planning"
    if any(job["slurm_job_id"] is None and job["state"] == "NEW" for job in jobs):
        return "submission"
    last = {}
    for job in jobs:
        last[job["key"]] = job["state"]  # rows come in insertion order: the latest attempt last
    runs = defaultdict(list)
    for step in steps:
        runs[step["run_id"]].append(last.get(step["key"]))
    if any(
        states and all(s == "COMPLETED" for s in states) and (request_id, run_id) not in analysed
        for run_id, states in runs.items()
    ):
        return "ingest"
    if any(job["slurm_job_id"] and job["state"] in ("PENDING", "RUNNING") for job in jobs):
        return "lingering"
    return "pass"


def _phase_order(counts: Counter) -> list[str]:
    return [p for p in PHASES if counts[p]] + sorted(p for p in counts if p not in PHASES)


def _sacct_lines(job_ids: list[str]) -> list[str]:
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


if __name__ == "__main__":
    raise SystemExit(main())
