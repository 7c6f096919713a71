"""Every changelist the admin registers makes as many queries for 20 rows as for 2: no query per row."""

import pytest
from django.contrib.admin import site
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from analyses.models import (
    AssemblyAnalysisRequest,
    Notification,
    Study,
    StudyChange,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.builders import failed_request, populate
from workflows.models import ClusterJob, PollerLease, StepBatch

pytestmark = pytest.mark.django_db

# Read from the registry, so a ModelAdmin registered later is counted too (and fails below until rows are made).
CHANGELISTS = sorted(model._meta.label_lower for model in site._registry)


def make_rows(count: int) -> None:
    """At least `count` rows of every registered model, each with the relations its list shows."""
    populate(count)
    while ClusterJob.objects.count() < count:
        failed_request()  # a request with its trigger, a plan and three jobs (one escalated)
    for i in range(StepBatch.objects.count(), count):
        request = AssemblyAnalysisRequest.objects.order_by("pk")[i % AssemblyAnalysisRequest.objects.count()]
        StepBatch.objects.create(
            request=request,
            step="denoise",
            members={"ERR1": 1},
            label="1 run: ERR1",
            spec={},
            key=f"batch-{i}",
        )
    for request in AssemblyAnalysisRequest.objects.all()[: max(0, count - Notification.objects.count())]:
        Notification.objects.create(request=request, event="failed")
    owner, _ = get_user_model().objects.get_or_create(username="hook-owner")
    Token.objects.get_or_create(user=owner)  # every user has one: the tokens' list counts as many rows
    for i in range(WebhookEndpoint.objects.count(), count):
        WebhookEndpoint.objects.create(owner=owner, url=f"https://hooks.example.org/{i}", events=["failed"])
    endpoints = list(WebhookEndpoint.objects.all())
    for i, notification in enumerate(
        Notification.objects.all()[: max(0, count - WebhookDelivery.objects.count())]
    ):
        WebhookDelivery.objects.create(endpoint=endpoints[i % len(endpoints)], notification=notification)
    study = Study.objects.order_by("pk")[0]
    for i in range(StudyChange.objects.count(), count):
        StudyChange.objects.create(
            study=study, kind="run_added", run_accession=f"ERR{i}", synced_at=timezone.now()
        )
    for i in range(PollerLease.objects.count(), count):
        PollerLease.objects.create(name=f"lease-{i}", holder=f"host-{i}")
    permissions = list(Permission.objects.all()[:3])
    for i in range(Group.objects.count(), count):
        Group.objects.create(name=f"group-{i}").permissions.set(permissions)
    users = get_user_model().objects
    for i in range(users.count(), count + 1):
        user = users.create_user(f"user-{i}")
        user.groups.set(Group.objects.all()[:2])
        Token.objects.create(user=user)


@pytest.mark.parametrize("label", CHANGELISTS)
def test_changelist_queries_do_not_grow_with_its_rows(admin_client, label):
    url = reverse(f"admin:{label.replace('.', '_')}_changelist")

    def queries_with(rows: int) -> int:
        make_rows(rows)
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(url)
        assert response.status_code == 200
        assert response.context["cl"].result_count >= rows, f"{label}: make_rows does not make its rows"
        return len(captured)

    few, many = queries_with(2), queries_with(20)
    assert few == many, f"{label}: {few} queries for 2 rows, {many} for 20"
