"""The figures of scenario (a) for every R, their ratios to the smallest R and the goals of issue 19, (a)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from bench._report import percentiles_ms, say, say_goal, say_header
from bench._scale.study_passes import Pass, PassesResult
from bench._scale.study_service import ServiceResult

PASS_GOAL_SECONDS = 5.0
GOAL_STEPS = 20_000
ARTIFACT_GOAL_BYTES = 64 * 1024
CPU_PER_END_GOAL_SECONDS = 0.5
ADMIN_GOAL_MS = 500.0
API_P99_GOAL_MS = 50.0


def _median(passes: Sequence[Pass], figure: Callable[[Pass], float]) -> float:
    return statistics.median(figure(p) for p in passes)


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}"


def report(passes: list[PassesResult], services: list[ServiceResult]) -> None:
    if passes:
        _passes_tables(passes)
    if services:
        _service_table(services)
    _ratios(passes, services)
    _goals(passes, services)


def _passes_tables(results: list[PassesResult]) -> None:
    say()
    say(
        "Part 1, the passes in this process (wall ms / CPU ms / SQL statements; rerun and job-end: median of the "
        "rounds)"
    )
    header = (
        f"{'R':>6} {'steps':>6} {'freeze s':>9} {'CPU s':>6} {'SQL':>6}  {'first pass':>10} {'CPU':>6} {'SQL':>4} "
        f"{'sbatch':>6}  {'rerun':>7} {'CPU':>6} {'SQL':>4}  {'job end':>7} {'CPU':>6} {'SQL':>4} {'sbatch':>6}"
    )
    say_header(header)
    for r in results:
        f, first = r.freeze, r.first.call
        say(
            f"{r.runs:6d} {r.steps:6d} {f.wall_ms / 1000:9.1f} {f.cpu_ms / 1000:6.1f} {f.sql:6d}  "
            f"{first.wall_ms:10.0f} {first.cpu_ms:6.0f} {first.sql:4d} {first.sbatch:6d}  "
            f"{_wall(r.reruns):7.0f} {_median(r.reruns, lambda p: p.call.cpu_ms):6.0f} {_most_sql(r.reruns):4d}  "
            f"{_wall(r.job_ends):7.0f} {_median(r.job_ends, lambda p: p.call.cpu_ms):6.0f} "
            f"{_most_sql(r.job_ends):4d} "
            f"{max(p.call.sbatch for p in r.job_ends):6d}"
        )
    say()
    say(
        "Part 1, artifacts and pages (the request's ledger filled: a job per planned step; admin: median of the "
        "loads; CPU: this process's, ms)"
    )
    header = (
        f"{'R':>6} {'artifact B':>10} {'all failed B':>12} {'flow reads ms':>13} {'SQL':>4}  {'jobs':>6} "
        f"{'admin ms':>8} {'(max)':>6} {'CPU':>5} {'SQL':>4}  {'API p50':>7} {'p95':>6} {'p99':>6} {'CPU p99':>7} "
        f"{'SQL':>5}"
    )
    say_header(header)
    for r in results:
        every = [r.first, *r.reruns, *r.job_ends]
        admin = r.admin
        api = r.api
        assert admin is not None and api is not None
        p50, p95, p99 = percentiles_ms(api.timings)
        say(
            f"{r.runs:6d} {max(p.artifact_bytes for p in every):10,d} {r.artifact_all_failed_bytes:12,d} "
            f"{_median(every, lambda p: p.flow_reads.wall_ms):13.0f} {max(p.flow_reads.sql for p in every):4d}  "
            f"{r.jobs:6d} {statistics.median(admin.timings):8.0f} {max(admin.timings):6.0f} "
            f"{statistics.median(admin.cpu):5.0f} {admin.sql[0]:4d}  {p50:7.1f} {p95:6.1f} {p99:6.1f} "
            f"{percentiles_ms(api.cpu)[2]:7.1f} {api.sql[0]:2d}/{api.sql[1]:<2d}"
        )
    for r in results:
        for line in r.profile:
            say(line)


def _service_table(results: list[ServiceResult]) -> None:
    say()
    say("Part 2, the whole service: one request; held jobs released one a second over the window")
    header = (
        f"{'R':>6} {'suspended s':>11} {'CPU s':>6} {'held':>5}  {'window s':>8} {'released':>8} {'ends':>5} "
        f"{'passes':>6} {'resumes':>7} {'flow procs':>10} {'alive':>5} {'RSS MB':>6}  {'CPU s':>6} {'(own)':>6} "
        f"{'per end s':>9} {'Prefect s':>9}  {'artifacts':>9} {'B each':>7}"
    )
    say_header(header)
    for r in results:
        suspended = f"{r.suspended_after:.0f}" if r.suspended_after is not None else "never"
        per_end = f"{r.cpu_per_end:.3f}" if r.cpu_per_end is not None else "-"
        each = r.artifact_bytes // r.artifact_versions if r.artifact_versions else 0
        peak = max(r.flows.peak_rss_kb, r.first_flows.peak_rss_kb) / 1024
        say(
            f"{r.runs:6d} {suspended:>11} {r.first_cpu.total:6.1f} {r.held:5d}  {r.window:8.0f} {r.released:8d} "
            f"{r.ended:5d} {r.passes:6d} {r.resuming:7d} {len(r.flows.pids):10d} {r.flows.alive_max:5d} "
            f"{peak:6.0f}  {r.cpu.total:6.1f} {r.cpu.own:6.1f} {per_end:>9} {r.prefect_cpu:9.1f}  "
            f"{r.artifact_versions:9d} {each:7,d}"
        )
    say(
        "(suspended: request created -> its flow run Suspended, with the CPU of serve_flows' tree meanwhile: the "
        "freeze and first pass in a flow process; flow procs: started in the window; alive: the most at once; RSS: "
        "peak of a flow process, first pass included; CPU: serve_flows and every process under it over the window, "
        "own = serve_flows itself: the runner and the service loop)"
    )


def _ratios(passes: list[PassesResult], services: list[ServiceResult]) -> None:
    if len(passes) < 2 and len(services) < 2:
        return
    say()
    if len(passes) > 1:
        base = passes[0]
        say(f"Ratios to R={base.runs}, part 1 (medians)")
        header = (
            f"{'R':>6} {'R ratio':>7} {'freeze':>7} {'first':>7} {'rerun':>7} {'SQL':>5} {'job end':>7} {'SQL':>5} "
            f"{'artifact':>8} {'admin':>7} {'API p99':>7}"
        )
        say_header(header)
        for r in passes:
            assert r.admin and r.api and base.admin and base.api
            cells: list[tuple[float | None, float | None]] = [
                (r.freeze.wall_ms, base.freeze.wall_ms),
                (r.first.call.wall_ms, base.first.call.wall_ms),
                (_wall(r.reruns), _wall(base.reruns)),
                (_most_sql(r.reruns), _most_sql(base.reruns)),
                (_wall(r.job_ends), _wall(base.job_ends)),
                (_most_sql(r.job_ends), _most_sql(base.job_ends)),
                (r.artifact_all_failed_bytes, base.artifact_all_failed_bytes),
                (statistics.median(r.admin.timings), statistics.median(base.admin.timings)),
                (r.api.p99, base.api.p99),
            ]
            widths = [7, 7, 7, 5, 7, 5, 8, 7, 7]
            say(
                f"{r.runs:6d} {r.runs / base.runs:7.0f} "
                + " ".join(
                    f"{_ratio(value, of):>{width}}" for (value, of), width in zip(cells, widths, strict=True)
                )
            )
    if len(services) > 1:
        base_s = services[0]
        say(f"Ratios to R={base_s.runs}, part 2")
        header = f"{'R':>6} {'R ratio':>7} {'suspended':>9} {'CPU/end':>7} {'passes/end':>10} {'RSS':>5}"
        say_header(header)
        for s in services:
            figures: list[tuple[float | None, float | None]] = [
                (s.suspended_after, base_s.suspended_after),
                (s.cpu_per_end, base_s.cpu_per_end),
                (_passes_per_end(s), _passes_per_end(base_s)),
                (_peak(s), _peak(base_s)),
            ]
            say(
                f"{s.runs:6d} {s.runs / base_s.runs:7.0f} "
                + " ".join(
                    f"{_ratio(value, of):>{width}}"
                    for (value, of), width in zip(figures, [9, 7, 10, 5], strict=True)
                )
            )


def _wall(passes: Sequence[Pass]) -> float:
    return _median(passes, lambda p: p.call.wall_ms)


def _most_sql(passes: Sequence[Pass]) -> int:
    return max(p.call.sql for p in passes)


def _passes_per_end(s: ServiceResult) -> float | None:
    return s.passes / s.ended if s.ended else None


def _peak(s: ServiceResult) -> float:
    return max(s.flows.peak_rss_kb, s.first_flows.peak_rss_kb) / 1024


def _times(value: float | None, base: float | None) -> str:
    """' (x2.35 of R=50)'-style note of a figure against the smallest R's."""
    return f", x{value / base:.2f} of the smallest R" if value is not None and base else ""


