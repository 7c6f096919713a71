"""Scenario (b) of bench/scale.py: end to end at the job limit (issue 19).

    .venv/bin/python bench/scale.py --scenario b [--requests 20,200] [--max-active-jobs-b 20]
        [--release-every 15] [--release-seconds 600] [--batch-b 20] [--max-flow-processes-b 8] [--keep]

The whole service runs for real, isolated (bench/_stack.py, as bench/waiting.py runs it): for each N of
`--requests`, a Prefect server of its own (database `<database-b>_n<N>_prefect`), a Django database of its own
(`<database-b>_n<N>`), the ENA stub with the demo data, and `manage.py serve_flows` with SLURM_MAX_ACTIVE_JOBS =
`--max-active-jobs-b` (20) and WORKFLOWS_MAX_FLOW_PROCESSES = `--max-flow-processes-b` (8), every sbatch HELD
by a client-side filter of a private slurm.conf (bench/_waiting/slurm.py). Each request is of study PRJEB00001:
two runs, four steps each (eight jobs), two fetch_reads jobs first.

  1. N requests are created `--batch-b` at a time, each batch waited for until its flow runs are Suspended (so
     that not N flow processes start at once): the first ten requests fill the cluster with 20 held jobs, every
     later one finds no slot and waits in the capacity queue (workflows/orchestration/capacity.py).
  2. For `--release-seconds` (600), every `--release-every` s (15) the oldest held job is released (`scontrol
     release`; it runs about a second). Each release frees one slot: the poll that records the end grants it to
     the request served longest ago (one never served first) and resumes that request and the one whose job
     ended, each a new flow process. A flow process costs 8-9 s of CPU here (measured: medians 7.8-9.3 s; the
     imports of prefect.engine and of the flow module alone take 7 s), so a release asks about 17 s of CPU: one
     per 15 s is 57 % of the two cores, leaving room for the Prefect server, PostgreSQL and serve_flows. One per
     3 s would ask nearly three times what the machine has: flow runs queue behind the process limit, and the
     figures are the machine's, not the service's.
  3. A drain: until every released job has ended and no flow process has run for 2 poll intervals (at most
     `--drain-b` s), so the last releases' resumes and submissions are counted.

Meanwhile serve_flows' flow processes (bench/_procs.flow_processes) are sampled every `--sample-every-b` s (0.5)
and the capacity queue (requests with capacity_wanted > 0) every other sample. At the end the ledger, the
RequestProgress rows, every flow run's state history in Prefect and serve_flows' JSON log lines are read
(bench/_scale/limit_read.py), and over the window (first release to the end of the drain; limit_figures.py):

  * resumes per round: a round is a poll that recorded job ends (one `state_changed_at` stamp for every row it
    changed) until the next one, so the wake-up after the poll and any sweep in between; its resumes are the
    "Resuming" states Prefect recorded in it (one per resume it accepted: reliable whoever resumed, unlike log
    lines, and cross-checked against the sum of RequestProgress.resumes). Allowed: slots freed + requests whose
    own jobs ended;
  * flow processes alive at once (most of any sample) and started per minute (pids seen for the first time);
  * slots freed (jobs ended) vs jobs submitted, and the most ledger rows holding a slot at once;
  * freed slot -> next job: each end recorded while requests waited (the queue's last sample before it), in
    order, paired with the first job submitted after it (ClusterJob.submitted_at) that no earlier end took, from
    Slurm's End (whole seconds) and from the poll that recorded it;
  * fairness: the order of the requests' first jobs against their creation order, and the jobs that were a
    request's third or later while another unfinished request had none (round-robin allows none);
  * where the time goes: the machine's CPU (/proc/stat) and load, serve_flows' own CPU, the Prefect server's,
    each flow process's CPU and life, the flow runs the sweeps rescheduled, and each freed slot's way to its next
    job in legs: the poll's record -> the Resuming state of the request that used it -> its Running state (the
    runner's queue and the process's imports) -> the submission (the pass).

Prints the tables, the ratios to the smallest N (20) and "meets"/"MISSES" for: resumes per round <= slots freed +
requests whose own jobs ended; flow processes alive <= WORKFLOWS_MAX_FLOW_PROCESSES; a freed slot used within 2
poll intervals (2 x SLURM_POLL_MAX_SECONDS, 5 s here: bench/waiting.py's settings) while requests wait; no third
job while a request has none. Every job of the ledger is cancelled (scancel by id), serve_flows, the stub and the
Prefect server are stopped (by process group), and both databases are dropped and the temporary directory removed
(kept with --keep, with the logs). A PostgreSQL restarted meanwhile (other sessions' tests do that) is waited
out and said.

Its parts: limit_run (one N's stack, creation, releases and drain), limit_sampler (the sampling thread and CPU
readings), limit_read (what is read at the end), limit_figures (the figures, plain functions), limit_report.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from bench._report import say
from bench._setup import wait_for_slurm

if TYPE_CHECKING:
    from bench._scale.limit_run import LimitStack


def add_options(parser: argparse.ArgumentParser) -> None:
    """This scenario's options (each prefixed, so the scenarios' options never collide)."""
    group = parser.add_argument_group("scenario (b)")
    group.add_argument(
        "--requests",
        default="20,200",
        help="numbers of requests, a run of the scenario for each (default 20,200)",
    )
    group.add_argument(
        "--max-active-jobs-b",
        type=int,
        default=20,
        help="SLURM_MAX_ACTIVE_JOBS: the cluster's slots (default 20)",
    )
    group.add_argument(
        "--max-flow-processes-b",
        type=int,
        default=8,
        help="WORKFLOWS_MAX_FLOW_PROCESSES: flow processes serve_flows runs at once (default 8)",
    )
    group.add_argument(
        "--release-every", type=float, default=15.0, help="seconds between releases of held jobs (default 15)"
    )
    group.add_argument(
        "--release-seconds", type=float, default=600.0, help="seconds of releases (default 600)"
    )
    group.add_argument(
        "--batch-b", type=int, default=20, help="requests created at once, each batch waited for (default 20)"
    )
    group.add_argument(
        "--sample-every-b",
        type=float,
        default=0.5,
        help="seconds between samples of flow processes (default 0.5)",
    )
    group.add_argument(
        "--drain-b", type=float, default=120.0, help="most seconds of drain after the releases (default 120)"
    )
    group.add_argument(
        "--timeout-b", type=float, default=600.0, help="seconds to wait for a batch to suspend (default 600)"
    )
    group.add_argument(
        "--database-b",
        default="emgapi_bench_limit",
        help="prefix of each N's databases: <database-b>_n<N> and <database-b>_n<N>_prefect (dropped at the end)",
    )


def run(args: argparse.Namespace) -> int:
    from bench._scale.limit_report import report
    from bench._stack import run_stack

    try:
        sizes = sorted({int(size) for size in args.requests.split(",") if size.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 1:
        raise SystemExit(f"--requests must be positive integers, not {args.requests!r}")
    say(
        f"bench/scale.py scenario (b): requests {sizes}, SLURM_MAX_ACTIVE_JOBS {args.max_active_jobs_b}, "
        f"WORKFLOWS_MAX_FLOW_PROCESSES {args.max_flow_processes_b}, a held job released every "
        f"{args.release_every:g} s for {args.release_seconds:g} s"
    )
    wait_for_slurm()
    results = []
    for n in sizes:
        made: list[LimitStack] = []
        try:
            run_stack(
                partial(_make, args, n, made),
                name=f"scale-b-n{n}",
                keep=args.keep,
                logs="serve_flows.log, prefect_server.log, ena_stub.log",
            )
        except (
            SystemExit
        ) as exc:  # the stack is down and its jobs cancelled: the other N's figures still count
            say(f"N={n} failed: {exc}")
        if made and made[0].readings is not None:
            results.append(made[0].readings)
    report(results)
    return 0


def _make(args: argparse.Namespace, n: int, made: list[LimitStack], tmp: Path) -> LimitStack:
    """The stack of one N (run_stack makes it in its temporary directory); kept in `made` for its readings."""
    from bench._scale.limit_run import LimitStack

    made.append(LimitStack(args, n, tmp))
    return made[-1]
