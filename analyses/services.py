"""Domain operations called by the API, the admin and the workflows alike."""

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from analyses import webhooks
from analyses.errors import Conflict, ExistingRequestError, ServiceError, Unprocessable
from analyses.models import (
    AssemblyAnalysisRequest,
    IdempotencyKey,
    Notification,
    Study,
    WebhookDelivery,
    WebhookEndpoint,
)
from analyses.selectors import APPROVE_PERMISSION, CHANGE_PERMISSION, active_request
from analyses.signals import request_cancelled, request_reviewed


class RequestAlreadyFinished(Conflict):
    """The request reached a terminal status; it can no longer be cancelled."""

    code = "request_finished"

    def __init__(self, request: AssemblyAnalysisRequest) -> None:
        super().__init__(f"Request {request.pk} is already {request.status}.", status=request.status)


class NotAwaitingApproval(Conflict):
    """Only a request awaiting approval can be approved or rejected."""

    code = "not_awaiting_approval"

    def __init__(self, request: AssemblyAnalysisRequest) -> None:
        super().__init__(
            f"Request {request.pk} is {request.status}, not awaiting approval: there is nothing to decide.",
            status=request.status,
        )


class ActiveRequestExists(ExistingRequestError, Conflict):
    """The requester already has a pending or running request for this study."""

    code = "active_request_exists"

    def __init__(self, existing: AssemblyAnalysisRequest) -> None:
        self.existing = existing
        super().__init__(
            f"Request {existing.pk} for {existing.study_accession} is already {existing.status}; "
            'send "force": true to start another one anyway.',
            existing.pk,
        )


class IdempotencyKeyReused(ExistingRequestError, Unprocessable):
    """The requester sent this Idempotency-Key before, with another body."""

    code = "idempotency_key_reused"

    def __init__(self, key: str, existing: AssemblyAnalysisRequest) -> None:
        self.key, self.existing = key, existing
        super().__init__(
            f"Idempotency-Key {key!r} was sent before with another body (it created request {existing.pk}); "
            "use a new key for a new request.",
            existing.pk,
        )


@dataclass(frozen=True)
class Submission:
    request: AssemblyAnalysisRequest
    replayed: bool  # True: the Idempotency-Key was seen before with this body; nothing new was created


def body_hash(body: Mapping[str, Any]) -> str:
    """The same body however its keys are ordered or spaced."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def may_change_request(user: User | AnonymousUser | None, request: AssemblyAnalysisRequest) -> bool:
    """Cancel or retry: its requester, or whoever holds the model's change permission."""
    if user is None or not user.is_authenticated:
        return False
    return request.requester_id == user.pk or user.has_perm(CHANGE_PERMISSION)


def create_assembly_analysis_request(
    *,
    study_accession: str,
    requester: User | AnonymousUser | None,
    force: bool = False,
    resources: Mapping[str, Mapping[str, int]] | None = None,
    runs: Sequence[str] | None = None,
) -> AssemblyAnalysisRequest:
    """Create the request (and, through the workflow layer's post_save, its trigger) in one transaction.

    One active request per study and requester: the database's constraint decides, so two concurrent calls
    cannot both create one; the loser gets ActiveRequestExists naming the winner. `force` starts another anyway.
    `resources` overrides the pipeline's per-step resources for this request only, e.g.
    ``{"assembly": {"memory_mb": 256000}}``; a mistake in it fails the request's planning, naming the step.
    `runs` restricts it to those runs of the study (an incremental request, started by a sync of a watched study).
    """
    return submit_assembly_analysis_request(
        study_accession=study_accession, requester=requester, force=force, resources=resources, runs=runs
    ).request


def _seen_key(requester: User | None, key: str, digest: str) -> Submission | None:
    seen = IdempotencyKey.objects.select_related("request").filter(requester=requester, key=key).first()
    if seen is None:
        return None
    if seen.body_hash != digest:
        raise IdempotencyKeyReused(key, seen.request)
    return Submission(seen.request, replayed=True)


