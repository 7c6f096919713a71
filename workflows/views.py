"""The ledger in the API, read-only: a request's jobs for its requester, every job for staff."""

from django.db.models import OuterRef, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import generics, serializers, status, viewsets
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analyses.models import AssemblyAnalysisRequest
from workflows.models import ClusterJob, PlanStep
from workflows.recovery import NothingToRetry, retry_failed_runs
from workflows.serializers import ClusterJobSerializer


def jobs_with_step_and_run() -> QuerySet[ClusterJob]:
    """Each job annotated with the plan step and run it belongs to, in the one query that lists them."""
    step = PlanStep.objects.filter(plan__request=OuterRef("request_id"), key=OuterRef("key"))
    return ClusterJob.objects.annotate(
        step=Subquery(step.values("step")[:1]), run=Subquery(step.values("run_accession")[:1])
    ).order_by("created", "attempt")


@extend_schema_view(
    list=extend_schema(summary="Every Slurm job of the service (staff)"),
    retrieve=extend_schema(summary="A Slurm job (staff)"),
)
class ClusterJobViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ClusterJobSerializer
    permission_classes = [IsAdminUser]
    filterset_fields = ["state", "request"]
    ordering_fields = ["created", "submitted_at", "ended_at"]

    def get_queryset(self) -> QuerySet[ClusterJob]:
        return jobs_with_step_and_run()


@extend_schema(summary="The Slurm jobs of an assembly-analysis request")
class RequestJobsView(generics.ListAPIView):
    """Yours, or any for staff; another user's request is a 404, as its detail is."""

    serializer_class = ClusterJobSerializer
    permission_classes = [IsAuthenticated]
    filter_backends = []

    def get_queryset(self) -> QuerySet[ClusterJob]:
        if getattr(self, "swagger_fake_view", False):
            return ClusterJob.objects.none()
        requests = AssemblyAnalysisRequest.objects.all()
        if not self.request.user.is_staff:
            requests = requests.filter(requester=self.request.user)
        request = get_object_or_404(requests, pk=self.kwargs["pk"])
        return jobs_with_step_and_run().filter(request=request)


@extend_schema(
    summary="Retry the failed runs of a finished request",
    description="A new attempt for the failed steps only; completed steps are reused. Runs in a new flow run.",
    request=None,
    responses={
        202: inline_serializer(
            "RetryAccepted", {"retrying": serializers.ListField(child=serializers.CharField())}
        ),
        404: OpenApiResponse(description="No such request of yours (staff may retry any)."),
        409: OpenApiResponse(description="Nothing to retry: the request is not finished, or no step failed."),
    },
)
class RetryRequestView(APIView):
    permission_classes = [IsAuthenticated]

    def post(self, request: Request, pk: int) -> Response:
        requests = AssemblyAnalysisRequest.objects.all()
        if not request.user.is_staff:
            requests = requests.filter(requester=request.user)
        target = get_object_or_404(requests, pk=pk)
        try:
            runs = retry_failed_runs(target.pk)
        except NothingToRetry as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response({"retrying": runs}, status=status.HTTP_202_ACCEPTED)
