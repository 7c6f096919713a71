"""Health checks of the workflow layer, added to /healthz: Prefect, Slurm, the outbox and the poller."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from prefect_utils.jobs import POLLER_LEASE
from prefect_utils.scheduler import SlurmClient
from workflows import prefect_api
from workflows.ledger import DjangoJobLedger
from workflows.models import PollerLease, Trigger


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


CHECKS = {
    "prefect": check_prefect,
    "slurm": check_slurm,
    "dispatcher": check_dispatcher,
    "poller": check_poller,
}
