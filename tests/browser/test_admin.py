"""A curator's path through the admin in headless Chromium, with the service's side played by the database.

No flow runs here: the dispatcher is run in-process with Prefect's answer stubbed, and the Slurm jobs are ledger
rows, so these run wherever PostgreSQL does. tests/browser/test_admin_on_the_stack.py does the same on the real stack.
"""

import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from analyses.models import AssemblyAnalysisRequest, Study
from tests.browser.admin_pages import REQUESTS, field, log_in
from tests.builders import failed_request
from workflows.models import ClusterJob, Plan, PlanStep, Trigger
from workflows.outbox.dispatch import dispatch_pending_triggers


def run_action(page: Page, action: str, *pks: int) -> None:
    """Tick the rows on the request list and run an action on them, as a curator does."""
    page.goto(REQUESTS)
    for pk in pks:
        page.check(f"input[name=_selected_action][value='{pk}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def add_running_jobs(request: AssemblyAnalysisRequest) -> None:
    """What the service writes once a request's first pass submitted: the plan, a finished and a running job."""
    plan = Plan.objects.create(
        request=request, pipeline="assembly", pipeline_version="1", uid=uuid.uuid4().hex
    )
    now = timezone.now()
    for position, (step, job_id, state) in enumerate(
        [("fetch_reads", "501", "COMPLETED"), ("read_qc", "502", "RUNNING")]
    ):
        key = uuid.uuid4().hex
        PlanStep.objects.create(
            plan=plan, run_accession="ERR9000001", step=step, position=position, spec={}, key=key
        )
        ClusterJob.objects.create(
            key=key,
            attempt=1,
            name=f"emgapi-{step}-ERR9000001",
            spec={},
            slurm_job_id=job_id,
            state=state,
            exit_code=0 if state == "COMPLETED" else None,
            request=request,
            started_at=now - timedelta(minutes=3),
            ended_at=now - timedelta(minutes=1) if state == "COMPLETED" else None,
            log_tail=f"{step}: last line of the log",
        )


def test_a_curator_adds_a_study_and_a_request_and_sees_its_work_fill_in(
    page: Page, superuser, settings, monkeypatch
):
    settings.PREFECT_UI_URL = "http://prefect.example:4200"
    log_in(page)

    page.goto("/admin/analyses/study/add/")
    page.fill("#id_ena_accession", "PRJEB00001")
    page.fill("#id_title", "Ocean sediment")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    study = Study.objects.get(ena_accession="PRJEB00001")
    assert Trigger.objects.filter(source=f"analyses.study:{study.pk}").exists()  # its sync with ENA is queued

    page.goto(f"{REQUESTS}add/")
    page.fill("#id_study_accession", "PRJEB00001")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    request = AssemblyAnalysisRequest.objects.get()
    assert request.requester == superuser

    page.goto(f"{REQUESTS}{request.pk}/change/")
    expect(field(page, "status")).to_have_text("Pending")
    expect(field(page, "flow_run")).to_have_text("— (not dispatched yet)")
    expect(field(page, "dispatch")).to_contain_text("pending")
    expect(field(page, "jobs")).to_have_text("— (nothing submitted yet)")

    # The service loop's dispatcher, with Prefect's answer stubbed: the web thread itself never calls Prefect.
    flow_run_id = str(uuid.uuid4())
    monkeypatch.setattr("workflows.outbox.prefect_api.create_flow_run", lambda *args, **kwargs: flow_run_id)
    assert dispatch_pending_triggers() == 2  # the study's sync and the request
    add_running_jobs(request)

    page.reload()
    link = field(page, "flow_run").get_by_role("link", name=flow_run_id)
    expect(link).to_have_attribute("href", f"http://prefect.example:4200/runs/flow-run/{flow_run_id}")
    expect(field(page, "dispatch")).to_contain_text("dispatched")
    rows = page.locator("table.emgapi-jobs tr").filter(has=page.locator("td"))
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("fetch_reads")
    expect(rows.nth(0)).to_contain_text("COMPLETED")
    expect(rows.nth(0)).to_contain_text("0:02:00")  # elapsed
    expect(rows.nth(1)).to_contain_text("RUNNING")
    expect(rows.nth(1).get_by_role("link", name="502")).to_be_visible()
    # The last log lines are there on demand: folded until asked for.
    log = rows.nth(1).locator("details pre")
    expect(log).to_be_hidden()
    rows.nth(1).locator("summary").click()
    expect(log).to_have_text("read_qc: last line of the log")


def test_a_running_request_is_cancelled_from_the_admin_and_only_then_deleted(page: Page, superuser):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=superuser)
    log_in(page)

    page.goto(f"{REQUESTS}{request.pk}/delete/")
    expect(page).to_have_url(re.compile(rf"{REQUESTS}{request.pk}/change/$"))
    expect(page.locator(".messagelist .error")).to_contain_text(
        f"Request {request.pk} is pending: cancel it first"
    )
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()  # on its page; here the list's action

    run_action(page, "cancel_requests", request.pk)
    # Nothing happens at one click: the page asks, with a reason to give.
    expect(page.locator("h1")).to_have_text("Cancel these requests?")
    page.fill("textarea[name=reason]", "started on the wrong study")
    page.get_by_role("button", name="Yes, cancel 1 request").click()
    expect(page.locator(".messagelist .success")).to_have_text("Cancelled 1 request(s).")
    expect(page.locator(f"#result_list tr:has(input[value='{request.pk}']) .field-status")).to_have_text(
        "Cancelled"
    )
    request.refresh_from_db()
    assert request.status == "cancelled" and request.cancelled_by == superuser
    assert request.status_detail == "started on the wrong study"

    page.goto(f"{REQUESTS}{request.pk}/delete/")
    page.click("input[type=submit]")
    expect(page.locator(".messagelist .success")).to_contain_text("was deleted successfully")
    assert not AssemblyAnalysisRequest.objects.filter(pk=request.pk).exists()


