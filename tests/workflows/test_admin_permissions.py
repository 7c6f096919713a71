"""Least privilege in the admin: every action, and every button that posts one, needs the change permission.

Each action is tried by three users: a staff user who may only view the model, one who may also change it, and a
superuser. The first is not offered the action (neither in the changelist nor as a button on a request's page),
and posting it anyway leaves the row as it was.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from analyses.models import AssemblyAnalysisRequest, Study
from workflows.models import ClusterJob, Plan, PlanStep, Trigger

pytestmark = pytest.mark.django_db


def _trigger_for(request: AssemblyAnalysisRequest, *, attempts: int) -> Trigger:
    """A pending trigger of the request's that already failed: the one "Re-dispatch" makes due now."""
    return Trigger.objects.create(
        source=f"analyses.assemblyanalysisrequest:{request.pk}",
        deployment_name="assembly_analysis_request_deployment",
        parameters={"request_id": request.pk},
        idempotency_key=uuid.uuid4().hex,
        attempts=attempts,
        last_error="connection refused" if attempts else "",
        next_attempt_at="2099-01-01T00:00:00Z" if attempts else None,
    )


def pending_request() -> AssemblyAnalysisRequest:
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    _trigger_for(request, attempts=2)
    return request


def failed_request() -> AssemblyAnalysisRequest:
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    request.status = AssemblyAnalysisRequest.Status.FAILED
    request.request_metadata = {"succeeded_runs": [], "failed_runs": {"ERR9000001": "read_qc exit code 3"}}
    request.save()
    plan = Plan.objects.create(
        request=request, pipeline="assembly", pipeline_version="1", uid=uuid.uuid4().hex
    )
    key = uuid.uuid4().hex
    PlanStep.objects.create(
        plan=plan, run_accession="ERR9000001", step="read_qc", position=0, spec={}, key=key
    )
    ClusterJob.objects.create(
        key=key,
        attempt=1,
        name="emgapi-read_qc-ERR9000001",
        spec={},
        slurm_job_id="7",
        state="FAILED",
        request=request,
    )
    return request


@dataclass(frozen=True)
class Case:
    """One admin action: the model's admin URL, what to act on, and the row's state that the action changes."""

    action: str
    app_model: str
    make: Callable[[], object]
    state: Callable[[object], object]
    on_request_page: bool = False  # also a button on the object's page


def _request_state(request: object) -> object:
    assert isinstance(request, AssemblyAnalysisRequest)
    request.refresh_from_db()
    trigger = Trigger.objects.filter(source=f"analyses.assemblyanalysisrequest:{request.pk}").first()
    return (
        request.status,
        Plan.objects.filter(request=request).count(),
        trigger.next_attempt_at if trigger else None,
    )


def _study_state(study: object) -> object:
    return Trigger.objects.filter(source=f"analyses.study:{getattr(study, 'pk', None)}").count()


def _trigger_state(trigger: object) -> object:
    assert isinstance(trigger, Trigger)
    trigger.refresh_from_db()
    return trigger.next_attempt_at


def _new_study() -> Study:
    study = Study.objects.create(title="A study", ena_accession="PRJEB00001")
    # Creating a study by hand queues its first sync; only the action's own trigger is counted.
    Trigger.objects.filter(source=f"analyses.study:{study.pk}").delete()
    return study


def _failing_trigger() -> Trigger:
    return _trigger_for(AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00002"), attempts=3)


CASES = [
    Case("cancel_requests", "analyses/assemblyanalysisrequest", pending_request, _request_state, True),
    Case("retry_failed_runs", "analyses/assemblyanalysisrequest", failed_request, _request_state, True),
    Case("redispatch", "analyses/assemblyanalysisrequest", pending_request, _request_state, True),
    Case("sync_with_ena", "analyses/study", _new_study, _study_state, True),
    Case("dispatch_now", "workflows/trigger", _failing_trigger, _trigger_state),
]


def _staff(username: str, app_model: str, codenames: list[str]) -> Client:
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    app_label, model = app_model.split("/")
    for codename in codenames:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=f"{codename}_{model}")
        )
    client = Client()
    client.force_login(user)
    return client