def submit_assembly_analysis_request(
    *,
    study_accession: str,
    requester: User | AnonymousUser | None,
    force: bool = False,
    idempotency_key: str | None = None,
    resources: Mapping[str, Mapping[str, int]] | None = None,
    runs: Sequence[str] | None = None,
) -> Submission:
    """create_assembly_analysis_request, plus an optional Idempotency-Key (the requester's, for this body).

    A key seen before with the same body answers with the request it created (replayed); with another body,
    IdempotencyKeyReused. A new key is stored in the transaction that creates the request, so a request never
    exists without its key nor a key without its request; two concurrent calls with one key create one request.
    """
    if requester is not None and not requester.is_authenticated:  # the ValueError the model would raise
        raise ValueError("An anonymous user cannot be a request's requester.")
    body: dict[str, Any] = {"study_accession": study_accession, "force": force}
    if resources:
        body["resources"] = {step: dict(values) for step, values in resources.items()}
    if runs is not None:
        body["runs"] = sorted(runs)
    digest = body_hash(body)
    if idempotency_key is not None and (seen := _seen_key(requester, idempotency_key, digest)):
        return seen
    request = AssemblyAnalysisRequest(
        study_accession=study_accession,
        requester=requester,
        forced=force,
        request_metadata={key: body[key] for key in ("resources", "runs") if key in body},
    )
    # The constraints are checked below, by the database, where a concurrent insert cannot slip past them.
    request.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            request.save()
            if idempotency_key is not None:
                if requester is None:  # a key is its requester's (the column is NOT NULL)
                    raise ValueError("An Idempotency-Key needs a requester.")
                IdempotencyKey.objects.create(
                    requester=requester, key=idempotency_key, body_hash=digest, request=request
                )
    except IntegrityError:
        # Someone got there first: the same key (a concurrent retry of this call) decides before the study's
        # active request does, so the retry is answered as a replay rather than as a conflict with itself.
        if idempotency_key is not None and (seen := _seen_key(requester, idempotency_key, digest)):
            return seen
        existing = active_request(study_accession, requester)
        if existing is None:  # not our constraint: some other integrity error
            raise
        raise ActiveRequestExists(existing) from None
    request.refresh_from_db()
    return Submission(request, replayed=False)


def record_request_state(
    request_id: int,
    *,
    status: str | None = None,
    detail: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    from_statuses: Collection[str] | None = None,
) -> bool:
    """The one writer of a request's status, its detail and its metadata (merged key by key), under the row lock.

    The flows, the sweep, the dispatcher and the retry all go through here; cancellation (below) adds who and
    when. With `from_statuses`, nothing changes unless the request is in one of them, so a late pass never
    reopens a finished or cancelled request. Returns whether the row changed (False too if it is gone).
    """
    with transaction.atomic():
        request = AssemblyAnalysisRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None or (from_statuses is not None and request.status not in from_statuses):
            return False
        changed = []
        if status is not None and request.status != status:
            request.status = status
            changed.append("status")
        if detail is not None and request.status_detail != detail[:5000]:
            request.status_detail = detail[:5000]
            changed.append("status_detail")
        merged = {**(request.request_metadata or {}), **(metadata or {})}
        if merged != request.request_metadata:
            request.request_metadata = merged
            changed.append("request_metadata")
        if changed:
            request.save(update_fields=[*changed, "updated"])
        if "status" in changed and (
            request.is_terminal or request.status == AssemblyAnalysisRequest.Status.AWAITING_APPROVAL
        ):
            _notify(request, request.status)
        return bool(changed)


def notify_requester(request_id: int, event: str) -> None:
    """Tell the request's requester of `event` (see `Notification`), once per event and round of the request."""
    with transaction.atomic():
        request = AssemblyAnalysisRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is not None:
            _notify(request, event)


def _notify(request: AssemblyAnalysisRequest, event: str) -> None:
    """In the caller's transaction, so the event and what is told of it commit together: the email, and a
    delivery for each of the requester's webhooks that asked for this event."""
    notification, created = Notification.objects.get_or_create(
        request=request,
        event=event,
        round=request.retries,
        defaults={"detail": request.status_detail},
    )
    if created and request.requester_id is not None:
        endpoints = WebhookEndpoint.objects.filter(owner_id=request.requester_id, active=True)
        WebhookDelivery.objects.bulk_create(
            WebhookDelivery(endpoint=endpoint, notification=notification)
            for endpoint in endpoints
            if event in endpoint.events
        )


# The longest reason a cancellation takes (the API's and the admin's form say so).
MAX_CANCEL_REASON = 500


