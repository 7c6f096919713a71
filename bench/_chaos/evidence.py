"""evidence.txt of bench/chaos.py: for each stuck, failed or unfinished request and each key submitted twice,
what the database, Prefect, Slurm's accounting and serve_flows' logs hold of it."""

from __future__ import annotations

from pathlib import Path

from bench._chaos.slurm import sacct_lines
from bench._readings import flow_run_states
from bench._report import say


def write_evidence(
    path: Path, logs: list[Path], request_ids: list[int], duplicated: dict[str, list[str]]
) -> None:
    """Written to `path`; `logs` are serve_flows' (all its starts)."""
    from analyses.models import AssemblyAnalysisRequest
    from workflows.models import ClusterJob, RequestProgress, Trigger
    from workflows.selectors import source_label

    out: list[str] = []
    keys = {c.rsplit("-", 1)[0] for c in duplicated}
    request_ids = sorted(
        set(request_ids)
        | set(
            ClusterJob.objects.filter(key__in=keys).exclude(request=None).values_list("request_id", flat=True)
        )
    )
    texts = [(log.name, log.read_text(errors="replace").splitlines()) for log in logs]
    for comment, job_ids in duplicated.items():
        out.append(f"== key {comment}: Slurm jobs {', '.join(job_ids)}")
        out += [f"  sacct {line}" for line in sacct_lines(job_ids)]
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
                for state in flow_run_states(flow_run_id):
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
        for name, lines in texts:
            hits = [line for line in lines if any(n in line for n in needles)]
            if hits:
                out.append(f"  {name}: {len(hits)} lines")
                out += [f"    {line[:300]}" for line in hits[-80:]]
    path.write_text("\n".join(out) + "\n")
    say(f"evidence for requests {request_ids or '-'} and {len(duplicated)} duplicated key(s): {path}")
