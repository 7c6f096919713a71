"""Benchmark: what requests cost while they wait for Slurm, and how soon a job's end wakes its request up.

    .venv/bin/python bench/waiting.py [--sizes 10,100] [--batch 10] [--releases 5] [--cancels 5] [--keep]

The promise (DESIGN.md, "Waiting holds nothing"): a request whose jobs are pending costs a few database rows; its
flow run is suspended, so no process, no thread and no connection is held for it, and the service poller resumes
it when one of its jobs ends. Goals: 0 flow processes and no connection held by waiting requests, the
orchestrator's memory flat in N, a resume within 2 poll intervals of the job's end.

The whole service runs for real, isolated from everything else on the machine:

  * a Prefect server of its own (free port, its own PREFECT_HOME and PostgreSQL database
    `<database>_prefect`), so its deployments never meet the shared server's;
  * Django's database `<database>` (dropped, recreated, migrated);
  * the ENA stub with the demo data (study PRJEB00001: two runs, so two `fetch_reads` jobs per request);
  * `manage.py serve_flows` in its own process group: the served deployments and the service loop (dispatcher,
    poller under the lease, sweep), with the environment printed at start.

Every job the service submits is HELD at submission: serve_flows gets a private copy of slurm.conf (SLURM_CONF,
which the Slurm client passes on to sbatch) that adds a client-side `cli_filter/lua` setting `--hold` on every
sbatch. Holding jobs after they appear (`scontrol hold`) loses the race on an idle node: the controller starts a
job the moment it is submitted. The cluster's own configuration is not touched; other users' jobs run as usual.

For each N of `--sizes` (scaling up: requests are added in `--batch`es and each batch is waited for until all
its flow runs are Suspended, so that no more than a batch of flow processes start at once on this machine):
flow-run processes alive (children of serve_flows, zombies excluded), serve_flows' threads, RSS of serve_flows
and its children, PostgreSQL connections on Django's database (the benchmark closes its own first). Then held
jobs of different requests are ended one at a time, `--settle` seconds apart (so that the poller is back at its
longest interval), alternately `--releases` by `scontrol release` (the job runs for about a second: the poller
may see it RUNNING and shorten its interval before it ends) and `--cancels` by `scancel` (the job ends at once,
at a random moment of the poller's longest interval: the case of a job that ran for days). For each: the job's
end (sacct End, whole seconds), when the poller recorded it (ledger state_changed_at), the flow run's "Resuming"
and then "Running" state (Prefect's state history). The run then passes once (a cancelled job fails its run; the
request goes on with the other), submits what comes next (held too) and suspends again.

At the end every job of the benchmark's ledger is cancelled, serve_flows, the stub and the Prefect server (the
processes it started, by process group) are stopped, and the temporary directory is removed (kept with --keep).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._report import fmt, say, say_goal
from bench._setup import (
    admin_url,
    bench_parser,
    chunks,
    fresh_database,
    parse_sizes,
    repo_state,
    run,
    scancel,
    wait_for_slurm,
)
from bench._stack import (
    Stack,
    add_stack_options,
    children,
    cmdline,
    descendants,
    flow_processes,
    is_flow_process,
    proc_state,
    run_stack,
    status_field,
)

STUDY = "PRJEB00001"
# What serve_flows runs with (besides the addresses of the isolated stack): short intervals, stated in the output.
SERVICE_SETTINGS = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "SLURM_POLL_MIN_SECONDS": "1",
    "SLURM_POLL_MAX_SECONDS": "5",
    "WORKFLOWS_LINGER_SECONDS": "1",
    "WORKFLOWS_SWEEP_INTERVAL_SECONDS": "5",
    # The default. The service loop wakes at least this often and polls at every wake-up, so it also caps the poll
    # interval: with a shorter one, SLURM_POLL_MAX_SECONDS would never be reached.
    "WORKFLOWS_DISPATCH_INTERVAL_SECONDS": "5",
    "WORKFLOWS_STALL_SECONDS": "60",
    # Two jobs per request: the default (100 active jobs) would leave half of N=100 waiting for capacity.
    "SLURM_MAX_ACTIVE_JOBS": "1000",
}
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


# --- processes ----------------------------------------------------------------------------------------------------


def process_sample(server_pid: int) -> dict:
    direct = children(server_pid)
    live = [pid for pid in descendants(server_pid) if proc_state(pid) not in (None, "Z")]
    return {
        "flow_processes": len([pid for pid in direct if pid in live and is_flow_process(pid)]),
        "zombies": len([pid for pid in direct if proc_state(pid) == "Z"]),
        "other_children": {
            cmdline(pid).split(" ", 1)[0].rsplit("/", 1)[-1]
            for pid in direct
            if pid in live and not is_flow_process(pid)
        },
        "threads": status_field(server_pid, "Threads"),
        "rss_main_mb": status_field(server_pid, "VmRSS") / 1024,
        "rss_children_mb": sum(status_field(pid, "VmRSS") for pid in live) / 1024,
    }


def process_snapshot(server_pid: int, seconds: float, every: float = 0.25) -> dict:
    """serve_flows over a window: its threads come and go (the runner's and anyio's worker threads end after a
    few idle seconds), and a child can be a poll's squeue; so the extremes over `seconds`, not one reading."""
    samples = [process_sample(server_pid)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(every)
        samples.append(process_sample(server_pid))
    return {
        "samples": len(samples),
        "flow_processes": max(x["flow_processes"] for x in samples),
        "zombies": max(x["zombies"] for x in samples),
        "other_children": sorted(set().union(*(x["other_children"] for x in samples))),
        "threads_min": min(x["threads"] for x in samples),
        "threads": max(x["threads"] for x in samples),
        "rss_main_mb": max(x["rss_main_mb"] for x in samples),
        "rss_children_mb": max(x["rss_children_mb"] for x in samples),
    }


# --- PostgreSQL ---------------------------------------------------------------------------------------------------


def pg_connections(database: str) -> dict:
    """Client connections on `database`, read from another database so that the reading one is not counted."""
    import psycopg

    with psycopg.connect(admin_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend' GROUP BY 1",
            [database],
        ).fetchall()
        advisory = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = %s)",
            [database],
        ).fetchone()[0]
    by_state = dict(rows)
    return {"total": sum(by_state.values()), "by_state": by_state, "advisory_locks": advisory}


