from django.db.models import Count, Prefetch, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.throttling import ScopedRateThrottle

from analyses.filters import AnalysisFilter, StudyFilter
from analyses.models import Analysis, AssemblyAnalysisRequest, Run, Study
from analyses.serializers import (
    AnalysisSerializer,
    AssemblyAnalysisRequestSerializer,
    CancelSerializer,
    StudyDetailSerializer,
    StudySerializer,
)
from analyses.services import (
    ActiveRequestExists,
    RequestAlreadyFinished,
    cancel_assembly_analysis_request,
    create_assembly_analysis_request,
)


class CanAddRequests(BasePermission):
    """Creating a request needs the model's add permission, not merely a token: it starts days of cluster work."""

    message = (
        "Creating an assembly-analysis request needs the 'analyses.add_assemblyanalysisrequest' permission."
    )

    def has_permission(self, request: Request, view) -> bool:
        return view.action != "create" or request.user.has_perm("analyses.add_assemblyanalysisrequest")


class Conflict(APIException):
    """409 in DRF's error shape; `detail` may be a dict naming the conflicting resource."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


@extend_schema_view(
    list=extend_schema(
        summary="List studies", description="Filter by ENA accession or biome; search titles."
    ),
    retrieve=extend_schema(summary="A study, with its runs and analyses summarised"),
)
class StudyViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_field = "accession"
    filterset_class = StudyFilter
    search_fields = ["title"]
    ordering_fields = ["accession", "created", "updated"]

    def get_queryset(self) -> QuerySet[Study]:
        queryset = (
            Study.objects.select_related("biome")
            .annotate(
                runs_count=Count("runs", distinct=True), analyses_count=Count("analyses", distinct=True)
            )
            .order_by("-created")
        )
        if self.action == "retrieve":
            queryset = queryset.prefetch_related(
                Prefetch("runs", queryset=Run.objects.select_related("sample")), "analyses"
            )
        return queryset

    def get_serializer_class(self):
        return StudyDetailSerializer if self.action == "retrieve" else StudySerializer


@extend_schema_view(
    list=extend_schema(summary="List analyses", description="Filter by study (MGYS…) and status."),
    retrieve=extend_schema(summary="An analysis"),
)
class AnalysisViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_field = "accession"
    serializer_class = AnalysisSerializer
    filterset_class = AnalysisFilter
    ordering_fields = ["accession", "created"]
    queryset = Analysis.objects.select_related("study", "run")


@extend_schema_view(
    list=extend_schema(summary="List assembly-analysis requests (yours; staff see all)"),
    retrieve=extend_schema(summary="An assembly-analysis request"),
    create=extend_schema(
        summary="Request the assembly and analysis of an ENA study",
        description=(
            "Starts the 'Assemble and analyse a study' workflow; `flow_run_id` is filled once it is dispatched. "
            "One active (pending or running) request per study and requester: another answers 409 with the "
            'existing request\'s URL, unless `"force": true`.'
        ),
        responses={
            201: AssemblyAnalysisRequestSerializer,
            400: OpenApiResponse(description="A field is invalid or unknown; the body names it."),
            401: OpenApiResponse(description="No credentials."),
            403: OpenApiResponse(description="No 'analyses.add_assemblyanalysisrequest' permission."),
            429: OpenApiResponse(
                description="More requests than API_REQUEST_CREATE_THROTTLE allows; retry later."
            ),
            409: OpenApiResponse(
                description="An active request for this study exists: `existing` is its URL."
            ),
            413: OpenApiResponse(description="The body is larger than API_MAX_BODY_BYTES."),
        },
    ),
)
class AssemblyAnalysisRequestViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = AssemblyAnalysisRequestSerializer
    permission_classes = [IsAuthenticated, CanAddRequests]
    throttle_scope = "request-create"

    def get_throttles(self) -> list:
        return [ScopedRateThrottle()] if self.action == "create" else []

    filterset_fields = ["status", "study_accession"]
    ordering_fields = ["created", "updated", "status"]

    def get_queryset(self) -> QuerySet[AssemblyAnalysisRequest]:
        queryset = AssemblyAnalysisRequest.objects.select_related("study", "requester")
        if getattr(self, "swagger_fake_view", False):
            return queryset.none()
        user = self.request.user
        if user.is_staff:
            return queryset
        # Other users' requests are invisible (404), not forbidden: their existence is not ours to reveal.
        return queryset.filter(requester=user)

    def perform_create(self, serializer: AssemblyAnalysisRequestSerializer) -> None:
        try:
            serializer.instance = create_assembly_analysis_request(
                study_accession=serializer.validated_data["study_accession"],
                requester=self.request.user,
                force=serializer.validated_data.get("force", False),
            )
        except ActiveRequestExists as exc:
            existing = reverse(
                "assembly-analysis-request-detail", args=[exc.existing.pk], request=self.request
            )
            raise Conflict({"detail": str(exc), "existing": existing}) from None

    @extend_schema(
        summary="Cancel a request",
        request=CancelSerializer,
        responses={
            200: AssemblyAnalysisRequestSerializer,
            400: OpenApiResponse(description="`reason` is not a string of at most 500 characters."),
            409: OpenApiResponse(description="The request already completed, failed or was cancelled."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        instance = self.get_object()
        if not (request.user.is_staff or instance.requester_id == request.user.pk):
            raise PermissionDenied("Only the requester or staff may cancel a request.")
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            instance = cancel_assembly_analysis_request(
                instance, by=request.user, reason=body.validated_data.get("reason", "")
            )
        except RequestAlreadyFinished as exc:
            return Response({"detail": str(exc), "status": instance.status}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(instance).data)