def cancel_assembly_analysis_request(
    request: AssemblyAnalysisRequest, *, by: User | AnonymousUser | None, reason: str = ""
) -> AssemblyAnalysisRequest:
    """Record the cancellation; the workflow layer listens for it and stops the flow run and its jobs."""
    with transaction.atomic():
        locked = AssemblyAnalysisRequest.objects.select_for_update().get(pk=request.pk)
        if locked.is_terminal:
            raise RequestAlreadyFinished(locked)
        locked.status = AssemblyAnalysisRequest.Status.CANCELLED
        locked.cancelled_at = timezone.now()
        locked.cancelled_by = by if by is not None and by.is_authenticated else None
        locked.status_detail = reason or "Cancelled by user."
        locked.save(update_fields=["status", "cancelled_at", "cancelled_by", "status_detail", "updated"])
        _notify(locked, Notification.Event.CANCELLED)
        request_cancelled.send(sender=AssemblyAnalysisRequest, request=locked)
    return locked


# The longest reason an approval or rejection takes (the API's and the admin's forms say so).
MAX_REVIEW_REASON = 500
REJECTION_NEEDS_REASON = "A rejection needs a reason: the requester is told it."


def may_approve(user: User | AnonymousUser | None) -> bool:
    """Approve or reject a request awaiting approval: whoever holds the approve permission (its requester
    too, only if they hold it)."""
    return user is not None and user.is_authenticated and user.has_perm(APPROVE_PERMISSION)


def review_assembly_analysis_request(
    request: AssemblyAnalysisRequest, *, approve: bool, by: User | AnonymousUser, reason: str = ""
) -> AssemblyAnalysisRequest:
    """Approve (it runs: its suspended flow run is resumed by the service loop) or reject (it ends, with the
    reason) a request awaiting approval; its requester is told either way. A rejection needs a reason."""
    if not approve and not reason.strip():
        raise ServiceError(REJECTION_NEEDS_REASON, field="reason")
    with transaction.atomic():
        locked = AssemblyAnalysisRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status != AssemblyAnalysisRequest.Status.AWAITING_APPROVAL:
            raise NotAwaitingApproval(locked)
        verdict = "Approved" if approve else "Rejected"
        locked.status = (
            AssemblyAnalysisRequest.Status.RUNNING if approve else AssemblyAnalysisRequest.Status.REJECTED
        )
        locked.status_detail = f"{verdict} by {by}" + (f": {reason.strip()}" if reason.strip() else ".")
        locked.reviewed_at = timezone.now()
        locked.reviewed_by = by if by.is_authenticated else None
        locked.save(update_fields=["status", "status_detail", "reviewed_at", "reviewed_by", "updated"])
        _notify(locked, Notification.Event.APPROVED if approve else Notification.Event.REJECTED)
        request_reviewed.send(sender=AssemblyAnalysisRequest, request=locked)
    return locked


class WatchedByAnother(Conflict):
    """A study has one watcher: the requester of its incremental requests."""

    code = "watched_by_another"

    def __init__(self, study: Study) -> None:
        super().__init__(
            f"Study {study.accession} is watched by {study.watched_by}: they must stop watching it first.",
            watched_by=str(study.watched_by),
        )


def watch_study(study: Study, user: User | AnonymousUser) -> Study:
    """From the next sync on, new runs of `study` start an incremental request of `user`'s, of those runs only."""
    with transaction.atomic():
        locked = Study.objects.select_for_update(of=("self",)).select_related("watched_by").get(pk=study.pk)
        if locked.watched_by_id not in (None, user.pk):
            raise WatchedByAnother(locked)
        locked.watched_by = user if user.is_authenticated else None
        locked.save(update_fields=["watched_by", "updated"])
    return locked


def unwatch_study(study: Study, user: User | AnonymousUser) -> Study:
    """Stop watching `study`: its watcher, or a holder of the study's change permission (staff, say)."""
    with transaction.atomic():
        locked = Study.objects.select_for_update(of=("self",)).select_related("watched_by").get(pk=study.pk)
        if locked.watched_by_id not in (None, user.pk) and not user.has_perm("analyses.change_study"):
            raise WatchedByAnother(locked)
        locked.watched_by = None
        locked.save(update_fields=["watched_by", "updated"])
    return locked


def rotate_webhook_secret(endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """A new secret for `endpoint`; deliveries not yet sent are signed with it."""
    endpoint.secret = webhooks.new_secret()
    endpoint.save(update_fields=["secret", "updated"])
    return endpoint