# --- Slurm ------------------------------------------------------------------------------------------------------


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


# --- the benchmark ------------------------------------------------------------------------------------------------


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sizes", default="10,100", help="numbers of waiting requests (default 10,100)")
    parser.add_argument(
        "--batch", type=int, default=10, help="requests created at once when scaling up (default 10)"
    )
    parser.add_argument(
        "--releases", type=int, default=5, help="held jobs released (they run ~1 s) per size (default 5)"
    )
    parser.add_argument(
        "--cancels", type=int, default=5, help="held jobs scancelled (they end at once) per size (default 5)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=12.0,
        help="seconds of quiet before each measurement and release (default 12: the poller is back at its "
        "longest interval)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=10.0,
        help="seconds over which processes, threads and RSS are sampled (every 0.25 s) at each N (default 10)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for a batch to suspend (default 600)"
    )
    add_stack_options(parser, "emgapi_bench_waiting")
    args = parser.parse_args()
    sizes = parse_sizes(parser, args.sizes)

    wait_for_slurm()
    run_stack(
        lambda tmp: Bench(args, sizes, tmp),
        name="waiting",
        keep=args.keep,
        logs="serve_flows.log, prefect_server.log, ena_stub.log",
    )
    return 0


class Bench(Stack):
    def __init__(self, args: argparse.Namespace, sizes: list[int], tmp: Path) -> None:
        super().__init__(tmp, args.database, SERVICE_SETTINGS)
        self.args = args
        self.sizes = sizes
        self.request_ids: list[int] = []

    def all_suspended(self, request_ids: list[int]) -> bool:
        states = self.run_states(request_ids)
        return states.get("Suspended", 0) == len(request_ids) and not flow_processes(self.serve_flows.pid)

    def measure(self, n: int) -> dict:
        from django.db import connections

        connections.close_all()  # the benchmark's own connection is not the service's
        snapshot = process_snapshot(self.serve_flows.pid, self.args.window)
        snapshot["pg"] = pg_connections(self.args.database)
        snapshot["pg_prefect"] = pg_connections(self.prefect_db)["total"]
        snapshot["n"] = n
        jobs = self.ledger_jobs()
        snapshot["ledger"] = Counter(job.state for job in jobs)
        snapshot["squeue"] = squeue_reasons(job.slurm_job_id for job in jobs if job.state == "PENDING")
        snapshot["runs"] = self.run_states(self.request_ids) if self.request_ids else Counter()
        return snapshot

    def show(self, s: dict) -> None:
        pg = s["pg"]
        say(
            f"  N={s['n']}, over {s['samples']} samples in {self.args.window:g} s: flow processes "
            f"{s['flow_processes']} (zombies {s['zombies']}), other children {', '.join(s['other_children']) or 'none'}; "
            f"serve_flows threads {s['threads_min']}-{s['threads']}, RSS {s['rss_main_mb']:.0f} MB "
            f"+ children {s['rss_children_mb']:.0f} MB (max)"
        )
        say(
            f"        PG connections on {self.args.database}: {pg['total']} {dict(pg['by_state'])}, advisory locks "
            f"held {pg['advisory_locks']}; on {self.prefect_db} (Prefect server): {s['pg_prefect']}"
        )
        say(f"        flow runs {dict(s['runs'])}; ledger {dict(s['ledger'])}; squeue {dict(s['squeue'])}")

    # -- scaling up --

    def add_requests(self, n: int) -> None:
        from analyses.services import create_assembly_analysis_request

        while len(self.request_ids) < n:
            count = min(self.args.batch, n - len(self.request_ids))
            start = time.monotonic()
            batch = [
                create_assembly_analysis_request(study_accession=STUDY, requester=None).pk
                for _ in range(count)
            ]
            self.request_ids += batch
            done, peak = self.wait_suspended(batch)
            say(
                f"  requests {batch[0]}..{batch[-1]}: "
                + ("all suspended" if done else f"NOT all suspended: {dict(self.run_states(batch))}")
                + f" after {time.monotonic() - start:.0f} s (peak {peak} flow processes at once)"
            )

    def wait_suspended(self, request_ids: list[int]) -> tuple[bool, int]:
        """Whether every flow run of `request_ids` got to Suspended with no flow process left; the peak count."""
        deadline = time.monotonic() + self.args.timeout
        peak = 0
        while time.monotonic() < deadline:
            peak = max(peak, len(flow_processes(self.serve_flows.pid)))
            if self.all_suspended(request_ids):
                return True, peak
            time.sleep(1)
        return False, peak

    # -- resume delay --

    def end_jobs_and_time(self) -> list[dict]:
        """End held jobs of different requests one at a time, alternately by release and by scancel."""
        pending = {}
        for job in self.ledger_jobs(self.request_ids):
            if job.state == "PENDING" and job.request_id not in pending:
                pending[job.request_id] = job
        candidates = [pending[r] for r in sorted(pending)]
        hows = []
        for i in range(max(self.args.releases, self.args.cancels)):
            hows += ["release"] if i < self.args.releases else []
            hows += ["scancel"] if i < self.args.cancels else []
        count = min(len(hows), len(candidates))
        if count == 0:
            say("  no held job to end")
            return []
        step = len(candidates) / count
        results = []
        for i in range(count):
            time.sleep(self.args.settle)
            results.append(self.end_one(candidates[int(i * step)], hows[i]))
        return results

    def end_one(self, job, how: str) -> dict:
        """End one held job (`scontrol release`: it runs; `scancel`: it ends at once); once its flow run has
        resumed and suspended again, the times."""
        from workflows.models import ClusterJob

        flow_run_id = self.flow_run_ids([job.request_id])[job.request_id]
        ended_at = datetime.now(UTC)
        if how == "release":
            run(["scontrol", "release", job.slurm_job_id])
        else:
            scancel([job.slurm_job_id])
        state, end, states = "", None, []
        deadline = time.monotonic() + 180
        settled = False
        while time.monotonic() < deadline:
            state, end = sacct_end(job.slurm_job_id, ended_at)
            states = self.flow_run_states(flow_run_id, ended_at) if end else []
            resuming = _first(states, lambda s: s.name == "Resuming")
            if resuming is not None:
                latest = states[-1]
                back = latest.timestamp > resuming.timestamp and (
                    latest.name == "Suspended" or latest.is_final()
                )
                if back and not flow_processes(self.serve_flows.pid):
                    settled = True
                    break
            time.sleep(1)
        resuming = _first(states, lambda s: s.name == "Resuming")
        running = _first(
            states, lambda s: s.type.value == "RUNNING" and resuming and s.timestamp > resuming.timestamp
        )
        seen = ClusterJob.objects.get(pk=job.pk).state_changed_at
        outcome = {
            "how": how,
            "delay": _seconds(end, resuming.timestamp if resuming else None),
            "detect": _seconds(end, seen),
            "to_running": _seconds(
                resuming.timestamp if resuming else None, running.timestamp if running else None
            ),
        }
        ended = f"ended {state or '?'} at {end:%H:%M:%S}" if end else "no end in sacct"
        say(
            f"  {how} job {job.slurm_job_id} ({job.name}, request {job.request_id}): {ended}; "
            f"end -> poller saw it {fmt(outcome['detect'])} s, end -> Resuming {fmt(outcome['delay'])} s, "
            f"Resuming -> Running {fmt(outcome['to_running'])} s"
            + ("" if settled else "  (TIMED OUT: not resumed and suspended again within 180 s)")
        )
        return outcome

    # -- the whole run --

    def run(self) -> None:
        say(
            f"bench/waiting.py: sizes {self.sizes} (batches of {self.args.batch}), {self.args.releases} releases "
            f"and {self.args.cancels} cancels per size, settle {self.args.settle:g} s; repo at {repo_state()}"
        )
        self.start()
        where = fresh_database(self.args.database)
        say(f"Django database {where} (fresh); study {STUDY} (2 runs: 2 held fetch_reads jobs per request)")
        conf = hold_everything_conf(self.tmp / "slurm")
        held_job_works(conf, self.tmp)
        say(f"hold filter: {conf} (cli_filter/lua sets --hold on every sbatch; checked: JobHeldUser)")
        self.start_serve_flows({"SLURM_CONF": str(conf)})
        say()

        time.sleep(self.args.settle)
        baseline = self.measure(0)
        self.show(baseline)
        rows = [(baseline, [])]
        for n in self.sizes:
            say(f"scaling up to N={n} in batches of {self.args.batch}")
            self.add_requests(n)
            time.sleep(self.args.settle)
            snapshot = self.measure(n)
            self.show(snapshot)
            say(
                f"ending held jobs of different requests one at a time, {self.args.settle:g} s apart: "
                f"{self.args.releases} by scontrol release, {self.args.cancels} by scancel, alternately"
            )
            rows.append((snapshot, self.end_jobs_and_time()))
        self.report(rows)
        self.log_findings()

    def report(self, rows: list[tuple[dict, list[dict]]]) -> None:
        poll_min = float(SERVICE_SETTINGS["SLURM_POLL_MIN_SECONDS"])
        poll_max = float(SERVICE_SETTINGS["SLURM_POLL_MAX_SECONDS"])
        say()
        header = (
            f"{'N':>4} {'suspended':>9} {'flow procs':>10} {'threads':>7} {'RSS MB main + children':>22} "
            f"{'PG conns':>8} {'resume delay s, release':>23} {'scancel':>15} {'detect s':>8} {'to Running s':>12}"
        )
        say(header)
        say("-" * len(header))
        for snapshot, ends in rows:
            suspended = snapshot["runs"].get("Suspended", 0)
            say(
                f"{snapshot['n']:>4} {suspended:>9} {snapshot['flow_processes']:>10} "
                f"{str(snapshot['threads_min']) + '-' + str(snapshot['threads']):>7} "
                f"{snapshot['rss_main_mb']:>12.0f} + {snapshot['rss_children_mb']:<7.0f} "
                f"{snapshot['pg']['total']:>8} {_spread(ends, 'delay', 'release'):>23} "
                f"{_spread(ends, 'delay', 'scancel'):>15} {_median(ends, 'detect'):>8} "
                f"{_median(ends, 'to_running'):>12}"
            )
        say(
            f"(flow procs, RSS: the most over {self.args.window:g} s; threads: least-most; resume delay: job end -> "
            "flow run Resuming, median / max (count); detect: job end -> the poller recorded it; to Running: "
            "Resuming -> the new flow process runs; medians)"
        )
        say()
        base = rows[0][0]
        waiting = [s for s, _ in rows[1:]]
        first = waiting[0] if len(waiting) > 1 else base
        all_delays = [r["delay"] for _, ends in rows for r in ends if r["delay"] is not None]
        missed = sum(1 for _, ends in rows for r in ends if r["delay"] is None)
        goals = [
            (
                "0 flow processes while requests wait",
                all(s["flow_processes"] == 0 for s in waiting),
                ", ".join(f"N={s['n']}: {s['flow_processes']}" for s in waiting),
            ),
            (
                "no PG connection held by waiting requests (same count as with 0 requests)",
                all(s["pg"]["total"] <= base["pg"]["total"] for s in waiting),
                f"N=0: {base['pg']['total']}, "
                + ", ".join(f"N={s['n']}: {s['pg']['total']}" for s in waiting),
            ),
            (
                f"orchestrator memory flat in N (RSS at N={waiting[-1]['n']} within 10 % of N={first['n']})",
                _rss(waiting[-1]) <= 1.10 * _rss(first),
                f"N=0: {_rss(base):.0f} MB, "
                + ", ".join(f"N={s['n']}: {_rss(s):.0f} MB" for s in waiting)
                + f"; {(_rss(waiting[-1]) - _rss(first)) * 1024 / max(1, waiting[-1]['n'] - first['n']):+.0f} "
                f"kB per added request",
            ),
            (
                f"serve_flows threads flat in N (least at N={waiting[-1]['n']} <= most at N={first['n']})",
                waiting[-1]["threads_min"] <= first["threads"],
                ", ".join(f"N={s['n']}: {s['threads_min']}-{s['threads']}" for s in [base, *waiting]),
            ),
            (
                f"resume delay <= 2 poll intervals (2 x SLURM_POLL_MAX_SECONDS = {2 * poll_max:g} s; "
                f"2 x MIN = {2 * poll_min:g} s)",
                bool(all_delays) and not missed and max(all_delays) <= 2 * poll_max,
                (
                    f"median {statistics.median(all_delays):.1f} s, max {max(all_delays):.1f} s over "
                    f"{len(all_delays)} jobs"
                    if all_delays
                    else "no job end measured"
                )
                + (f", {missed} never resumed" if missed else ""),
            ),
        ]
        for text, ok, detail in goals:
            say_goal(ok, f"{text}: {detail}")
        say("(sacct's End is whole seconds: each delay may read up to 1 s long)")


def _rss(snapshot: dict) -> float:
    return snapshot["rss_main_mb"] + snapshot["rss_children_mb"]


def _first(items: list, test: Callable) -> object | None:
    return next((item for item in items if test(item)), None)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def _spread(ends: list[dict], key: str, how: str) -> str:
    values = [r[key] for r in ends if r["how"] == how and r[key] is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {max(values):.1f} ({len(values)})"


def _median(ends: list[dict], key: str) -> str:
    values = [r[key] for r in ends if r[key] is not None]
    return fmt(statistics.median(values)) if values else "-"


if __name__ == "__main__":
    raise SystemExit(main())
