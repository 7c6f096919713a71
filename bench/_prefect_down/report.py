"""The figures of bench/prefect_down.py after its phases: latency and dispatch per phase, the deployment's flow
runs per request, the triggers' attempts, what serve_flows' logs say of the sweep and of failed dispatches, and
the goals."""

from __future__ import annotations

import itertools
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from bench._prefect_down.record import percentile, request_label
from bench._readings import flow_run_ids, log_findings
from bench._report import fmt, say, say_goal, say_header

if TYPE_CHECKING:
    from bench._prefect_down.run import PrefectDown

P99_GOAL_MS = 200.0
SWEEP_LINE = re.compile(
    r"workflows\.recovery - Request (?P<request>\d+): (?P<kind>new flow run \(generation \d+\)|rescheduled flow "
    r"run \S+) ?[:(](?P<reason>[^)]*)"
)
DISPATCH_FAILED = re.compile(r"workflows\.dispatch - Dispatch of .* failed \(attempt \d+\): (?P<error>\w+)")


def prefect_flow_runs() -> list:
    """Every flow run of the assembly deployment in Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from workflows.outbox import deployments

    runs: list = []
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(
            deployments.in_this_environment(deployments.ASSEMBLY_ANALYSIS)
        )
        while True:
            page = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                limit=200,
                offset=len(runs),
            )
            runs += page
            if len(page) < 200:
                return runs


def report(prefect_down: PrefectDown) -> None:
    """The table of the phases, the figures of the whole run, the goals and the findings of serve_flows' logs."""
    from django.db.models import Max, Sum

    from analyses.models import AssemblyAnalysisRequest
    from workflows.models import ClusterJob, Trigger
    from workflows.outbox import deployments

    args = prefect_down.args
    say()
    header = (
        f"{'phase':<22} {'POSTs':>5} {'201':>4} {'other':>12} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'burst s':>7} {'down s':>6} {'attempts down':>13} {'serve_flows':>11} {'back->dispatched s':>18} "
        f"{'back->ended s':>13}"
    )
    say_header(header)
    for phase in prefect_down.phases:
        statuses = Counter(p.status for p in phase.posts)
        other = ", ".join(f"{s} {n}" for s, n in statuses.items() if s != "201") or "-"
        lat = phase.latencies()
        down = "-" if phase.outage is None else f"{phase.back_at - phase.down_at:.1f}"
        attempts = "-" if phase.outage is None else f"{phase.attempts_down[0]} (max {phase.attempts_down[1]})"
        alive = "-" if phase.outage is None else ("survived" if phase.serve_flows_alive else "EXITED")
        say(
            f"{phase.title:<22} {len(phase.posts):>5} {statuses['201']:>4} {other:>12} "
            f"{percentile(lat, 0.5):>7.1f} {percentile(lat, 0.99):>7.1f} {max(lat):>7.1f} "
            f"{phase.posted_s:>7.2f} {down:>6} {attempts:>13} {alive:>11} {fmt(phase.dispatched_s):>18} "
            f"{fmt(phase.settled_s):>13}"
        )
    say()

    requests = list(AssemblyAnalysisRequest.objects.values_list("pk", flat=True))
    runs = prefect_flow_runs()
    per_tag: Counter[str] = Counter()
    untagged = 0
    for run_ in runs:
        tags = [t for t in run_.tags if t.startswith("analyses.assemblyanalysisrequest:")]
        per_tag.update(tags)
        untagged += not tags
    counts = Counter(per_tag.get(request_label(pk), 0) for pk in requests)
    strangers = [t for t in per_tag if int(t.rsplit(":", 1)[1]) not in set(requests)]
    run_states = Counter(r.state.name if r.state else "?" for r in runs)
    triggers = Trigger.objects.filter(deployment_name=deployments.ASSEMBLY_ANALYSIS)
    totals = triggers.aggregate(total=Sum("attempts"), most=Max("attempts"))
    by_attempts = Counter(triggers.values_list("attempts", flat=True))
    undispatched = sum(1 for i in flow_run_ids(requests).values() if not i)
    exits = prefect_down.serve_flows_exits
    ledger = ClusterJob.objects.count()
    slurm = ClusterJob.objects.exclude(slurm_job_id__isnull=True).count()
    statuses = Counter(AssemblyAnalysisRequest.objects.values_list("status", flat=True))
    outages = [p for p in prefect_down.phases if p.outage]
    observer = [
        line[:8]
        for log in prefect_down.serve_flows_logs
        if log.exists()
        for line in log.read_text(errors="replace").splitlines()
        if "Cancellation polling task failed" in line
    ]
    figures = [
        (
            "requests",
            f"{len(requests)} (1 check + {len(prefect_down.phases)} x {args.posts}); {dict(statuses)}",
        ),
        ("requests without flow_run_id", f"{undispatched}"),
        (
            "flow runs of the deployment",
            f"{len(runs)} for {len(requests)} requests; {dict(run_states)}"
            + (f"; {untagged} without a request tag" if untagged else "")
            + (f"; {len(strangers)} tags of no request" if strangers else ""),
        ),
        (
            "requests by flow runs",
            f"0: {counts[0]}, 1: {counts[1]}, >1: {sum(n for k, n in counts.items() if k > 1)}"
            + "".join(f" ({k}: {n})" for k, n in sorted(counts.items()) if k > 1),
        ),
        (
            "trigger attempts",
            f"sum {totals['total'] or 0}, max {totals['most'] or 0} over {triggers.count()} triggers; "
            + ", ".join(f"{n} with {k}" for k, n in sorted(by_attempts.items())),
        ),
        (
            "serve_flows",
            f"{len(exits)} exit(s)"
            + "".join(f"; pid {pid} exited (code {code})" for pid, _, code in exits)
            + f"; restarted by the benchmark after {sum(p.serve_flows_restarted for p in outages)} of "
            f"{len(outages)} outages",
        ),
        (
            "runner's cancellation observer",
            (
                f"gave up {len(observer)} time(s), at {', '.join(observer)} (Prefect's 'Cancellation polling task "
                "failed ... flow run cancellation will fail': not restarted while serve_flows lives)"
            )
            if observer
            else "alive",
        ),
        ("ledger rows, Slurm jobs", f"{ledger}, {slurm}"),
    ]
    sweeps, failures = log_events(prefect_down.serve_flows_logs)
    phase_of = {i: p.key for p in prefect_down.phases for i in p.request_ids}
    for kind in ("new flow run", "rescheduled"):
        found = [(when, i) for when, k, i, _ in sweeps if k == kind]
        by_phase = Counter(phase_of.get(i, "check") for _, i in found)
        figures.append(
            (
                f"sweep: {kind}",
                f"{len(found)}"
                + (f" ({', '.join(f'{k} {n}' for k, n in sorted(by_phase.items()))})" if found else "")
                + "".join(
                    f"; {reason}: {n}"
                    for reason, n in Counter(r for _, k, _, r in sweeps if k == kind).most_common(3)
                ),
            )
        )
    for error, stamps in sorted(failures.items()):
        gaps = [b - a for a, b in itertools.pairwise(stamps) if 0 < b - a < 10]
        figures.append(
            (
                f"failed dispatches: {error}",
                f"{len(stamps)}"
                + (
                    f", one every {statistics.median(gaps):.2f} s in a round (median gap, {len(gaps)} gaps)"
                    if gaps
                    else ""
                ),
            )
        )
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        say(f"{name:<{width}}  {value}")
    say()
    goals = []
    for phase in outages:
        p99 = percentile(phase.latencies(), 0.99)
        goals.append((f"POST p99 <= {P99_GOAL_MS:.0f} ms, {phase.title}: {p99:.1f} ms", p99 <= P99_GOAL_MS))
    for phase in outages:
        ok = sum(1 for p in phase.posts if p.status == "201")
        goals.append((f"every POST 201, {phase.title}: {ok} / {len(phase.posts)}", ok == len(phase.posts)))
    goals.append(
        (
            f"exactly one flow run per request: {counts[1]} / {len(requests)}, {len(runs)} flow runs in all",
            counts[1] == len(requests) and len(runs) == len(requests),
        )
    )
    goals.append(
        (
            f"serve_flows lives through the outages: {sum(p.serve_flows_alive for p in outages)} / {len(outages)}",
            all(p.serve_flows_alive for p in outages) and not exits,
        )
    )
    for text, ok in goals:
        say_goal(ok, text)
    log_findings(prefect_down.serve_flows_logs)


def log_events(logs: list[Path]) -> tuple[list[tuple[float, str, int, str]], dict[str, list[float]]]:
    """From serve_flows' logs: the sweep's new flow runs and reschedules (seconds of the day, kind, request,
    reason), and the times of failed dispatch attempts by error."""
    sweeps: list[tuple[float, str, int, str]] = []
    failures: dict[str, list[float]] = {}
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            stamp = _seconds(line[:12])
            if stamp is None:
                continue
            if match := SWEEP_LINE.search(line):
                kind = "new flow run" if match["kind"].startswith("new flow run") else "rescheduled"
                sweeps.append((stamp, kind, int(match["request"]), match["reason"].strip()[:80]))
            elif match := DISPATCH_FAILED.search(line):
                failures.setdefault(match["error"], []).append(stamp)
    return sweeps, {k: sorted(v) for k, v in failures.items()}


def _seconds(stamp: str) -> float | None:
    """'10:02:06.380' -> seconds of the day."""
    try:
        hours, minutes, seconds = stamp.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
