"""Webhooks out: each `WebhookDelivery` row POSTed to its endpoint by the service loop, at least once.

A delivery is sent under its row lock (`SKIP LOCKED`: two service loops never send one at once) with one id for all
its attempts, so a receiver that saw it before can tell. The URL is checked again before each attempt, and each
redirect's target before it is followed (analyses.webhooks): a redirect to a private address ends the delivery,
refused. A 2xx answer delivers it; 410 Gone disables the endpoint (its pending deliveries end with it); anything
else (down, 5xx, a timeout) is tried again with backoff, and given up after GIVE_UP_AFTER.
"""

import json
import logging
import time
from urllib.parse import urljoin

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from analyses import webhooks
from analyses.models import WebhookDelivery
from workflows.outbox.dispatch import backoff
from workflows.outbox.notify import GIVE_UP_AFTER

logger = logging.getLogger(__name__)

DELIVERIES_PER_ROUND = 20
MAX_REDIRECTS = 3
USER_AGENT = "emgapi-webhooks/1"


class _Refused(Exception):
    """The delivery may not go where it was sent (a refused URL or redirect): trying again would not help."""


def deliver_due_webhooks() -> int:
    """POST the due deliveries; how many were delivered."""
    due = Q(status=WebhookDelivery.Status.PENDING) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now())
    )
    ids = list(
        WebhookDelivery.objects.filter(due)
        .order_by("created")
        .values_list("pk", flat=True)[:DELIVERIES_PER_ROUND]
    )
    return sum(_deliver_one(pk) for pk in ids)


def _deliver_one(pk: int) -> int:
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint", "notification__request")
            .filter(pk=pk, status=WebhookDelivery.Status.PENDING)
            .first()
        )
        if delivery is None:
            return 0
        endpoint = delivery.endpoint
        if not endpoint.active:
            return _end(
                delivery,
                f"not sent: the endpoint was disabled ({endpoint.disabled_reason or 'by its owner'})",
            )
        if timezone.now() - delivery.created > GIVE_UP_AFTER:
            return _end(delivery, f"not delivered within {GIVE_UP_AFTER}: {delivery.last_error}")
        delivery.attempts += 1
        try:
            answer = _post(endpoint.url, endpoint.secret, delivery)
        except _Refused as exc:
            return _end(delivery, str(exc))
        except httpx.HTTPError as exc:  # down, refused, timed out: tried again later
            return _later(delivery, f"{type(exc).__name__}: {exc}", None)
        if 200 <= answer.status_code < 300:
            delivery.status = WebhookDelivery.Status.DELIVERED
            delivery.delivered_at = timezone.now()
            delivery.response_status = answer.status_code
            delivery.last_error = ""
            delivery.save(
                update_fields=["status", "attempts", "delivered_at", "response_status", "last_error"]
            )
            logger.info("Webhook delivery %s to %s delivered", delivery.delivery_id, endpoint.url)
            return 1
        if answer.status_code == 410:
            endpoint.active = False
            endpoint.disabled_reason = (
                f"answered 410 Gone to delivery {delivery.delivery_id} at {timezone.now():%Y-%m-%d %H:%M %Z}"
            )
            endpoint.save(update_fields=["active", "disabled_reason", "updated"])
            logger.warning("Webhook endpoint %s disabled: %s", endpoint.pk, endpoint.disabled_reason)
            delivery.response_status = 410
            return _end(delivery, "the endpoint answered 410 Gone: it is disabled")
        return _later(delivery, f"answered {answer.status_code}", answer.status_code)


def _post(url: str, secret: str, delivery: WebhookDelivery) -> httpx.Response:
    body = json.dumps(payload(delivery), separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        webhooks.DELIVERY_HEADER: str(delivery.delivery_id),
        webhooks.EVENT_HEADER: delivery.notification.event,
        webhooks.SIGNATURE_HEADER: webhooks.sign(secret, timestamp, body),
    }
    with httpx.Client(
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
    ) as client:
        for hop in range(MAX_REDIRECTS + 1):
            try:
                checked = webhooks.check_url(url)
            except webhooks.WebhookUrlRefused as exc:
                raise _Refused(f"{'redirected to ' if hop else ''}{url}: {exc}") from None
            answer = client.send(_pinned(client, checked, body, headers))
            if not answer.is_redirect:
                return answer
            # Followed as the same signed POST whatever the code (a 302 must not turn a delivery into a GET).
            url = urljoin(url, answer.headers["Location"])
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


def _pinned(
    client: httpx.Client, checked: webhooks.CheckedUrl, body: bytes, headers: dict[str, str]
) -> httpx.Request:
    """The POST of `checked`, connecting to the address that was checked, under the URL's own host name (Host
    header, TLS server name and certificate check)."""
    url = httpx.URL(checked.url)
    request = client.build_request(
        "POST",
        url.copy_with(host=checked.address),
        content=body,
        headers={**headers, "Host": url.netloc.decode("ascii")},
    )
    if url.scheme == "https":
        request.extensions["sni_hostname"] = checked.host
    return request


def payload(delivery: WebhookDelivery) -> dict:
    """What a delivery says: the event, the request it happened to, where to read more."""
    notification = delivery.notification
    request = notification.request
    site = settings.SITE_URL.rstrip("/")
    return {
        "id": str(delivery.delivery_id),
        "event": notification.event,
        "created": notification.created.isoformat(),
        "detail": notification.detail,
        "request": {
            "id": request.pk,
            "study_accession": request.study_accession,
            "round": notification.round,
            "url": site + reverse("assembly-analysis-request-detail", args=[request.pk]),
            "analyses": site + reverse("analysis-list") + f"?request={request.pk}",
            "jobs": site + reverse("assembly-analysis-request-jobs", args=[request.pk]),
        },
    }


def _later(delivery: WebhookDelivery, error: str, status_code: int | None) -> int:
    delivery.last_error = error[:2000]
    delivery.response_status = status_code
    delivery.next_attempt_at = timezone.now() + backoff(delivery.attempts)
    delivery.save(update_fields=["attempts", "last_error", "response_status", "next_attempt_at"])
    logger.warning(
        "Webhook delivery %s to %s failed (attempt %d), tried again at %s: %s",
        delivery.delivery_id,
        delivery.endpoint.url,
        delivery.attempts,
        f"{delivery.next_attempt_at:%H:%M:%S}",
        delivery.last_error,
    )
    return 0


def _end(delivery: WebhookDelivery, error: str) -> int:
    delivery.status = WebhookDelivery.Status.FAILED
    delivery.last_error = error[:2000]
    delivery.save(update_fields=["status", "attempts", "last_error", "response_status"])
    logger.warning(
        "Webhook delivery %s to %s given up: %s", delivery.delivery_id, delivery.endpoint.url, error
    )
    return 0
