from django.db.models import Count, Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
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
    IdempotencyKeyReused,
    RequestAlreadyFinished,
    cancel_assembly_analysis_request,
    may_change_request,
    submit_assembly_analysis_request,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
CHANGE_PERMISSION = "analyses.change_assemblyanalysisrequest"


class CanAddRequests(BasePermission):
    """Creating a request needs the model's add permission, not merely a token: it starts days of cluster work."""

    message = (
        "Creating an assembly-analysis request needs the 'analyses.add_assemblyanalysisrequest' permission."
    )

    def has_permission(self, request: Request, view) -> bool:
        return view.action != "create" or request.user.has_perm("analyses.add_assemblyanalysisrequest")


class IsRequesterOrMayChange(BasePermission):
    """Cancel, retry: the request's requester, or a holder of the model's change permission (staff or not)."""

    message = (
        f"Only the requester, or a holder of the '{CHANGE_PERMISSION}' permission, may change a request."
    )

    def has_object_permission(self, request: Request, view, obj: AssemblyAnalysisRequest) -> bool:
        return request.method in SAFE_METHODS or may_change_request(request.user, obj)


def requests_visible_to(user, *, changing: bool = False) -> QuerySet[AssemblyAnalysisRequest]:
    """Reads: one's own, or all for staff. Changes: all for a holder of the change permission too, so that a
    non-staff operator can cancel what they may not list; another's request is otherwise a 404, not a 403."""
    queryset = AssemblyAnalysisRequest.objects.select_related("study", "requester")
    if user.is_staff or (changing and user.has_perm(CHANGE_PERMISSION)):
        return queryset
    return queryset.filter(requester=user)


class Conflict(APIException):
    """409 in DRF's error shape; `detail` may be a dict naming the conflicting resource."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class UnprocessableEntity(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The request is well-formed but cannot be processed."
    default_code = "unprocessable_entity"


REQUEST_NOT_FOUND = OpenApiResponse(description="No such request of yours (staff see all).")
UNAUTHENTICATED = OpenApiResponse(description="No credentials.")


@extend_schema_view(
    list=extend_schema(
        summary="List studies",
        description="Filter by ENA accession or biome; search titles.",
        responses={200: StudySerializer(many=True), 400: OpenApiResponse(description="A filter is invalid.")},
    ),
    retrieve=extend_schema(
        summary="A study, with its runs and analyses summarised",
        responses={200: StudyDetailSerializer, 404: OpenApiResponse(description="No such study.")},
    ),
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
    list=extend_schema(
        summary="List analyses",
        description="Filter by study (MGYS…) and status.",
        responses={
            200: AnalysisSerializer(many=True),
            400: OpenApiResponse(description="A filter is invalid; the body names it."),
        },
    ),
    retrieve=extend_schema(
        summary="An analysis",
        responses={200: AnalysisSerializer, 404: OpenApiResponse(description="No such analysis.")},
    ),
)
class AnalysisViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_field = "accession"
    serializer_class = AnalysisSerializer
    filterset_class = AnalysisFilter
    ordering_fields = ["accession", "created"]
    queryset = Analysis.objects.select_related("study", "run")


@extend_schema_view(
    list=extend_schema(
        summary="List assembly-analysis requests (yours; staff see all)",
        responses={
            200: AssemblyAnalysisRequestSerializer(many=True),
            400: OpenApiResponse(description="A filter is invalid; the body names it."),
            401: UNAUTHENTICATED,
        },
    ),
    retrieve=extend_schema(
        summary="An assembly-analysis request",
        responses={200: AssemblyAnalysisRequestSerializer, 401: UNAUTHENTICATED, 404: REQUEST_NOT_FOUND},
    ),
    create=extend_schema(
        summary="Request the assembly and analysis of an ENA study",
        description=(
            "Starts the 'Assemble and analyse a study' workflow; `flow_run_id` is filled once it is dispatched. "
            "One active (pending or running) request per study and requester: another answers 409 with the "
            'existing request\'s URL, unless `"force": true`. With an `Idempotency-Key` header, sending the '
            "same body again answers 200 with the request the first one created, and creates nothing."
        ),
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description=(
                    "Any string of up to 255 printable ASCII characters, unique per request you mean to create "
                    "(a UUID will do); retrying with it is safe."
                ),
            )
        ],
        responses={
            201: AssemblyAnalysisRequestSerializer,
            200: OpenApiResponse(
                AssemblyAnalysisRequestSerializer,
                description="The Idempotency-Key was sent before with this body: the request it created.",
            ),
            422: OpenApiResponse(
                description="The Idempotency-Key was sent before with another body; the detail names it."
            ),
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
    permission_classes = [IsAuthenticated, CanAddRequests, IsRequesterOrMayChange]
    throttle_scope = "request-create"

    def get_throttles(self) -> list:
        return [ScopedRateThrottle()] if self.action == "create" else []

    filterset_fields = ["status", "study_accession"]
    ordering_fields = ["created", "updated", "status"]

    def get_queryset(self) -> QuerySet[AssemblyAnalysisRequest]:
        if getattr(self, "swagger_fake_view", False):
            return AssemblyAnalysisRequest.objects.none()
        # Other users' requests are invisible (404), not forbidden: their existence is not ours to reveal.
        return requests_visible_to(self.request.user, changing=self.action == "cancel")

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
        try:
            submission = submit_assembly_analysis_request(
                study_accession=serializer.validated_data["study_accession"],
                requester=request.user,
                force=serializer.validated_data.get("force", False),
                idempotency_key=self._idempotency_key(),
            )
        except ActiveRequestExists as exc:
            raise Conflict({"detail": str(exc), "existing": self._url(exc.existing)}) from None
        except IdempotencyKeyReused as exc:
            raise UnprocessableEntity({"detail": str(exc), "existing": self._url(exc.existing)}) from None
        data = self.get_serializer(submission.request).data
        if submission.replayed:
            return Response(data, status=status.HTTP_200_OK, headers={"Idempotent-Replayed": "true"})
        return Response(
            data, status=status.HTTP_201_CREATED, headers={"Location": self._url(submission.request)}
        )

    def _url(self, instance: AssemblyAnalysisRequest) -> str:
        return reverse("assembly-analysis-request-detail", args=[instance.pk], request=self.request)

    @extend_schema(
        summary="Cancel a request",
        request=CancelSerializer,
        responses={
            200: AssemblyAnalysisRequestSerializer,
            400: OpenApiResponse(description="`reason` is not a string of at most 500 characters."),
            401: UNAUTHENTICATED,
            403: OpenApiResponse(description="Neither the requester nor a holder of the change permission."),
            404: REQUEST_NOT_FOUND,
            409: OpenApiResponse(description="The request already completed, failed or was cancelled."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        instance = self.get_object()  # and IsRequesterOrMayChange: 403 otherwise
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            instance = cancel_assembly_analysis_request(
                instance, by=request.user, reason=body.validated_data.get("reason", "")
            )
        except RequestAlreadyFinished as exc:
            return Response({"detail": str(exc), "status": instance.status}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(instance).data)
