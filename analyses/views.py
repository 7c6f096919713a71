from django.db.models import Count, IntegerField, JSONField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.filters import SearchFilter
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

from analyses.filters import AnalysisFilter, RejectUnknownQueryParameters, StudyFilter
from analyses.models import Analysis, AssemblyAnalysisRequest, Run, Study, StudyChange, WebhookEndpoint
from analyses.pagination import AnalysesByAccession, RunsByAccession
from analyses.selectors import CHANGE_PERMISSION, requests_visible_to
from analyses.serializers import (
    AnalysisSerializer,
    AnalysisSummarySerializer,
    AssemblyAnalysisRequestSerializer,
    CancelSerializer,
    ReviewSerializer,
    RunSummarySerializer,
    StudyChangeSerializer,
    StudyDetailSerializer,
    StudySerializer,
    WebhookDeliverySerializer,
    WebhookEndpointSerializer,
    WebhookSecretSerializer,
)
from analyses.services import (
    APPROVE_PERMISSION,
    REJECTION_NEEDS_REASON,
    cancel_assembly_analysis_request,
    may_approve,
    may_change_request,
    review_assembly_analysis_request,
    rotate_webhook_secret,
    submit_assembly_analysis_request,
    unwatch_study,
    watch_study,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"


class CanAddRequests(BasePermission):
    """Creating a request needs the model's add permission, not merely a token: it starts days of cluster work."""

    message = (
        "Creating an assembly-analysis request needs the 'analyses.add_assemblyanalysisrequest' permission."
    )
    refuses_actions = frozenset({"create"})  # for the OpenAPI schema's 403 (emgapi.openapi)

    def has_permission(self, request: Request, view) -> bool:
        return view.action != "create" or request.user.has_perm("analyses.add_assemblyanalysisrequest")


REVIEW_ACTIONS = frozenset({"approve", "reject"})
REVIEWED = {
    200: AssemblyAnalysisRequestSerializer,
    409: OpenApiResponse(description="The request is not awaiting approval."),
}


class StartsRequests(BasePermission):
    """Watching a study starts requests in the watcher's name: the permission to create them, as for a POST."""

    message = CanAddRequests.message

    def has_permission(self, request: Request, view) -> bool:
        return request.user.has_perm("analyses.add_assemblyanalysisrequest")


class IsRequesterOrMayChange(BasePermission):
    """Cancel, retry: the request's requester, or a holder of the model's change permission (staff or not)."""

    message = (
        f"Only the requester, or a holder of the '{CHANGE_PERMISSION}' permission, may change a request."
    )
    refuses_methods = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # for the OpenAPI schema's 403

    def has_object_permission(self, request: Request, view, obj: AssemblyAnalysisRequest) -> bool:
        if getattr(view, "action", None) in REVIEW_ACTIONS:
            return True  # MayApprove decides: a requester may not approve their own request without it
        return request.method in SAFE_METHODS or may_change_request(request.user, obj)


class MayApprove(BasePermission):
    """Approve, reject: a holder of the approve permission only (the admin's buttons ask the same)."""

    message = f"Approving or rejecting a request needs the '{APPROVE_PERMISSION}' permission."
    refuses_actions = REVIEW_ACTIONS  # for the OpenAPI schema's 403 (emgapi.openapi)

    def has_permission(self, request: Request, view) -> bool:
        return view.action not in REVIEW_ACTIONS or may_approve(request.user)


REQUEST_NOT_FOUND = OpenApiResponse(description="No such request of yours (staff see all).")
UNAUTHENTICATED = OpenApiResponse(description="No credentials.")


def count_of(model: type[Run] | type[Analysis]) -> Coalesce:
    """The study's runs (or analyses) counted by a correlated subquery: one index range per study of the page.

    Two `Count` annotations joined runs and analyses to every study before grouping (14 million intermediate
    rows at 100,000 studies), and the paginator's COUNT paid for the join too. A subquery costs only the rows of
    the page's studies, and COUNT(*) of the page drops it (Django strips annotations a count does not need).
    """
    per_study = (
        model.objects.filter(study=OuterRef("pk"))
        .order_by()
        .values("study")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(per_study, output_field=IntegerField()), 0)


@extend_schema_view(
    list=extend_schema(
        summary="List studies",
        description="Filter by ENA accession or biome; `search` finds studies whose title contains every word.",
    ),
    retrieve=extend_schema(
        summary="A study, with the number of its runs and analyses and links to them (paginated there)"
    ),
)
class StudyViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_field = "accession"
    filterset_class = StudyFilter
    # api_settings hands out the backend classes; djangorestframework-stubs types the setting's dotted paths.
    filter_backends = [*api_settings.DEFAULT_FILTER_BACKENDS, SearchFilter]  # type: ignore[list-item]
    # icontains: UPPER(title) LIKE UPPER('%word%'), which the trigram index on UPPER(title) serves.
    search_fields = ["title"]
    ordering_fields = ["accession", "created", "updated"]

    def get_queryset(self) -> QuerySet[Study]:
        # -id after -created: a total order, so a row never moves between pages while nothing changes.
        return (
            Study.objects.select_related("biome")
            .annotate(runs_count=count_of(Run), analyses_count=count_of(Analysis))
            .order_by("-created", "-id")
        )

    def get_serializer_class(self):
        return StudyDetailSerializer if self.action == "retrieve" else StudySerializer


class StudyChildren(generics.ListAPIView):
    """What a study holds, a page at a time (a study may have thousands of runs): cursor-paginated, no count."""

    filter_backends = [RejectUnknownQueryParameters]

    def study_id(self) -> int:
        return get_object_or_404(Study.objects.only("pk"), accession=self.kwargs["accession"]).pk


@extend_schema(summary="The runs of a study", parameters=[OpenApiParameter("accession", str, "path")])
class StudyRunsView(StudyChildren):
    serializer_class = RunSummarySerializer
    pagination_class = RunsByAccession

    def get_queryset(self) -> QuerySet[Run]:
        if getattr(self, "swagger_fake_view", False):
            return Run.objects.none()
        return Run.objects.filter(study_id=self.study_id()).select_related("sample")


@extend_schema(summary="The analyses of a study", parameters=[OpenApiParameter("accession", str, "path")])
class StudyAnalysesView(StudyChildren):
    serializer_class = AnalysisSummarySerializer
    pagination_class = AnalysesByAccession

    def get_queryset(self) -> QuerySet[Analysis]:
        if getattr(self, "swagger_fake_view", False):
            return Analysis.objects.none()
        return Analysis.objects.filter(study_id=self.study_id()).select_related("run")


@extend_schema(
    summary="A study's change log: what each sync with ENA found changed, newest first",
    parameters=[OpenApiParameter("accession", str, "path")],
)
class StudyChangesView(StudyChildren):
    serializer_class = StudyChangeSerializer

    def get_queryset(self) -> QuerySet[StudyChange]:
        if getattr(self, "swagger_fake_view", False):
            return StudyChange.objects.none()
        return StudyChange.objects.filter(study_id=self.study_id()).order_by("-synced_at", "-id")


class StudyWatchView(generics.GenericAPIView):
    """Watch a study (POST): new runs its syncs find start an incremental request of yours; DELETE stops it."""

    serializer_class = StudyDetailSerializer
    permission_classes = [IsAuthenticated, StartsRequests]

    def get_object(self) -> Study:
        return get_object_or_404(StudyViewSet().get_queryset(), accession=self.kwargs["accession"])

    @extend_schema(
        summary="Watch a study", request=None, parameters=[OpenApiParameter("accession", str, "path")]
    )
    def post(self, request: Request, accession: str) -> Response:
        watch_study(self.get_object(), request.user)
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        summary="Stop watching a study", request=None, parameters=[OpenApiParameter("accession", str, "path")]
    )
    def delete(self, request: Request, accession: str) -> Response:
        unwatch_study(self.get_object(), request.user)
        return Response(self.get_serializer(self.get_object()).data)


