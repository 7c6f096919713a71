"""The figures of bench/submit.py: the phases' table, what (c) and (d) did, the SQL counts against the small
size, where (b)'s time goes, and the ratios with their goals."""

from __future__ import annotations

from bench._report import say, verdict
from bench._submit.phases import Measured

RATIO_B_A_GOAL = 1.25
RATIO_RERUN_GOAL = 0.05


def report(m: Measured, n: int, small_size: int) -> float:
    """Prints the figures of `m` (N = `n`, the small size `small_size`); returns the ratio (b)/(a)."""
    from workflows.models import ClusterJob

    phases, small, same = m.phases, m.small, m.same
    d1, d2, request_d = m.d1, m.d2, m.request_d
    queries_b, queries_c, steps_b, steps_c = m.queries_b, m.queries_c, m.steps_b, m.steps_c
    runner_a2, runner_b = m.runner_a2, m.runner_b
    t_b = phases["b"].seconds
    say(f"{'phase':<46} {'total s':>8} {'ms/job':>8} {'sbatch':>7} {'squeue':>7} {'sacct':>6} {'SQL':>5}")
    for name in ("a", "a2", "b", "c", "b1", "d1", "d2"):
        if name in phases:
            say(phases[name].row(n))
    say()
    c_sbatch = phases["c"].calls["sbatch"]
    d2_sbatch = phases["d2"].calls["sbatch"]
    say(
        f"(c) returned the job id of (b) for {same}/{n} submissions; sbatch calls in (c): {c_sbatch} (must be 0)"
    )
    say(
        f"(c) SQL: {queries_c.count} statements ({queries_c.kinds_text()}), executing {1000 * queries_c.seconds:.1f} ms; "
        f"{steps_c.calls['COMMIT']} COMMIT {1000 * steps_c.seconds['COMMIT']:.1f} ms"
    )
    say(
        "(c) steps, ms: "
        + ", ".join(
            f"{step} {1000 * steps_c.seconds[step]:.1f}"
            for step in (
                "reconnect",
                "ledger.insert_missing()",
                "ledger.locked() enter",
                "ledger.locked() exit",
                "ledger.records()",
            )
        )
    )
    say(
        f"(d1) submitted {len(d1.result.submitted)} steps; (d2) submitted {len(d2.result.submitted)}, "
        f"sbatch calls in (d2): {d2_sbatch} (must be 0), waiting={d2.result.waiting}; "
        f"ledger rows of the request: {ClusterJob.objects.filter(request_id=request_d).count()}"
    )
    say(f"(d1) SQL: {d1.queries.count} statements ({d1.queries.kinds_text()})")
    say(
        f"(d2) SQL: {d2.queries.count} statements ({d2.queries.kinds_text()}), executing {1000 * d2.queries.seconds:.1f} ms"
    )
    if small:
        large = {
            "b": queries_b.count,
            "c": queries_c.count,
            "d1": d1.queries.count,
            "d2": d2.queries.count,
        }
        compared = ", ".join(f"({name}) {small[name]} vs {large[name]}" for name in large)
        constant = "constant in N" if small == large else "NOT constant in N"
        say(f"SQL statements with {small_size} instead of {n}: {compared}  -> {constant}")
    say()
    sbatch_b = runner_b.seconds["sbatch"]
    per = lambda seconds: 1000 * seconds / n  # noqa: E731
    say("where (b)'s time goes (ms for the batch, and per job; steps timed around the ledger calls):")
    for step, what in (
        ("ledger.insert_missing()", "INSERT ... ON CONFLICT DO NOTHING, COMMIT"),
        ("ledger.locked() enter", "BEGIN, SELECT FOR UPDATE"),
        ("ledger.locked() exit", "bulk UPDATE of the job ids, COMMIT"),
        ("ledger.records()", "SELECT"),
    ):
        say(
            f"  {step + ': ' + what:<66} {1000 * steps_b.seconds[step]:8.2f} {per(steps_b.seconds[step]):6.2f}"
            f"   ({steps_b.calls[step]} call)"
        )
    say(
        f"  {'SlurmClient.submit: the sbatch subprocesses':<66} {1000 * sbatch_b:8.2f} {per(sbatch_b):6.2f}"
        f"   (in (a2): {per(runner_a2.seconds['sbatch']):.2f}/job)"
    )
    ledger_total = sum(steps_b.seconds[s] for s in steps_b.seconds if s != "COMMIT")
    rest = t_b - ledger_total - sbatch_b
    say(f"  {'rest (key, script files, environment, Python)':<66} {1000 * rest:8.2f} {per(rest):6.2f}")
    commits = steps_b.seconds["COMMIT"]
    say(
        f"  the ledger together: {1000 * ledger_total:.1f} ms = SQL execute {1000 * queries_b.seconds:.1f} "
        f"({queries_b.count} statements: {queries_b.kinds_text()}) + {steps_b.calls['COMMIT']} COMMIT "
        f"{1000 * commits:.1f} + ORM/Python {1000 * (ledger_total - queries_b.seconds - commits):.1f}"
    )
    say()
    t_a = phases["a"].seconds
    ratio_ba = t_b / t_a
    ratio_cb = phases["c"].seconds / t_b
    ratio_d = d2.seconds / d1.seconds
    say(f"ratio (b)/(a)   = {ratio_ba:.3f}   goal <= {RATIO_B_A_GOAL}: {verdict(ratio_ba <= RATIO_B_A_GOAL)}")
    say(f"ratio (a2)/(a)  = {phases['a2'].seconds / t_a:.3f}   (the client's own share)")
    say(f"ratio (b)/(a2)  = {t_b / phases['a2'].seconds:.3f}   (the ledger's share over the client's sbatch)")
    if "b1" in phases:
        say(f"ratio (b1)/(a)  = {phases['b1'].seconds / t_a:.3f}   (one at a time, for comparison)")
    say(f"ratio (d1)/(a)  = {d1.seconds / t_a:.3f}   (a whole first pass: plan frozen, N steps submitted)")
    say(
        f"ratio (c)/(b)   = {ratio_cb:.4f}  goal <= {RATIO_RERUN_GOAL}, 0 sbatch: "
        f"{verdict(ratio_cb <= RATIO_RERUN_GOAL and c_sbatch == 0 and same == n)}"
    )
    say(
        f"ratio (d2)/(d1) = {ratio_d:.4f}  goal <= {RATIO_RERUN_GOAL}, 0 sbatch: "
        f"{verdict(ratio_d <= RATIO_RERUN_GOAL and d2_sbatch == 0 and not d2.result.submitted)}"
    )
    say(f"ratio (d2)/(b)  = {d2.seconds / t_b:.4f}  (the rerun pass against the bare batch)")
    return ratio_ba
