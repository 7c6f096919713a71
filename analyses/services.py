"""Domain operations called by the API, the admin and the workflows alike."""

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from analyses.signals import request_cancelled


class RequestAlreadyFinished(Exception):
    """The request reached a terminal status; it can no longer be cancelled."""


class ActiveRequestExists(Exception):
    """The requester already has a pending or running request for this study."""

    def __init__(self, existing: AssemblyAnalysisRequest) -> None:
        self.existing = existing
        super().__init__(
            f"Request {existing.pk} for {existing.study_accession} is already {existing.status}; "
            'send "force": true to start another one anyway.'
        )


def active_request(
    study_accession: str, requester: AbstractBaseUser | None
) -> AssemblyAnalysisRequest | None:
    if requester is None or not requester.is_authenticated:
        return None
    return (
        AssemblyAnalysisRequest.objects.filter(
            study_accession=study_accession,
            requester=requester,
            status__in=AssemblyAnalysisRequest.ACTIVE_STATUSES,
            forced=False,
        )
        .order_by("created")
        .first()
    )


def create_assembly_analysis_request(
    *, study_accession: str, requester: AbstractBaseUser | None, force: bool = False
) -> AssemblyAnalysisRequest:
    """Create the request (and, through the workflow layer's post_save, its trigger) in one transaction.

    One active request per study and requester: the database's constraint decides, so two concurrent calls
    cannot both create one; the loser gets ActiveRequestExists naming the winner. `force` starts another anyway.
    """
    request = AssemblyAnalysisRequest(study_accession=study_accession, requester=requester, forced=force)
    # The constraint is checked below, by the database, where a concurrent insert cannot slip past it.
    request.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            request.save()
    except IntegrityError:
        existing = active_request(study_accession, requester)
        if existing is None:  # not our constraint: some other integrity error
            raise
        raise ActiveRequestExists(existing) from None
    request.refresh_from_db()
    return request


def cancel_assembly_analysis_request(
    request: AssemblyAnalysisRequest, *, by: AbstractBaseUser | None, reason: str = ""
) -> AssemblyAnalysisRequest:
    """Record the cancellation; the workflow layer listens for it and stops the flow run and its jobs."""
    with transaction.atomic():
        locked = AssemblyAnalysisRequest.objects.select_for_update().get(pk=request.pk)
        if locked.is_terminal:
            raise RequestAlreadyFinished(f"Request {locked.pk} is already {locked.status}.")
        locked.status = AssemblyAnalysisRequest.Status.CANCELLED
        locked.cancelled_at = timezone.now()
        locked.cancelled_by = by if by is not None and by.is_authenticated else None
        locked.status_detail = reason or "Cancelled by user."
        locked.save(update_fields=["status", "cancelled_at", "cancelled_by", "status_detail", "updated"])
        request_cancelled.send(sender=AssemblyAnalysisRequest, request=locked)
    return locked