@extend_schema_view(
    list=extend_schema(summary="List analyses", description="Filter by study (MGYS…) and status."),
    retrieve=extend_schema(summary="An analysis"),
)
class AnalysisViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_field = "accession"
    serializer_class = AnalysisSerializer
    filterset_class = AnalysisFilter
    ordering_fields = ["accession", "created"]
    queryset = Analysis.objects.select_related("study", "run").order_by("-created", "-id")


REQUEST_COLUMNS = [field.name for field in AssemblyAnalysisRequest._meta.concrete_fields]


def newest_plan_rejected() -> Subquery:
    """The runs data QA rejected in the request's newest plan, in the query that lists the requests: a prefetch
    was a query of its own, and its model instances, for one JSON column.

    "plans" is the workflow layer's reverse relation, named rather than imported (the arrows point one way).
    """
    plan = AssemblyAnalysisRequest._meta.get_field("plans").related_model
    newest = plan._default_manager.filter(request=OuterRef("pk")).order_by("-generation").values("rejected")
    return Subquery(newest[:1], output_field=JSONField())


@extend_schema_view(
    list=extend_schema(summary="List assembly-analysis requests (yours; staff see all)"),
    retrieve=extend_schema(
        summary="An assembly-analysis request, with per-run outcomes and a link to its jobs"
    ),
    create=extend_schema(
        summary="Request the assembly and analysis of an ENA study",
        description=(
            "Starts the 'Assemble and analyse a study' workflow; `flow_run_id` is filled once it is dispatched. "
            "One active (pending or running) request per study and requester: another answers 409 with the "
            'existing request\'s URL, unless `"force": true`. With an `Idempotency-Key` header, sending the same '
            "key and body again answers 200 with the request the first POST created; the same key with another "
            "body is a 422."
        ),
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Any string up to 255 characters, unique per request you mean to make (a UUID).",
            )
        ],
        responses={
            201: AssemblyAnalysisRequestSerializer,
            200: OpenApiResponse(
                AssemblyAnalysisRequestSerializer,
                description="The Idempotency-Key and body were sent before: the request that POST created.",
            ),
            409: OpenApiResponse(
                description="An active request for this study exists: `existing` is its URL."
            ),
            422: OpenApiResponse(
                description="The Idempotency-Key was used before with another body: `existing` is its request."
            ),
        },
    ),
)
class AssemblyAnalysisRequestViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = AssemblyAnalysisRequestSerializer
    permission_classes = [IsAuthenticated, CanAddRequests, MayApprove, IsRequesterOrMayChange]
    throttle_scope = "request-create"
    filterset_fields = ["status", "study_accession"]
    ordering_fields = ["created", "updated", "status"]

    def get_throttles(self) -> list:
        return [ScopedRateThrottle()] if self.action == "create" else []

    def get_queryset(self) -> QuerySet[AssemblyAnalysisRequest]:
        if getattr(self, "swagger_fake_view", False):
            return AssemblyAnalysisRequest.objects.none()
        # Other users' requests are invisible (404), not forbidden: their existence is not ours to reveal.
        requests = requests_visible_to(
            self.request.user, changing=self.action == "cancel", reviewing=self.action in REVIEW_ACTIONS
        )
        if self.action in ("list", "retrieve"):
            # What the serializer shows of the study and the requester, not their whole rows (a user's
            # password hash, a study's description) 25 times a page.
            requests = requests.only(*REQUEST_COLUMNS, "study__accession", "requester__username")
        return requests.annotate(newest_plan_rejected=newest_plan_rejected()).order_by("-created", "-id")

    def url_of(self, instance: AssemblyAnalysisRequest) -> str:
        return reverse("assembly-analysis-request-detail", args=[instance.pk], request=self.request)

    def _idempotency_key(self) -> str | None:
        key = self.request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return None
        if not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
            raise ValidationError({IDEMPOTENCY_HEADER: ["Give 1 to 255 printable ASCII characters."]})
        return key

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        submission = submit_assembly_analysis_request(
            study_accession=serializer.validated_data["study_accession"],
            requester=request.user,
            force=serializer.validated_data.get("force", False),
            idempotency_key=self._idempotency_key(),
            resources=serializer.validated_data.get("resources"),
        )
        data = self.get_serializer(submission.request).data
        if submission.replayed:
            return Response(data, status=status.HTTP_200_OK, headers={"Idempotent-Replayed": "true"})
        return Response(
            data, status=status.HTTP_201_CREATED, headers={"Location": self.url_of(submission.request)}
        )

    @extend_schema(
        summary="Cancel a request",
        request=CancelSerializer,
        responses={
            200: AssemblyAnalysisRequestSerializer,
            409: OpenApiResponse(description="The request already completed, failed or was cancelled."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        instance = self.get_object()  # and IsRequesterOrMayChange: 403 otherwise
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        instance = cancel_assembly_analysis_request(
            instance, by=request.user, reason=body.validated_data.get("reason", "")
        )
        return Response(self.get_serializer(instance).data)

    @extend_schema(
        summary="Approve a request awaiting approval (it runs)", request=ReviewSerializer, responses=REVIEWED
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        return self._review(request, approve=True)

    @extend_schema(
        summary="Reject a request awaiting approval (it ends, with the reason)",
        request=ReviewSerializer,
        responses=REVIEWED,
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        return self._review(request, approve=False)

    def _review(self, request: Request, *, approve: bool) -> Response:
        instance = self.get_object()
        body = ReviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        reason = body.validated_data.get("reason", "")
        if not approve and not reason.strip():
            raise ValidationError({"reason": [REJECTION_NEEDS_REASON]})
        instance = review_assembly_analysis_request(instance, approve=approve, by=request.user, reason=reason)
        return Response(self.get_serializer(instance).data)


@extend_schema_view(
    create=extend_schema(
        summary="Register a webhook",
        responses={201: WebhookSecretSerializer},
        description="The answer holds the endpoint's `secret`, shown this once: keep it to verify signatures.",
    ),
)
class WebhookEndpointViewSet(viewsets.ModelViewSet):
    """The caller's own webhook endpoints (a staff user's too: another's URL and secret are theirs)."""

    permission_classes = [IsAuthenticated]
    ordering_fields = ["created"]

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        if getattr(self, "swagger_fake_view", False):
            return WebhookEndpoint.objects.none()
        return WebhookEndpoint.objects.filter(owner_id=self.request.user.pk).order_by("-created", "-id")

    def get_serializer_class(self):
        if self.action in ("create", "rotate_secret"):
            return WebhookSecretSerializer
        if self.action == "deliveries":
            return WebhookDeliverySerializer
        return WebhookEndpointSerializer

    def perform_create(self, serializer) -> None:
        serializer.save(owner=self.request.user)

    @extend_schema(
        summary="Replace the endpoint's secret", request=None, responses={200: WebhookSecretSerializer}
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        endpoint = rotate_webhook_secret(self.get_object())
        return Response(self.get_serializer(endpoint).data)

    @extend_schema(summary="The endpoint's deliveries, newest first")
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: str | None = None) -> Response:
        deliveries = self.get_object().deliveries.select_related("notification").order_by("-created", "-id")
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)
