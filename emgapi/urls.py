from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from analyses.views import (
    AnalysisViewSet,
    AssemblyAnalysisRequestViewSet,
    StudyAnalysesView,
    StudyChangesView,
    StudyRunsView,
    StudyViewSet,
    StudyWatchView,
    WebhookEndpointViewSet,
)
from emgapi.health import healthz, readyz
from workflows.operations.views import ClusterJobViewSet, RequestJobsView, RetryRequestView

# The admin's "View site" link: this service's site is its API (the root has no page).
admin.site.site_url = "/api/"
admin.site.site_header = "emgapi administration"
# The app list is the index page's; as a left column on every page it took 300 of a 1400-pixel window's width
# from the lists (tests/browser/test_admin_widths.py).
admin.site.enable_nav_sidebar = False

router = DefaultRouter()
router.register("studies", StudyViewSet, basename="study")
router.register("analyses", AnalysisViewSet, basename="analysis")
router.register(
    "assembly-analysis-requests", AssemblyAnalysisRequestViewSet, basename="assembly-analysis-request"
)
router.register("jobs", ClusterJobViewSet, basename="cluster-job")
router.register("webhooks", WebhookEndpointViewSet, basename="webhook")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/auth/", include("rest_framework.urls")),
    path("api/studies/<str:accession>/runs/", StudyRunsView.as_view(), name="study-runs"),
    path("api/studies/<str:accession>/analyses/", StudyAnalysesView.as_view(), name="study-analyses"),
    path("api/studies/<str:accession>/changes/", StudyChangesView.as_view(), name="study-changes"),
    path("api/studies/<str:accession>/watch/", StudyWatchView.as_view(), name="study-watch"),
    path(
        "api/assembly-analysis-requests/<int:pk>/jobs/",
        RequestJobsView.as_view(),
        name="assembly-analysis-request-jobs",
    ),
    path(
        "api/assembly-analysis-requests/<int:pk>/retry/",
        RetryRequestView.as_view(),
        name="assembly-analysis-request-retry",
    ),
    path("api/", include(router.urls)),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
]
