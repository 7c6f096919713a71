"""The ledger in the API, read-only: a request's jobs for its requester, every job for staff."""

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import generics, serializers, status, viewsets
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analyses.filters import RejectUnknownQueryParameters
from analyses.selectors import requests_visible_to
from analyses.views import REQUEST_NOT_FOUND, UNAUTHENTICATED, IsRequesterOrMayChange
from workflows.models import ClusterJob
from workflows.operations.serializers import ClusterJobSerializer, columns_shown
from workflows.orchestration.recovery import retry_failed_runs
from workflows.selectors import jobs_with_step_and_run, request_jobs

NOT_STAFF = OpenApiResponse(description="Not staff.")


@extend_schema_view(
    list=extend_schema(
        summary="Every Slurm job of the service (staff)",
        responses={
            200: ClusterJobSerializer(many=True),
            400: OpenApiResponse(description="A filter is invalid; the body names it."),
            401: UNAUTHENTICATED,
            403: NOT_STAFF,
        },
    ),
    retrieve=extend_schema(
        summary="A Slurm job (staff)",
        responses={
            200: ClusterJobSerializer,
            401: UNAUTHENTICATED,
            403: NOT_STAFF,
            404: OpenApiResponse(description="No such job."),
        },
    ),
)
class ClusterJobViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ClusterJobSerializer
    permission_classes = [IsAdminUser]
    filterset_fields = ["state", "request"]
    ordering_fields = ["created", "submitted_at", "ended_at"]

    def get_queryset(self) -> QuerySet[ClusterJob]:
        return jobs_with_step_and_run().only(*columns_shown())


@extend_schema(
    summary="The Slurm jobs of an assembly-analysis request",
    responses={200: ClusterJobSerializer(many=True), 401: UNAUTHENTICATED, 404: REQUEST_NOT_FOUND},
)
class RequestJobsView(generics.ListAPIView):
    """Yours, or any for staff; another user's request is a 404, as its detail is."""

    serializer_class = ClusterJobSerializer
    permission_classes = [IsAuthenticated]
    filter_backends = [RejectUnknownQueryParameters]

    def get_queryset(self) -> QuerySet[ClusterJob]:
        if getattr(self, "swagger_fake_view", False):
            return ClusterJob.objects.none()
        # Whether the request is visible is all this needs of it: its id, not its row, its study and requester.
        visible = requests_visible_to(self.request.user).select_related(None).only("pk")
        request = get_object_or_404(visible, pk=self.kwargs["pk"])
        return request_jobs(request.pk).only(*columns_shown())


@extend_schema(
    summary="Retry the failed runs of a finished request",
    description="A new attempt for the failed steps only; completed steps are reused. Runs in a new flow run.",
    request=None,
    responses={
        202: inline_serializer(
            "RetryAccepted", {"retrying": serializers.ListField(child=serializers.CharField())}
        ),
        401: UNAUTHENTICATED,
        403: OpenApiResponse(description="Neither the requester nor a holder of the change permission."),
        404: REQUEST_NOT_FOUND,
        409: OpenApiResponse(
            description="Nothing to retry (the request is not finished, or no step failed), or the requester has "
            "another active request for the study (`existing` links it)."
        ),
    },
)
class RetryRequestView(APIView):
    permission_classes = [IsAuthenticated, IsRequesterOrMayChange]

    def post(self, request: Request, pk: int) -> Response:
        target = get_object_or_404(requests_visible_to(request.user, changing=True), pk=pk)
        self.check_object_permissions(request, target)
        runs = retry_failed_runs(target.pk)
        return Response({"retrying": runs}, status=status.HTTP_202_ACCEPTED)
