"""Health checks of the workflow layer, added to /readyz: Prefect, Slurm, the outbox, the poller and recovery."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from prefect_utils.poller import POLLER_LEASE
from prefect_utils.slurm_client import SlurmClient
from workflows.models import PollerLease, RequestProgress, Trigger
from workflows.orchestration.ledger import DjangoJobLedger
from workflows.orchestration.recovery import STUCK_AFTER_RECOVERIES
from workflows.outbox import prefect_api


def check_prefect() -> dict[str, Any]:
    return {**prefect_api.prefect_healthy(), "optional": True}


def check_slurm() -> dict[str, Any]:
    ok = SlurmClient(retries=0, command_timeout=3).ping()
    return {"ok": ok, "optional": True} | ({} if ok else {"error": "slurmctld does not answer"})


def check_dispatcher() -> dict[str, Any]:
    """Pending triggers older than a few backoffs mean nobody is dispatching (or Prefect is down)."""
    oldest = Trigger.objects.filter(status=Trigger.Status.PENDING).order_by("created").first()
    if oldest is None:
        return {"ok": True, "pending": 0}
    age = timezone.now() - oldest.created
    pending = Trigger.objects.filter(status=Trigger.Status.PENDING).count()
    return {
        "ok": age < timedelta(minutes=10),
        "optional": True,
        "pending": pending,
        "oldest_pending_seconds": round(age.total_seconds()),
        "last_error": oldest.last_error,
    }


def check_poller() -> dict[str, Any]:
    lease = PollerLease.objects.filter(name=POLLER_LEASE).first()
    if lease is None or lease.last_poll_at is None:
        return {"ok": True, "last_poll_at": None}
    stale_after = timedelta(seconds=3 * settings.SLURM_POLL_MAX_SECONDS)
    last_success = lease.last_success_at
    fresh = last_success is not None and timezone.now() - last_success < stale_after
    waiting = DjangoJobLedger().count_active()
    return {
        "ok": fresh or waiting == 0,
        "optional": True,
        "active_jobs": waiting,
        "last_poll_at": lease.last_poll_at.isoformat(),
        "last_success_at": last_success.isoformat() if last_success else None,
        "last_error": lease.last_error,
    }


def check_recovery() -> dict[str, Any]:
    """Requests whose flow run keeps being put back: each is a request that makes no progress on its own."""
    troubled = (
        RequestProgress.objects.filter(
            recoveries__gte=STUCK_AFTER_RECOVERIES,
            request__status__in=AssemblyAnalysisRequest.ACTIVE_STATUSES,
        )
        .order_by("-recoveries")
        .values("request_id", "recoveries", "last_recovery_at", "last_recovery", "last_outcome")[:10]
    )
    requests = [
        {**row, "last_recovery_at": row["last_recovery_at"].isoformat() if row["last_recovery_at"] else None}
        for row in troubled
    ]
    return {"ok": not requests, "optional": True, "requests_recovering": requests}


CHECKS = {
    "prefect": check_prefect,
    "slurm": check_slurm,
    "dispatcher": check_dispatcher,
    "poller": check_poller,
    "recovery": check_recovery,
}