def _statements_goal(
    passes: list[PassesResult], name: str, of: Callable[[PassesResult], list[Pass]]
) -> tuple[bool, str]:
    """Whether a pass's statement count stays the same as R grows. A pass whose steps wait for a cluster slot
    also claims slots (capacity.claim_slots) on every pass, so R below and above the slots are two cases: the
    counts are compared among the R in the same case as the largest (all of them if that leaves one)."""
    counts = {r.runs: max(p.call.sql for p in of(r)) for r in passes}
    queued = bool(passes[-1].capacity_wanted)
    same_case = [r for r in passes if bool(r.capacity_wanted) == queued]
    compared = same_case if len(same_case) > 1 else passes
    text = f"SQL statements of a pass independent of R, {name}: " + ", ".join(
        f"R={r.runs}: {counts[r.runs]}" + (" (steps wait for a slot)" if r.capacity_wanted else "")
        for r in passes
    )
    if compared is same_case and len(compared) < len(passes):
        text += f"; compared from R={compared[0].runs}"
    first, last = of(passes[0])[-1].call.kinds, of(passes[-1])[-1].call.kinds
    if counts[passes[0].runs] != counts[passes[-1].runs]:
        more, fewer = last - first, first - last
        text += f"; R={passes[-1].runs} has " + ", ".join(
            [f"+{n} {kind}" for kind, n in more.items()] + [f"-{n} {kind}" for kind, n in fewer.items()]
        )
    return len({counts[r.runs] for r in compared}) == 1, text


