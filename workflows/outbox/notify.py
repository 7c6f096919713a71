"""Notifications out: the requester's email for each `Notification` row, sent by the service loop, retried.

A row is written once per event in the transaction that records it (analyses.services); here each due row is
sent under its row lock (`SKIP LOCKED`: two service loops never send one twice), with Django's mail framework and
the standard `EMAIL_*` settings, at least once: an SMTP server that is down is tried again with backoff, and the
mail goes out once it is back. A request awaiting approval is also mailed to whoever may approve it. A
notification with no one to mail (a requester without an email address) is skipped, and says so.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from analyses.models import Notification
from analyses.selectors import APPROVE_PERMISSION
from workflows.outbox.dispatch import backoff

logger = logging.getLogger(__name__)

# Rows sent per round, at most: a round must come back to the loop's other work.
NOTIFICATIONS_PER_ROUND = 50
# An event older than this is not sent any more (the SMTP server was away for days): marked, not mailed.
GIVE_UP_AFTER = timedelta(days=3)

_SUBJECTS: dict[str, str] = {
    Notification.Event.COMPLETED: "completed",
    Notification.Event.FAILED: "failed",
    Notification.Event.CANCELLED: "was cancelled",
    Notification.Event.STUCK: "is stuck",
    Notification.Event.REJECTED: "was rejected",
    Notification.Event.AWAITING_APPROVAL: "awaits approval",
    Notification.Event.APPROVED: "was approved",
}
_WHY_STUCK = "Its flow run keeps being recovered (three times in a row or more): an operator should look."


def send_due_notifications() -> int:
    """Send the due notifications' emails; how many were sent."""
    sent = 0
    now = timezone.now()
    due = Q(email=Notification.Delivery.PENDING) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    ids = list(
        Notification.objects.filter(due)
        .order_by("created")
        .values_list("pk", flat=True)[:NOTIFICATIONS_PER_ROUND]
    )
    for pk in ids:
        sent += _send_one(pk)
    return sent


def _send_one(pk: int) -> int:
    with transaction.atomic():
        row = (
            # Only the notification's row is locked (a requester is joined outer, and PostgreSQL locks no such side).
            Notification.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("request__requester")
            .filter(pk=pk, email=Notification.Delivery.PENDING)
            .first()
        )
        if row is None:
            return 0
        to = recipients(row)
        if not to:
            row.email = Notification.Delivery.SKIPPED
            row.save(update_fields=["email"])
            return 0
        if timezone.now() - row.created > GIVE_UP_AFTER:
            row.email = Notification.Delivery.SKIPPED
            row.last_error = f"not sent within {GIVE_UP_AFTER}: {row.last_error}"[:2000]
            row.save(update_fields=["email", "last_error"])
            return 0
        row.attempts += 1
        try:
            message(row, to).send()
        except Exception as exc:  # SMTP down, refused, timed out: all tried again later
            row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            row.next_attempt_at = timezone.now() + backoff(row.attempts)
            row.save(update_fields=["attempts", "last_error", "next_attempt_at"])
            logger.warning("Notification %s not sent (attempt %d): %s", row, row.attempts, row.last_error)
            return 0
        row.email = Notification.Delivery.SENT
        row.sent_at = timezone.now()
        row.last_error = ""
        row.save(update_fields=["attempts", "email", "sent_at", "last_error"])
    logger.info("Notification %s sent to %s", row, ", ".join(to))
    return 1


def recipients(row: Notification) -> list[str]:
    """The requester; for a request awaiting approval, also whoever may approve it (they decide)."""
    requester = row.request.requester
    to = [requester.email] if requester is not None and requester.email else []
    if row.event == Notification.Event.AWAITING_APPROVAL:
        approvers = (
            get_user_model().objects.with_perm(APPROVE_PERMISSION).filter(is_active=True).exclude(email="")
        )
        to += sorted(set(approvers.values_list("email", flat=True)) - set(to))
    return to


def message(row: Notification, to: list[str] | None = None) -> EmailMessage:
    """The email of a notification: what happened to which request, why, and where to read more."""
    request = row.request
    site = settings.SITE_URL.rstrip("/")
    detail = reverse("assembly-analysis-request-detail", args=[request.pk])
    jobs = reverse("assembly-analysis-request-jobs", args=[request.pk])
    analyses = reverse("analysis-list")
    subject = f"emgapi: request {request.pk} for {request.study_accession} {_SUBJECTS[row.event]}"
    body = "\n".join(
        [
            f"Request {request.pk} for {request.study_accession} {_SUBJECTS[row.event]}.",
            "",
            _WHY_STUCK if row.event == Notification.Event.STUCK else row.detail or "(no detail)",
            "",
            f"The request:   {site}{detail}",
            f"Its analyses:  {site}{analyses}?request={request.pk}",
            f"Its jobs:      {site}{jobs}",
        ]
    )
    return EmailMessage(subject, body, to=to if to is not None else recipients(row))
