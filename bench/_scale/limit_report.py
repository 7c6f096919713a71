"""The figures of scenario (b) for every N (bench._scale.limit_figures), their ratios to the smallest N, and the
goals of issue 19 for the service at the job limit."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from bench._report import fmt, say, say_goal, say_header
from bench._scale.limit_figures import (
    Fairness,
    Legs,
    Readings,
    Round,
    SlotUse,
    fairness,
    flow_process_cpu,
    flow_process_lives,
    legs,
    most_active_jobs,
    per_minute,
    process_starts,
    rounds,
    slot_uses,
    window_samples,
)


@dataclass
class Summary:
    r: Readings
    rounds: list[Round]
    resumes_before: int  # in the window before its first round
    resumes: int  # in the window
    alive: int  # flow processes alive at once, the most in the window
    alive_all: int  # the most over the whole run (creation included)
    started: list[int]  # flow processes started per minute of the window
    freed: int
    submitted: int
    most_active: int
    uses: list[SlotUse]
    idle_ends: int
    legs: Legs
    fair: Fairness

    @property
    def over(self) -> list[Round]:
        return [x for x in self.rounds if x.resumes > x.allowed]

    @property
    def delays(self) -> list[float]:
        return [u.from_end for u in self.uses if u.from_end is not None]

    @property
    def unused(self) -> int:
        return sum(1 for u in self.uses if u.used is None)


def summarise(r: Readings) -> Summary:
    found, before = rounds(r)
    samples = window_samples(r)
    uses, idle = slot_uses(r)
    return Summary(
        r=r,
        rounds=found,
        resumes_before=before,
        resumes=sum(1 for t, _ in r.resumes if r.in_window(t)),
        alive=max((len(s.flow_pids) for s in samples), default=0),
        alive_all=max((len(s.flow_pids) for s in r.samples), default=0),
        started=per_minute(process_starts(r.samples), r.release_start, r.drain_end),
        freed=sum(1 for job in r.jobs if r.in_window(job.recorded)),
        submitted=sum(1 for job in r.jobs if r.in_window(job.submitted)),
        most_active=most_active_jobs(r),
        uses=uses,
        idle_ends=idle,
        legs=legs(r, uses),
        fair=fairness(r),
    )


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean_per_round(s: Summary) -> float:
    return statistics.mean(x.resumes for x in s.rounds) if s.rounds else 0.0


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S")


def report(results: list[Readings]) -> None:
    if not results:
        say("no N finished: no figures")
        return
    summaries = [summarise(r) for r in results]
    say()
    say(
        "Window: from the first release to the end of the drain. Resumes: the flow runs' Resuming states in Prefect "
        "(one per resume accepted). A round: a poll that recorded job ends, until the next one (its wake-up and any "
        "sweep in between); allowed = slots it freed + requests whose own jobs ended."
    )
    header = (
        f"{'N':>4} {'window s':>8} {'released':>8} {'freed':>5} {'submitted':>9} {'most active':>11} "
        f"{'rounds':>6} {'resumes':>7} {'per round mean/max':>18} {'rounds over':>11} {'sweep resumes':>13} "
        f"{'progress resumes':>16}"
    )
    say_header(header)
    for s in summaries:
        r = s.r
        say(
            f"{r.n:>4} {r.drain_end - r.release_start:>8.0f} {len(r.released):>8} {s.freed:>5} {s.submitted:>9} "
            f"{str(s.most_active) + ' / ' + str(r.max_active_jobs):>11} {len(s.rounds):>6} {s.resumes:>7} "
            f"{_mean_per_round(s):>13.2f} / {max((x.resumes for x in s.rounds), default=0):<2} "
            f"{len(s.over):>11} {sum(len(x) for _, x in r.sweep_resumes):>13} {r.progress_resumes:>16}"
        )
    say(
        "(most active: ledger rows holding a slot at once / SLURM_MAX_ACTIVE_JOBS; sweep resumes: requests the "
        "'Sweep:' log lines name as resumed; progress resumes: the sum of RequestProgress.resumes, whole run)"
    )

    say()
    header = (
        f"{'N':>4} {'alive max (limit)':>17} {'whole run max':>13} {'started':>7} {'per minute median/max':>21}  "
        "started in each minute of the window"
    )
    say_header(header)
    for s in summaries:
        r = s.r
        say(
            f"{r.n:>4} {str(s.alive) + ' (' + str(r.max_flow_processes) + ')':>17} {s.alive_all:>13} "
            f"{sum(s.started):>7} {statistics.median(s.started):>14.1f} / {max(s.started):<4}  "
            + " ".join(str(x) for x in s.started)
        )
    say(
        "(flow processes: children of serve_flows running prefect.engine, zombies excluded, sampled every "
        f"{_sample_every(results[0]):.2g} s; whole run: creation included)"
    )

    say()
    say(
        "Freed slot -> next job, for the ends recorded while requests waited in the capacity queue (each end, in "
        "order, paired with the first job submitted after it that no earlier end took)"
    )
    header = (
        f"{'N':>4} {'ends':>5} {'nothing waited':>14} {'never used':>10} {'end -> job median/p90/max s':>27} "
        f"{'recorded -> job median/max s':>28} {'over 2 polls':>12}"
    )
    say_header(header)
    for s in summaries:
        bound = 2 * s.r.poll_max
        from_record = [u.from_record for u in s.uses if u.from_record is not None]
        say(
            f"{s.r.n:>4} {len(s.uses):>5} {s.idle_ends:>14} {s.unused:>10} "
            f"{fmt(_median(s.delays)) + ' / ' + fmt(_p90(s.delays)) + ' / ' + fmt(max(s.delays, default=None)):>27} "
            f"{fmt(_median(from_record)) + ' / ' + fmt(max(from_record, default=None)):>28} "
            f"{sum(1 for d in s.delays if d > bound):>12}"
        )
    say(
        "(end: Slurm's End, whole seconds, so up to 1 s early; recorded: the poll that recorded it; job: the next "
        "job's submitted_at)"
    )

    say()
    say(
        "Where the time goes (window): the machine's CPU (2 cores), the stack's, and each freed slot's way to its "
        "next job: the poll's record -> the resume of the request that got it -> its flow process Running -> sbatch"
    )
    header = (
        f"{'N':>4} {'busy':>5} {'load':>9} {'serve_flows s':>13} {'Prefect s':>9} {'flow procs':>10} "
        f"{'CPU s each median/max':>21} {'life s median':>13} {'rescheduled':>17} "
        f"{'-> resume':>9} {'-> Running':>10} {'-> sbatch':>9}"
    )
    say_header(header)
    for s in summaries:
        start, end = s.r.cpu
        busy = (end.busy - start.busy) / (end.total - start.total) if end.total > start.total else 0.0
        each = flow_process_cpu(s.r)
        say(
            f"{s.r.n:>4} {100 * busy:>4.0f}% {f'{start.load:.1f}-{end.load:.1f}':>9} "
            f"{end.serve_flows - start.serve_flows:>13.1f} {end.prefect - start.prefect:>9.1f} {len(each):>10} "
            f"{fmt(_median(each)) + ' / ' + fmt(max(each, default=None)):>21} "
            f"{fmt(_median(flow_process_lives(s.r))):>13} "
            f"{f'{_rescheduled(s.r, window=False)} / {_rescheduled(s.r, window=True)}':>17} "
            f"{_spread(s.legs.to_resume):>9} {_spread(s.legs.to_running):>10} {_spread(s.legs.to_submit):>9}"
        )
    say(
        "(busy: of the machine, everyone's processes; load: 1-minute load average at the first release and at the "
        "end; serve_flows: its own CPU, its flow processes apart; Prefect: the server's process group; CPU each: a "
        "flow process's user + system CPU when last seen; rescheduled: flow runs the sweeps put back in the queue, "
        "while requests were created / in the window; the legs: median s)"
    )

    say()
    say("Fairness: the order in which requests got their first job")
    header = (
        f"{'N':>4} {'pairs in creation order':>23} {'largest shift':>13} {'never served':>12} "
        f"{'3rd+ job while another had none':>31} {'jobs per request min/median/max':>31}"
    )
    say_header(header)
    for s in summaries:
        f = s.fair
        least, median, most = f.jobs_per_request
        say(
            f"{s.r.n:>4} {100 * f.in_order:>22.1f}% {f.largest_shift:>13} {f.never_served:>12} "
            f"{f.violations:>31} {f'{least} / {median:g} / {most}':>31}"
        )
    for s in summaries:
        say(
            f"  N={s.r.n}, median first job (s from the first release; negative: before it) per tenth of the "
            "requests by creation: " + ", ".join(fmt(t) for t in s.fair.first_job_by_tenth)
        )

    base = summaries[0]
    say()
    say(f"Ratios to N={base.r.n}")
    header = (
        f"{'N':>4} {'N ratio':>7} {'resumes/round':>13} {'resumes':>7} {'alive max':>9} {'started/min':>11} "
        f"{'end->job median':>15} {'end->job max':>12} {'submitted':>9}"
    )
    say_header(header)
    for s in summaries:
        say(
            f"{s.r.n:>4} {s.r.n / base.r.n:>7.0f} {_ratio(_mean_per_round(s), _mean_per_round(base)):>13} "
            f"{_ratio(s.resumes, base.resumes):>7} {_ratio(s.alive, base.alive):>9} "
            f"{_ratio(statistics.mean(s.started), statistics.mean(base.started)):>11} "
            f"{_ratio(_median(s.delays), _median(base.delays)):>15} "
            f"{_ratio(max(s.delays, default=None), max(base.delays, default=None)):>12} "
            f"{_ratio(s.submitted, base.submitted):>9}"
        )

    say()
    for s in summaries:
        goals(s)


def goals(s: Summary) -> None:
    r = s.r
    worst = max(s.rounds, key=lambda x: x.resumes - x.allowed, default=None)
    say_goal(
        not s.over and s.resumes_before == 0,
        f"resumes per round <= slots freed + requests whose own jobs ended, N={r.n}: "
        + (
            f"{len(s.over)} of {len(s.rounds)} rounds over; the worst: {worst.resumes} resumes for "
            f"{worst.freed} + {worst.ended_requests} at {_clock(worst.at)}"
            if worst is not None
            else "no round"
        )
        + (f"; {s.resumes_before} resumes before the first round" if s.resumes_before else ""),
    )
    say_goal(
        s.alive_all <= r.max_flow_processes,
        f"flow processes alive <= WORKFLOWS_MAX_FLOW_PROCESSES ({r.max_flow_processes}), N={r.n}: at most "
        f"{s.alive_all} (releases: {s.alive})",
    )
    bound = 2 * r.poll_max
    late = [d for d in s.delays if d > bound]
    say_goal(
        bool(s.uses) and not late and not s.unused,
        f"a freed slot is used within 2 poll intervals (2 x SLURM_POLL_MAX_SECONDS = {bound:g} s) while requests "
        f"wait, N={r.n}: "
        + (
            f"median {fmt(_median(s.delays))} s, max {fmt(max(s.delays, default=None))} s over {len(s.uses)} "
            f"slots; {len(late)} later, {s.unused} never used"
            if s.uses
            else "no slot freed while requests waited"
        ),
    )
    f = s.fair
    example = ""
    if f.first_violation is not None:
        at, served, without = f.first_violation
        example = f" (first at {_clock(at)}: request {served} while request {without} had none)"
    say_goal(
        f.violations == 0,
        f"round-robin: no request gets a third job while another has none, N={r.n}: {f.violations} such jobs"
        f"{example}; first jobs in creation order for {100 * f.in_order:.1f}% of pairs (largest shift "
        f"{f.largest_shift} places), {f.never_served} requests never served",
    )


def _rescheduled(r: Readings, *, window: bool) -> int:
    return sum(
        len(runs) for t, runs in r.rescheduled if (t >= r.release_start) == window and t <= r.drain_end
    )


def _spread(values: list[float]) -> str:
    return fmt(_median(values))


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}"


def _sample_every(r: Readings) -> float:
    gaps = [b.at - a.at for a, b in zip(r.samples, r.samples[1:], strict=False)]
    return statistics.median(gaps) if gaps else 0.0