def _goals(passes: list[PassesResult], services: list[ServiceResult]) -> None:
    say()
    if passes:
        top, base = passes[-1], passes[0]
        at = f"R={top.runs}, {top.steps:,} steps" + (
            "" if top.steps >= GOAL_STEPS else f" (the goal is stated at {GOAL_STEPS:,})"
        )
        kinds: list[tuple[str, Callable[[PassesResult], list[Pass]]]] = [
            ("first pass (the freeze apart)", lambda r: [r.first]),
            ("rerun pass, nothing to do", lambda r: r.reruns),
            ("job-end pass", lambda r: r.job_ends),
        ]
        for name, of in kinds:
            wall = _median(of(top), lambda p: p.call.wall_ms) / 1000
            cpu = _median(of(top), lambda p: p.call.cpu_ms) / 1000
            say_goal(
                wall <= PASS_GOAL_SECONDS,
                f"a pass <= {PASS_GOAL_SECONDS:.0f} s, {name}, {at}: {wall:.2f} s (CPU {cpu:.2f} s)"
                + _times(wall, _median(of(base), lambda p: p.call.wall_ms) / 1000),
            )
        for name, of in kinds:
            say_goal(*_statements_goal(passes, name, of))
        say(
            f"-       no goal stated for the plan freeze: {top.freeze.wall_ms / 1000:.1f} s at R={top.runs} "
            f"({top.freeze.sql:,} SQL)" + _times(top.freeze.wall_ms, base.freeze.wall_ms)
        )
    artifact_sizes = {
        r.runs: max(
            [r.artifact_all_failed_bytes, *(p.artifact_bytes for p in [r.first, *r.reruns, *r.job_ends])]
        )
        for r in passes
    }
    for s in services:
        artifact_sizes[s.runs] = max(artifact_sizes.get(s.runs, 0), s.artifact_max_bytes)
    if artifact_sizes:
        say_goal(
            all(size <= ARTIFACT_GOAL_BYTES for size in artifact_sizes.values()),
            f"<= {ARTIFACT_GOAL_BYTES // 1024} KB of artifact per pass (the largest: part 1's passes, every run "
            "failed, part 2's versions in Prefect): "
            + ", ".join(f"R={runs}: {size:,} B" for runs, size in artifact_sizes.items()),
        )
    if services:
        top_s, base_s = services[-1], services[0]
        per_end = top_s.cpu_per_end
        rate = top_s.ended / top_s.window if top_s.window else 0.0
        say_goal(
            per_end is not None and per_end <= CPU_PER_END_GOAL_SECONDS,
            f"orchestrator CPU per job end <= {CPU_PER_END_GOAL_SECONDS} s at R={top_s.runs} (jobs ending at "
            f"{rate:.2f}/s): "
            + (f"{per_end:.3f} s" if per_end is not None else "no job end recorded")
            + _times(per_end, base_s.cpu_per_end),
        )
    if passes:
        top = passes[-1]
        assert top.admin and top.api and passes[0].admin and passes[0].api
        at_jobs = f"{top.jobs:,} jobs" + ("" if top.jobs >= GOAL_STEPS else f" (the goal: {GOAL_STEPS:,})")
        admin = statistics.median(top.admin.timings)
        say_goal(
            admin <= ADMIN_GOAL_MS,
            f"admin request page <= {ADMIN_GOAL_MS:.0f} ms at {at_jobs}: {admin:.0f} ms (median of "
            f"{len(top.admin.timings)}, max {max(top.admin.timings):.0f})"
            + _times(admin, statistics.median(passes[0].admin.timings)),
        )
        say_goal(
            top.api.p99 <= API_P99_GOAL_MS,
            f"API jobs page p99 <= {API_P99_GOAL_MS:.0f} ms at {at_jobs}: {top.api.p99:.1f} ms over "
            f"{len(top.api.timings)} pages" + _times(top.api.p99, passes[0].api.p99),
        )
    if services:
        most = max(max(s.flows.alive_max, s.first_flows.alive_max) for s in services)
        limit = services[-1].max_flow_processes
        say_goal(
            most <= limit,
            f"flow processes alive <= WORKFLOWS_MAX_FLOW_PROCESSES ({limit}): at most {most} "
            + "("
            + ", ".join(f"R={s.runs}: {max(s.flows.alive_max, s.first_flows.alive_max)}" for s in services)
            + ")",
        )
