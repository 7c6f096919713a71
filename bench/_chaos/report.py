"""The figures of bench/chaos.py once its requests have finished (or are stuck): per request, the kills it lived
through and its recovery; for the run, duplicates in Slurm and in the domain, orphans adopted, flow runs left
not final; and the goals. A finding writes evidence.txt."""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench._chaos.evidence import write_evidence
from bench._chaos.phases import phase_order
from bench._chaos.record import STUDIES, Posted
from bench._chaos.slurm import slurm_jobs
from bench._readings import flow_run_ids, flow_run_states, flow_runs, log_findings
from bench._report import fmt, say, say_goal

if TYPE_CHECKING:
    from bench._chaos.run import Chaos


@dataclass
class Life:
    """One request's row of the table: the kills of its life, and from the last of them to its end."""

    request: Posted
    kills: int
    life: float | None
    recover: float | None
    progress: Any  # its RequestProgress, if any
    analyses: int
    backoff: float | None


def report(chaos: Chaos, last_kill: float) -> bool:
    """The figures and the goals; False when there is a finding (its evidence is then in evidence.txt)."""
    from django.db.models import Count

    from analyses.models import Analysis, Assembly
    from workflows.models import ClusterJob, RequestProgress

    args = chaos.args
    stall = float(chaos.service_settings["WORKFLOWS_STALL_SECONDS"])
    ids = [r.request_id for r in chaos.requests]
    chaos.watch(0)
    done = [r for r in chaos.requests if r.finished_at is not None]
    completed = [r for r in done if r.status == "completed"]
    stuck = [r for r in chaos.requests if r.finished_at is None]
    failed = [r for r in done if r.status != "completed"]

    slurm = slurm_jobs(chaos.started_at, chaos.jobs_root)
    by_comment: dict[str, set[str]] = defaultdict(set)
    for job_id, (comment, _) in slurm.items():
        by_comment[comment].add(job_id)
    duplicated = {c: sorted(j) for c, j in by_comment.items() if c and len(j) > 1}
    ledger_ids = {
        job_id
        for job_id in ClusterJob.objects.exclude(slurm_job_id=None).values_list("slurm_job_id", flat=True)
        if job_id is not None
    }
    unknown = sorted(set(slurm) - ledger_ids)
    missing = sorted(ledger_ids - set(slurm))
    doubles = {
        model.__name__: list(
            model.objects.filter(request__in=ids)
            .values(*unique)
            .annotate(n=Count("pk"))
            .filter(n__gt=1)
            .values_list(*unique, "n")
        )
        for model, unique in ((Assembly, ("request", "run")), (Analysis, ("request", "run", "pipeline")))
    }
    analyses = Counter(
        Analysis.objects.filter(request__in=ids, status="completed").values_list("request_id", flat=True)
    )
    progress = {p.request_id: p for p in RequestProgress.objects.filter(request_id__in=ids)}
    current_runs = flow_run_ids(ids)
    reschedules = {
        request_id: recovery_reschedules(request_id, flow_run_id, stall) if flow_run_id else []
        for request_id, flow_run_id in current_runs.items()
    }
    all_reschedules = [x for per_request in reschedules.values() for x in per_request]
    premature = [x for x in all_reschedules if x["premature"]]

    orphans = {k: j for kill in chaos.kills for k, j in kill.orphans.items()}
    adopted = {
        key
        for key, job_id in orphans.items()
        if ClusterJob.objects.filter(slurm_job_id=job_id).exists() and len(by_comment.get(key, ())) == 1
    }

    # Per request: the kills of its life, and from the last of them to its end.
    rows: list[Life] = []
    for r in chaos.requests:
        end = r.finished_at
        lived = [k for k in chaos.kills if k.at >= r.at and (end is None or k.at <= end)]
        rows.append(
            Life(
                request=r,
                kills=len(lived),
                life=end - r.at if end else None,
                # From serve_flows' restart after the last kill of its life: the outage itself is not recovery.
                recover=max(0.0, end - lived[-1].at - lived[-1].down) if end and lived else None,
                progress=progress.get(r.request_id),
                analyses=analyses.get(r.request_id, 0),
                backoff=max((x["delay"] for x in reschedules.get(r.request_id, [])), default=None),
            )
        )
    finished_at = max((r.finished_at for r in done if r.finished_at is not None), default=None)
    # Kills after every request had finished have nothing to recover: measure from the last one before.
    in_life = [k for k in chaos.kills if set(k.phases.values()) - {"finishing"}]
    restart = in_life[-1].at + in_life[-1].down if in_life else last_kill
    overall = max(0.0, finished_at - restart) if finished_at and not stuck else None
    runs = flow_runs(i for i in current_runs.values() if i)
    not_final = {
        request_id: runs[flow_run_id].state.name if runs[flow_run_id].state else "no state"
        for request_id, flow_run_id in current_runs.items()
        if flow_run_id in runs and (runs[flow_run_id].state is None or not runs[flow_run_id].state.is_final())
    }
    incidences = Counter(p for k in chaos.kills for p in k.phases.values())
    kills_in = Counter(p for k in chaos.kills for p in set(k.phases.values()))
    positions: Counter[int] = Counter()
    for row in rows:
        r = row.request
        if r.finished_at:
            for k in chaos.kills:
                if r.at <= k.at <= r.finished_at:
                    positions[min(9, int(10 * (k.at - r.at) / (r.finished_at - r.at)))] += 1
    aimed = [k for k in chaos.kills if k.aimed]
    downs = [k.down for k in chaos.kills if not k.orphans]

    say()
    say(
        f"{'request':>7} {'study':<10} {'status':<9} {'kills':>5} {'life s':>7} {'last restart -> end s':>21} "
        f"{'passes':>6} {'resumes':>7} {'recoveries':>10} {'max backoff s':>13} {'generation':>10} "
        f"{'analyses':>8}"
    )
    say("-" * 121)
    for row in rows:
        r, p = row.request, row.progress
        say(
            f"{r.request_id:>7} {r.study:<10} {r.status if r.finished_at else 'STUCK':<9} {row.kills:>5} "
            f"{fmt(row.life):>7} {fmt(row.recover):>21} {p.passes if p else 0:>6} "
            f"{p.resumes if p else 0:>7} {p.total_recoveries if p else 0:>10} {fmt(row.backoff):>13} "
            f"{p.flow_run_generation if p else 0:>10} {row.analyses:>4} / {STUDIES[r.study]}"
        )
    say()
    lives = [row.life for row in rows if row.life is not None]
    recovers = [row.recover for row in rows if row.recover is not None]
    figures = [
        (
            "kills",
            f"{len(chaos.kills)} ({len(in_life)} in an unfinished request's life; {len(aimed)} aimed at a submission, "
            f"{sum(1 for k in aimed if k.orphans)} of them orphaning a job); down "
            + (f"median {statistics.median(downs):.1f} s, max {max(downs):.1f} s" if downs else "-")
            + "".join(f"; {k.down:.0f} s after kill {k.number}" for k in chaos.kills if k.orphans),
        ),
        (
            "kills by phase",
            ", ".join(f"{p} {kills_in[p]} ({incidences[p]})" for p in phase_order(incidences))
            + "  [kills that found a request there (requests there)]",
        ),
        (
            "kills by tenth of a request's life",
            " ".join(str(positions[i]) for i in range(10)),
        ),
        ("flow processes killed", f"{sum(k.flow_processes for k in chaos.kills)}"),
        ("processes surviving a kill", f"{sum(k.survivors for k in chaos.kills)}"),
        (
            "requests completed",
            f"{len(completed)} / {len(chaos.requests)}"
            + (
                f"; FAILED/CANCELLED {', '.join(f'{r.request_id} {r.status}' for r in failed)}"
                if failed
                else ""
            )
            + f"; analyses as expected {sum(1 for row in rows if row.analyses == STUDIES[row.request.study])}"
            f" / {len(rows)}",
        ),
        (
            "requests stuck",
            f"{len(stuck)} (deadline {args.deadline:g} s after the last kill)"
            + "".join(f"; {describe_stuck(r.request_id, current_runs, progress)}" for r in stuck),
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
            ", ".join(f"{name} {len(rows_)}" for name, rows_ in doubles.items()) + " (per request and run)",
        ),
        (
            "orphaned jobs adopted",
            f"{len(adopted)} / {len(orphans)}"
            + (f" ({', '.join(sorted(orphans.values()))})" if orphans else "")
            + f"; serve_flows logged {adoptions(chaos.serve_flows_logs)} adoption(s) in all",
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
            f"{len(not_final)} of the requests' {len(runs)} current flow runs"
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
        ("wall time", f"{time.time() - chaos.t0:.0f} s from the first request"),
    ]
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        say(f"{name:<{width}}  {value}")
    say()
    dup_rows = sum(len(v) for v in doubles.values())
    goals = [
        (f">= 50 kills: {len(chaos.kills)}", len(chaos.kills) >= 50),
        (
            f"0 duplicates: {len(duplicated)} keys in Slurm, {dup_rows} domain rows",
            not duplicated and not dup_rows,
        ),
        (f"0 stuck: {len(stuck)}", not stuck),
    ]
    for text, ok in goals:
        say_goal(ok, text)
    log_findings(chaos.serve_flows_logs)
    findings = bool(stuck or failed or duplicated or dup_rows or unknown or not_final)
    if findings:
        write_evidence(
            chaos.tmp / "evidence.txt",
            chaos.serve_flows_logs,
            [r.request_id for r in stuck + failed] + list(not_final),
            duplicated,
        )
    return not findings


def recovery_reschedules(request_id: int, flow_run_id: str, stall: float) -> list[dict]:
    """The sweep's reschedules of a flow run ("emgapi recovery: ..." Scheduled states): when, with what delay,
    and whether premature: the run was Pending because the runner took it before its start time (Prefect's
    runner fetches runs due within its next 10 s), and the sweep put it back less than WORKFLOWS_STALL_SECONDS
    after that start time, although its process may have been waiting for it."""
    found: list[dict] = []
    previous: Any = None
    for state in flow_run_states(flow_run_id):
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


def describe_stuck(request_id: int, current_runs: dict, progress: dict) -> str:
    """Where a stuck request's flow run is: its state and, if scheduled, when it will start."""
    flow_run_id = current_runs.get(request_id)
    run_ = flow_runs([flow_run_id]).get(flow_run_id) if flow_run_id else None
    p = progress.get(request_id)
    if run_ is None or run_.state is None:
        return f"request {request_id}: no flow run"
    text = f"request {request_id}: flow run {run_.state.name}"
    scheduled = run_.state.state_details.scheduled_time
    if run_.state.type.value == "SCHEDULED" and scheduled:
        text += f" to start in {(scheduled.timestamp() - time.time()):.0f} s"
    return text + (f", {p.recoveries} recoveries in a row" if p else "")


def adoptions(logs: list[Path]) -> int:
    """ "Adopting Slurm job ..." lines (prefect_utils.submission) in every serve_flows log."""
    return sum(log.read_text(errors="replace").count("Adopting Slurm job") for log in logs if log.exists())