def test_a_failed_run_is_retried_from_the_admin(page: Page, superuser):
    request = failed_request("ERR9000001")
    log_in(page)

    page.goto(f"{REQUESTS}{request.pk}/change/")
    outcome = field(page, "outcomes")
    expect(outcome).to_contain_text("failed")
    expect(outcome).to_contain_text("read_qc exit code 3: <adapter> file missing")
    jobs = page.locator("table.emgapi-jobs tr").filter(has=page.locator("td"))
    expect(jobs).to_have_count(3)
    expect(jobs.filter(has_text="OUT_OF_MEMORY")).to_have_count(1)

    expect(page.locator("input[name=_save]")).to_have_count(0)  # nothing on a saved request is edited by hand
    expect(page.locator(".object-tools button", has_text="Cancel")).to_have_count(0)  # finished already
    page.get_by_role("button", name="Retry failed runs").click()
    expect(page).to_have_url(re.compile(rf"{REQUESTS}{request.pk}/change/$"))
    expect(page.locator(".messagelist .success")).to_have_text(
        f"Request {request.pk}: retrying the failed steps of ERR9000001."
    )
    expect(field(page, "status")).to_have_text("Pending")
    expect(page.get_by_role("button", name="Retry failed runs")).to_have_count(0)
    expect(field(page, "dispatch")).to_contain_text("pending")  # a new trigger: a new flow run
    request.refresh_from_db()
    assert request.plans.count() == 2


def test_a_failing_trigger_is_redispatched_from_the_admin(page: Page, superuser):
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001", requester=superuser)
    trigger = Trigger.objects.get()
    Trigger.objects.update(
        attempts=2, last_error="ConnectError: refused", next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    log_in(page)

    page.goto(f"{REQUESTS}{request.pk}/change/")
    expect(field(page, "dispatch")).to_contain_text("failing (2 attempts); last error: ConnectError: refused")
    page.get_by_role("button", name="Re-dispatch").click()
    expect(page.locator(".messagelist .success")).to_contain_text(
        f"Request {request.pk}: trigger {trigger.pk} (failing (2 attempts)"
    )
    trigger.refresh_from_db()
    assert trigger.next_attempt_at is None

    # The outbox's own list says the same and has its "dispatch now".
    page.goto("/admin/workflows/trigger/?dispatch=failing")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list .field-short_error")).to_have_text("ConnectError: refused")


@pytest.fixture(autouse=True)
def _no_wakeups(monkeypatch):
    # pg_notify reaches only this test database's listeners, of which there are none; skip the round trip anyway.
    monkeypatch.setattr("workflows.outbox.wakeup.wake_service_loops", lambda: None)
