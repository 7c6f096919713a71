"""Whether a request's plan may run unasked, or waits for a holder of the approve permission.

Decided once, by the pass that froze the plan and before its first submission: a plan whose estimate
(each step's CPUs times time limit, summed: an upper bound, conditional steps included) is over
APPROVAL_THRESHOLD_CPU_HOURS, or a request that asked for resources over the site's caps (REQUEST_RESOURCE_CAPS),
waits as `awaiting_approval` with no job submitted and its flow run suspended. A request with jobs already (one
planned before this rule, or approved) is never held again.
"""

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, FloatField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from workflows.models import ClusterJob, Plan, PlanStep


def estimated_cpu_hours(plan: Plan) -> float:
    """The plan's cost if every step ran to its time limit on all its CPUs (one query, whatever its size)."""
    total = PlanStep.objects.filter(plan=plan).aggregate(
        minutes=Sum(
            Cast(KT("spec__cpus"), FloatField()) * Cast(KT("spec__time_limit_minutes"), FloatField()),
            output_field=FloatField(),
        )
    )["minutes"]
    return round((total or 0.0) / 60, 1)


def over_caps(resources: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """What a request asked for beyond the site's caps, each said as `step.resource value > cap`."""
    caps: Mapping[str, int] = settings.REQUEST_RESOURCE_CAPS
    over = []
    for step, values in sorted((resources or {}).items()):
        for name, value in sorted(values.items()):
            cap = caps.get(name)
            if cap is not None and isinstance(value, int) and value > cap:
                over.append(f"{step}.{name} {value} > {cap}")
    return over


def hold_reason(request: AssemblyAnalysisRequest, plan: Plan) -> str | None:
    """Why the request must wait for approval before its first job, or None if it may run (records the estimate).

    Decided once: a recorded estimate means an earlier pass decided (a request held since is awaiting approval,
    or reviewed), so the passes after it cost no query here.
    """
    if request.reviewed_at is not None or request.estimated_cpu_hours is not None:
        return None
    estimate = estimated_cpu_hours(plan)
    AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(estimated_cpu_hours=estimate)
    if ClusterJob.objects.filter(request=request).exists():
        return None  # planned and submitting before this rule: never held
    reasons = []
    threshold = settings.APPROVAL_THRESHOLD_CPU_HOURS
    if threshold is not None and estimate > threshold:
        reasons.append(
            f"its plan's estimate, {estimate:,.1f} CPU-hours, is over the {threshold:,.1f} a request may spend unasked"
        )
    if caps := over_caps((request.request_metadata or {}).get("resources")):
        reasons.append(f"it asks for resources over the site's caps ({', '.join(caps)})")
    if not reasons:
        return None
    return "Awaiting approval: " + "; and ".join(reasons) + "."


# A decision older than this whose resume never took (its flow run gone) is left to the sweep's other rules.
RESUME_DECISIONS_FOR = timedelta(days=7)


def reviewed_since_last_pass() -> list[int]:
    """Requests approved or rejected since their flow run last passed: each must be resumed, to go on or end."""
    return list(
        AssemblyAnalysisRequest.objects.filter(
            reviewed_at__gte=timezone.now() - RESUME_DECISIONS_FOR,
            status__in=[*AssemblyAnalysisRequest.ACTIVE_STATUSES, AssemblyAnalysisRequest.Status.REJECTED],
        )
        .exclude(progress__last_read_at__gt=F("reviewed_at"))
        .values_list("pk", flat=True)
    )
