"""Domain operations called by the API, the admin and the workflows alike."""

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from analyses.signals import request_cancelled


class RequestAlreadyFinished(Exception):
    """The request reached a terminal status; it can no longer be cancelled."""


def create_assembly_analysis_request(
    *, study_accession: str, requester: AbstractBaseUser | None
) -> AssemblyAnalysisRequest:
    request = AssemblyAnalysisRequest(study_accession=study_accession, requester=requester)
    request.full_clean()
    # The row and its trigger (written by the workflow layer's post_save) commit together or not at all; the
    # trigger is dispatched once they have, and records the flow run on the row.
    with transaction.atomic():
        request.save()
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
