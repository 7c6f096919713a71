"""The workflow layer in the admin: a request's work on its page, the ledger and outbox read-only, the actions."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.sites import site
from django.contrib.messages import get_messages
from django.utils import timezone

from analyses.models import AssemblyAnalysisRequest
from tests.builders import failed_request
from workflows.models import ClusterJob, Trigger

pytestmark = pytest.mark.django_db


def test_a_request_page_shows_its_flow_run_outcomes_jobs_and_trigger(admin_client, settings):
    settings.PREFECT_UI_URL = "http://prefect.example:4200"
    request = failed_request()
    page = admin_client.get(f"/admin/analyses/assemblyanalysisrequest/{request.pk}/change/").content.decode()
    flow_run_id = request.request_metadata["flow_run_id"]
    assert f'href="http://prefect.example:4200/runs/flow-run/{flow_run_id}"' in page
    assert "read_qc exit code 3: &lt;adapter&gt; file missing" in page  # escaped
    assert "rejected by data QA" in page and "no FASTQ" in page
    assert page.count("<tr><td>read_qc</td><td>ERR9000001</td>") == 2  # both attempts
    assert "OUT_OF_MEMORY" in page and "<summary>log</summary><pre>oom-kill event</pre>" in page
    trigger = Trigger.objects.get(source=f"analyses.assemblyanalysisrequest:{request.pk}")
    assert f"trigger {trigger.pk}</a> pending" in page


def test_a_finished_requests_page_shows_each_runs_route_and_what_became_of_each_pipeline(admin_client):
    skipped = "skipped: assembly_stats.total_length 12,345 < 20,000"
    request = AssemblyAnalysisRequest.objects.create(
        study_accession="PRJEB30009",
        status="completed",
        request_metadata={
            "succeeded_runs": ["ERR1"],
            "outcomes": {
                "ERR1": {
                    "route": "assembly",
                    "pipelines": {"assembly": "completed", "assembly_analysis": skipped},
                }
            },
        },
    )
    page = admin_client.get(f"/admin/analyses/assemblyanalysisrequest/{request.pk}/change/").content.decode()
    assert (
        "<tr><td>ERR1</td><td>succeeded</td><td>assembly</td><td>assembly: completed; assembly_analysis: "
        + skipped.replace("<", "&lt;")
        + "</td><td></td></tr>"
    ) in page


def test_the_prefect_ui_defaults_to_the_api_url_without_api():
    from django.conf import settings

    ui_url, api_url = settings.PREFECT_UI_URL, settings.PREFECT_API_URL
    assert ui_url == api_url.removesuffix("/api")


def test_retry_failed_runs_from_the_admin(admin_client):
    request = failed_request()
    running = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00002")
    Trigger.objects.all().delete()
    response = admin_client.post(
        "/admin/analyses/assemblyanalysisrequest/",
        {"action": "retry_failed_runs", "_selected_action": [request.pk, running.pk]},
        follow=True,
    )
    shown = [str(message) for message in response.context["messages"]]
    assert f"Request {request.pk}: retrying the failed steps of ERR9000001." in shown
    assert f"Nothing to retry: Request {running.pk} is pending: only a finished request is retried." in shown
    request.refresh_from_db()
    assert request.status == "pending"
    (trigger,) = Trigger.objects.all()
    assert (
        trigger.source == f"analyses.assemblyanalysisrequest:{request.pk}"
        and ":gen2:" in trigger.idempotency_key
    )
    assert request.plans.count() == 2


def test_a_job_page_shows_its_spec_log_and_escalation_chain(admin_client):
    request = failed_request()
    second = ClusterJob.objects.get(request=request, attempt=2)
    response = admin_client.get(f"/admin/workflows/clusterjob/{second.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f'/admin/workflows/clusterjob/{second.previous_attempt_id}/change/">attempt 1</a>' in page
    assert "<pre>&lt;adapter&gt; file missing</pre>" in page  # the log tail, escaped, as written
    assert "&lt;adapter&gt; file missing" in page and "&quot;mem&quot;: 2" in page
    first_page = admin_client.get(f"/admin/workflows/clusterjob/{second.previous_attempt_id}/change/").content
    assert f'/admin/workflows/clusterjob/{second.pk}/change/">attempt 2</a>'.encode() in first_page


def test_the_ledger_is_read_only_in_the_admin(admin_client, rf, admin_user):
    model_admin = site._registry[ClusterJob]
    http_request = rf.get("/")
    http_request.user = admin_user
    assert not model_admin.has_add_permission(http_request)
    assert not model_admin.has_change_permission(http_request)
    assert not model_admin.has_delete_permission(http_request)
    failed_request()

    def job_ids(query: str) -> set[str]:
        listing = admin_client.get(f"/admin/workflows/clusterjob/?{query}").content.decode()
        return {job_id for job_id in ("101", "102", "103") if f'field-slurm_job_id">{job_id}<' in listing}

    assert job_ids("") == {"101", "102", "103"}
    assert job_ids("step=read_qc") == {"102", "103"}
    assert job_ids("state=FAILED") == {"103"}
    assert job_ids("q=103") == {"103"}


def test_dispatch_now_forgets_the_back_off_and_wakes_the_loops(admin_client, monkeypatch):
    woken = []
    monkeypatch.setattr("workflows.operations.steering.wake_service_loops", lambda: woken.append(1))
    AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    trigger = Trigger.objects.get()
    Trigger.objects.update(
        attempts=3, last_error="ConnectError: refused", next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    listing = admin_client.get("/admin/workflows/trigger/").content.decode()
    assert "failing (3 attempts)" in listing and "ConnectError: refused" in listing
    response = admin_client.post(
        "/admin/workflows/trigger/", {"action": "dispatch_now", "_selected_action": [trigger.pk]}, follow=True
    )
    assert "1 pending trigger(s) queued for immediate dispatch" in str(
        next(iter(response.context["messages"]))
    )
    trigger.refresh_from_db()
    assert trigger.next_attempt_at is None and woken == [1]


def test_dispatch_now_leaves_dispatched_triggers_alone(admin_client, monkeypatch):
    woken = []
    monkeypatch.setattr("workflows.operations.steering.wake_service_loops", lambda: woken.append(1))
    AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    dispatched_at = timezone.now() + timedelta(minutes=5)
    Trigger.objects.update(status=Trigger.Status.DISPATCHED, next_attempt_at=dispatched_at)
    response = admin_client.post(
        "/admin/workflows/trigger/",
        {"action": "dispatch_now", "_selected_action": list(Trigger.objects.values_list("pk", flat=True))},
        follow=True,
    )
    assert "nothing to dispatch" in str(next(iter(response.context["messages"])))
    assert Trigger.objects.get().next_attempt_at == dispatched_at and woken == []


def test_a_job_s_step_comes_from_its_labels_when_it_has_them(admin_client):
    request = failed_request()
    # Outside the plan (as an adopted job is), with a name that says nothing: the labels are all there is.
    ClusterJob.objects.create(
        key=uuid.uuid4().hex,
        name="adopted",
        spec={},
        slurm_job_id="777",
        state="RUNNING",
        request=request,
        labels={"step": "assemble", "run": "ERR9000002"},
    )
    listing = admin_client.get("/admin/workflows/clusterjob/?q=777")
    assert listing.status_code == 200
    assert ">assemble</a></th>" in listing.content.decode()  # the first column links the job
    page = admin_client.get(f"/admin/analyses/assemblyanalysisrequest/{request.pk}/change/").content.decode()
    assert "<tr><td>assemble</td><td>ERR9000002</td>" in page


def test_redispatch_makes_a_failing_trigger_due_now_and_says_what_it_did(admin_client, monkeypatch):
    woken = []
    monkeypatch.setattr("workflows.operations.steering.wake_service_loops", lambda: woken.append(1))
    failing = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    Trigger.objects.filter(source=f"analyses.assemblyanalysisrequest:{failing.pk}").update(
        attempts=4, last_error="ConnectError: refused", next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    sent = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00002")
    Trigger.objects.filter(source=f"analyses.assemblyanalysisrequest:{sent.pk}").update(
        status=Trigger.Status.DISPATCHED, flow_run_id="f00d"
    )
    failing_trigger = Trigger.objects.get(source=f"analyses.assemblyanalysisrequest:{failing.pk}")
    everything = admin_client.get("/admin/workflows/trigger/").content.decode()
    assert 'field-dispatch_state">dispatched<' in everything
    failing_only = admin_client.get("/admin/workflows/trigger/?dispatch=failing").content.decode()
    assert f"/admin/workflows/trigger/{failing_trigger.pk}/change/" in failing_only
    assert failing_only.count("failing (4 attempts)") == 1
    assert 'field-dispatch_state">dispatched<' not in failing_only

    response = admin_client.post(
        "/admin/analyses/assemblyanalysisrequest/",
        {"action": "redispatch", "_selected_action": [failing.pk, sent.pk]},
        follow=True,
    )
    shown = [str(message) for message in get_messages(response.wsgi_request)]
    assert (
        f"Request {failing.pk}: trigger {failing_trigger.pk} (failing (4 attempts); last error: ConnectError: "
        "refused) is due now; the service loops were woken to send it." in shown
    )
    assert any(
        f"Request {sent.pk}: trigger" in m and "(flow run f00d): nothing to re-dispatch" in m for m in shown
    )
    failing_trigger.refresh_from_db()
    assert failing_trigger.next_attempt_at is None and woken == [1]
    assert Trigger.objects.get(source=f"analyses.assemblyanalysisrequest:{sent.pk}").status == "dispatched"


def test_a_running_request_cannot_be_deleted_until_cancelled(admin_client):
    finished = failed_request()
    running = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00002")
    delete_url = f"/admin/analyses/assemblyanalysisrequest/{running.pk}/delete/"
    response = admin_client.get(delete_url, follow=True)
    assert response.redirect_chain[-1][0] == f"/admin/analyses/assemblyanalysisrequest/{running.pk}/change/"
    shown = " ".join(str(message) for message in get_messages(response.wsgi_request))
    assert f"Request {running.pk} is pending: cancel it first" in shown
    bulk = admin_client.post(
        "/admin/analyses/assemblyanalysisrequest/",
        {"action": "delete_selected", "_selected_action": [finished.pk, running.pk], "post": "yes"},
        follow=True,
    )
    shown = " ".join(str(message) for message in get_messages(bulk.wsgi_request))
    assert f"Request {running.pk} is pending: cancel it first" in shown
    assert AssemblyAnalysisRequest.objects.count() == 2
    AssemblyAnalysisRequest.objects.filter(pk=running.pk).update(status="cancelled")
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not AssemblyAnalysisRequest.objects.filter(pk=running.pk).exists()


def test_a_study_page_links_ena_and_its_runs_and_syncs_on_demand(admin_client, monkeypatch):
    from analyses.models import Run, Study

    study = Study.objects.create(ena_accession="PRJEB00001", last_synced_with_ena=timezone.now())
    Run.objects.bulk_create(Run(accession=f"ERR{5000000 + i}", study=study) for i in range(450))
    page = admin_client.get(f"/admin/analyses/study/{study.pk}/change/").content.decode()
    assert 'href="https://www.ebi.ac.uk/ena/browser/view/PRJEB00001"' in page
    assert f'?study__id__exact={study.pk}">450 run(s)</a>' in page
    saved = admin_client.post(
        f"/admin/analyses/study/{study.pk}/change/", {"ena_accession": "PRJEB00001", "title": "t"}
    )
    assert saved.status_code == 302  # a study with 450 runs saves
    woken = []
    monkeypatch.setattr("workflows.outbox.dispatch.wake_service_loops", lambda: woken.append(1))
    response = admin_client.post(
        "/admin/analyses/study/", {"action": "sync_with_ena", "_selected_action": [study.pk]}, follow=True
    )
    assert "1 study sync(s) queued" in " ".join(str(m) for m in get_messages(response.wsgi_request))
    (trigger,) = Trigger.objects.filter(source=f"analyses.study:{study.pk}")
    assert trigger.parameters == {"study_id": study.pk} and woken == [1]


def test_a_request_page_offers_the_actions_that_apply_and_comes_back_to_itself(admin_client):
    finished = failed_request()
    page = admin_client.get(f"/admin/analyses/assemblyanalysisrequest/{finished.pk}/change/").content.decode()
    assert 'value="retry_failed_runs"' in page and 'value="cancel_requests"' not in page
    assert 'name="_save"' not in page  # every field of a saved request is read-only
    running = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00002")
    url = f"/admin/analyses/assemblyanalysisrequest/{running.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'value="cancel_requests"' in page and 'value="retry_failed_runs"' not in page
    assert 'value="redispatch"' not in page  # its trigger has not failed
    response = admin_client.post(
        "/admin/analyses/assemblyanalysisrequest/",
        {
            "action": "cancel_requests",
            "confirmed": "yes",
            "index": 0,
            "_selected_action": running.pk,
            "_from_change_page": running.pk,
        },
    )
    assert response.status_code == 302 and response["Location"] == url
    running.refresh_from_db()
    assert running.status == "cancelled"