def _client_for(role: str, app_model: str) -> Client:
    if role == "view-only staff":
        return _staff("viewer", app_model, ["view"])
    if role == "change permission":
        return _staff("changer", app_model, ["view", "change"])
    superuser = get_user_model().objects.create_superuser("root", "root@example.org", "pw")
    client = Client()
    client.force_login(superuser)
    return client


@pytest.mark.parametrize("role", ["view-only staff", "change permission", "superuser"])
@pytest.mark.parametrize("case", CASES, ids=[case.action for case in CASES])
def test_every_action_needs_the_change_permission(case: Case, role: str):
    client = _client_for(role, case.app_model)
    obj = case.make()
    allowed = role != "view-only staff"
    changelist = f"/admin/{case.app_model}/"

    listed = client.get(changelist)
    assert listed.status_code == 200
    # Django leaves the action form out of the page when the user is offered no action at all.
    form = listed.context["action_form"]
    offered = [name for name, _ in form.fields["action"].choices] if form is not None else []
    assert (case.action in offered) is allowed, offered

    if case.on_request_page:
        page = client.get(f"{changelist}{obj.pk}/change/")  # type: ignore[attr-defined]
        buttons = [action for action, _ in page.context["steering_actions"]]
        assert (case.action in buttons) is allowed, buttons

    before = case.state(obj)
    # "confirmed": the cancel action's second step (the first asks); the other actions ignore it.
    chosen = {"action": case.action, "_selected_action": [obj.pk], "confirmed": "yes"}  # type: ignore[attr-defined]
    response = client.post(changelist, chosen, follow=True)
    assert response.status_code == 200
    after = case.state(obj)
    if allowed:
        assert after != before, f"{case.action} did nothing for {role}"
    else:
        assert after == before, f"{case.action} changed the row for {role}"


def awaiting_request() -> AssemblyAnalysisRequest:
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00003")
    AssemblyAnalysisRequest.objects.filter(pk=request.pk).update(
        status=AssemblyAnalysisRequest.Status.AWAITING_APPROVAL, status_detail="Awaiting approval: costly."
    )
    return request


@pytest.mark.parametrize(
    "codenames, allowed",
    [(["view", "change"], False), (["view", "approve"], True)],
    ids=["change permission", "approve permission"],
)
@pytest.mark.parametrize("action, status", [("approve_requests", "running"), ("reject_requests", "rejected")])
def test_approving_and_rejecting_need_the_approve_permission(codenames, allowed, action, status):
    # The API's approve and reject ask for the same permission (tests/workflows/test_approval.py).
    client = _staff("reviewer", "analyses/assemblyanalysisrequest", codenames)
    request = awaiting_request()
    changelist = "/admin/analyses/assemblyanalysisrequest/"
    offered = [name for name, _ in client.get(changelist).context["action_form"].fields["action"].choices]
    assert (action in offered) is allowed, offered
    buttons = [
        name for name, _ in client.get(f"{changelist}{request.pk}/change/").context["steering_actions"]
    ]
    assert (action in buttons) is allowed, buttons

    chosen = {"action": action, "_selected_action": [request.pk], "confirmed": "yes", "reason": "seen"}
    assert client.post(changelist, chosen, follow=True).status_code == 200
    request.refresh_from_db()
    assert request.status == (status if allowed else "awaiting_approval")


def test_a_rejection_in_the_admin_asks_for_its_reason_again_without_one():
    client = _staff("reviewer", "analyses/assemblyanalysisrequest", ["view", "approve"])
    request = awaiting_request()
    chosen = {
        "action": "reject_requests",
        "_selected_action": [request.pk],
        "confirmed": "yes",
        "reason": " ",
    }
    page = client.post("/admin/analyses/assemblyanalysisrequest/", chosen)
    assert b"A rejection needs a reason" in page.content
    request.refresh_from_db()
    assert request.status == "awaiting_approval"
