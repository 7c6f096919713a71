"""The domain's reads that apply a rule (who sees which request, which request is active); services write."""

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, QuerySet

from analyses.models import Analysis, AssemblyAnalysisRequest, Study

CHANGE_PERMISSION = "analyses.change_assemblyanalysisrequest"
APPROVE_PERMISSION = "analyses.approve_assemblyanalysisrequest"


def requests_visible_to(
    user: User | AnonymousUser, *, changing: bool = False, reviewing: bool = False
) -> QuerySet[AssemblyAnalysisRequest]:
    """Reads: one's own, or all for staff. Changes: all for a holder of the change permission too, so that a
    non-staff operator can cancel what they may not list; approvals: all for a holder of the approve permission.
    Another's request is otherwise a 404, not a 403."""
    queryset = AssemblyAnalysisRequest.objects.select_related("study", "requester")
    if (
        user.is_staff
        or (changing and user.has_perm(CHANGE_PERMISSION))
        or (reviewing and user.has_perm(APPROVE_PERMISSION))
    ):
        return queryset
    if not user.is_authenticated:  # has no requests (the views let no anonymous user this far)
        return queryset.none()
    return queryset.filter(requester=user)


def active_request(
    study_accession: str, requester: User | AnonymousUser | None
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


def analyses_by_pipeline(study: Study) -> list[tuple[str, int]]:
    """The study's analyses counted by the pipeline that made them, in name order (one grouped index scan)."""
    rows = (
        Analysis.objects.filter(study=study)
        .order_by("pipeline")
        .values_list("pipeline")
        .annotate(count=Count("pk"))
    )
    return [(pipeline, count) for pipeline, count in rows]
