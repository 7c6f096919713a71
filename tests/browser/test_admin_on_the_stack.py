"""The admin in a real browser on the real stack: served deployments, Prefect, Slurm and the ENA stub."""

import re
from collections.abc import Callable
from functools import partial

import pytest
from playwright.sync_api import Page, expect

from analyses.models import AssemblyAnalysisRequest, Notification
from tests.browser.admin_pages import REQUESTS, field, log_in
from tests.slurm_support import poll_until
from tests.stack import flow_run_of, post_request, request_status, suspended
from workflows.models import ClusterJob, RequestProgress

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.linger]


def reload_until(page: Page, check: Callable[[], object], *, timeout: float, what: str) -> object:
    """The admin's pages do not refresh themselves: reload until `check` (which reads the page) is truthy."""

    def reloaded() -> object:
        page.reload()
        return check()

    return poll_until(reloaded, timeout=timeout, interval=1, what=what)


def job_rows(page: Page):
    return page.locator("table.emgapi-jobs tr").filter(has=page.locator("td"))


def add_request(page: Page, accession: str) -> AssemblyAnalysisRequest:
    page.goto(f"{REQUESTS}add/")
    page.fill("#id_study_accession", accession)
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    request = AssemblyAnalysisRequest.objects.get(study_accession=accession)
    page.goto(f"{REQUESTS}{request.pk}/change/")
    return request


def test_a_request_added_in_the_admin_runs_and_its_failed_run_is_retried(
    page: Page, superuser, flows_server, gated_stub, settings
):
    stub, _ = gated_stub
    # ERR9000002's reads are withheld from "ENA" for now: its fetch job fails on Slurm (curl gets a 404).
    withheld = {name: path for name, path in stub.data.fastq_files.items() if name.startswith("ERR9000002")}
    assert withheld
    for name in withheld:
        del stub.data.fastq_files[name]
    log_in(page)

    page.goto("/admin/analyses/study/add/")
    page.fill("#id_ena_accession", "PRJEB00001")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    page.locator(".messagelist a").first.click()
    reload_until(
        page,
        lambda: field(page, "runs").inner_text() == "2 run(s)",
        timeout=120,
        what="the study's sync with ENA to list its runs",
    )

    request = add_request(page, "PRJEB00001")
    link = field(page, "flow_run").get_by_role("link")
    reload_until(page, lambda: link.count(), timeout=60, what="the flow run link")
    request.refresh_from_db()
    expect(link).to_have_attribute(
        "href", f"{settings.PREFECT_UI_URL.rstrip('/')}/runs/flow-run/{request.flow_run_id}"
    )
    expect(field(page, "dispatch")).to_contain_text("dispatched")
    reload_until(
        page,
        lambda: job_rows(page).count() and re.search(r"\d+", job_rows(page).first.inner_text()),
        timeout=120,
        what="the jobs table to fill in",
    )

    reload_until(
        page,
        lambda: field(page, "status").inner_text() in ("Completed", "Failed"),
        timeout=400,
        what="the request to finish",
    )
    outcomes = field(page, "outcomes")
    expect(outcomes.locator("tr", has_text="ERR9000001")).to_contain_text("succeeded")
    expect(outcomes.locator("tr", has_text="ERR9000002")).to_contain_text("failed")
    failed_fetch = job_rows(page).filter(has_text="fetch_reads").filter(has_text="ERR9000002")
    expect(failed_fetch).to_contain_text("FAILED")

    stub.data.fastq_files.update(withheld)
    page.get_by_role("button", name="Retry failed runs").click()
    expect(page.locator(".messagelist .success")).to_have_text(
        f"Request {request.pk}: retrying the failed steps of ERR9000002."
    )
    reload_until(
        page,
        lambda: (
            field(page, "status").inner_text() in ("Completed", "Failed")
            and "failed" not in field(page, "outcomes").inner_text()
        ),
        timeout=400,
        what="the retried run to succeed",
    )
    expect(field(page, "status")).to_have_text("Completed")
    expect(outcomes.locator("tr", has_text="ERR9000002")).to_contain_text("succeeded")
    # Only the failed steps ran again: ERR9000001's jobs are the first ones, once each (the assembly's 4 steps, the
    # analysis chained after it, 3, and the datamove ending each).
    expect(job_rows(page).filter(has_text="ERR9000001")).to_have_count(9)
    expect(job_rows(page).filter(has_text="ERR9000002").filter(has_text="COMPLETED")).to_have_count(9)

    # The curator reaches what the request made: its analyses, then one analysis's figures.
    field(page, "analyses").get_by_role("link").click()
    analyses = page.locator("#result_list tbody tr")
    expect(analyses).to_have_count(4)  # each run by the assembly and by the analysis chained after it
    assembly_of_the_first = analyses.filter(has_text="ERR9000001").filter(
        has=page.locator("td.field-pipeline", has_text=re.compile(r"^assembly$"))
    )
    assembly_of_the_first.locator("th a").click()
    expect(page.locator(".field-summary")).to_contain_text("n50")
    # And from the study, its requests.
    request.refresh_from_db()  # its study was set by its first pass
    page.goto(f"/admin/analyses/study/{request.study_id}/change/")
    field(page, "requests").get_by_role("link").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(1)


def test_a_running_request_is_cancelled_from_the_admin(page: Page, superuser, flows_server, gated_stub):
    stub, _ = gated_stub
    stub.fastq_gate.clear()  # the fetch jobs block in curl: RUNNING on Slurm until the gate opens
    log_in(page)
    request = add_request(page, "PRJEB00002")
    reload_until(
        page,
        lambda: job_rows(page).filter(has_text="RUNNING").count(),
        timeout=120,
        what="a job to run",
    )

    page.get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="Yes, cancel 1 request").click()
    # Back on the request's page.
    expect(page.locator(".messagelist .success")).to_have_text("Cancelled 1 request(s).")
    expect(field(page, "status")).to_have_text("Cancelled")
    reload_until(
        page,
        lambda: (
            job_rows(page).count()
            and job_rows(page).filter(has_text="CANCELLED").count() == job_rows(page).count()
        ),
        timeout=90,
        what="Slurm to confirm every job cancelled",
    )
    request.refresh_from_db()
    assert request.status == "cancelled" and request.cancelled_by == superuser
    assert set(ClusterJob.objects.filter(request=request).values_list("state", flat=True)) == {"CANCELLED"}


@pytest.mark.flows_env(APPROVAL_THRESHOLD_CPU_HOURS="1")
def test_costly_requests_wait_suspended_until_approved_or_rejected_in_the_admin(
    page: Page, superuser, flows_server, user_client
):
    approved = post_request(user_client, "PRJEB00001")
    rejected = post_request(user_client, "PRJEB00002")

    def held(request: AssemblyAnalysisRequest) -> bool:
        return request_status(request) == "awaiting_approval" and suspended(request)

    for request in (approved, rejected):
        # Held before its first job, its flow run suspended: no process waits for the decision.
        poll_until(
            partial(held, request), timeout=120, what=f"request {request.pk} to wait for approval, suspended"
        )
        assert not ClusterJob.objects.filter(request=request).exists()
    log_in(page)

    page.goto(f"{REQUESTS}{rejected.pk}/change/")
    expect(field(page, "status_detail")).to_contain_text("a request may spend unasked")
    # The sweeps since (one a second here) left both suspended: only a decision resumes them.
    assert RequestProgress.objects.filter(request__in=[approved, rejected], resumes__gt=0).count() == 0
    page.get_by_role("button", name="Reject").click()
    expect(page.locator(".emgapi-action-targets")).to_contain_text("estimated")
    page.fill("#id_reason", "Ask for the runs you need, not the study.")
    page.get_by_role("button", name="Yes, reject 1 request").click()
    expect(page.locator(".messagelist .success")).to_have_text("Rejected 1 request(s).")
    expect(field(page, "status")).to_have_text("Rejected")

    page.goto(f"{REQUESTS}{approved.pk}/change/")
    page.get_by_role("button", name="Approve").click()
    page.get_by_role("button", name="Yes, approve 1 request").click()
    expect(page.locator(".messagelist .success")).to_have_text("Approved 1 request(s).")
    reload_until(
        page,
        lambda: field(page, "status").inner_text() in ("Completed", "Failed"),
        timeout=400,
        what="the approved request to run and finish",
    )
    expect(field(page, "status")).to_have_text("Completed")
    expect(field(page, "reviewed_by")).to_have_text("admin")

    # The rejected one's flow run was resumed to end, and says so in the dashboard; it never had a job.
    poll_until(
        lambda: flow_run_of(rejected).state.name == "Rejected",
        timeout=60,
        what="the rejected request's flow run to end",
    )
    assert flow_run_of(rejected).state.type.value == "COMPLETED"
    assert not ClusterJob.objects.filter(request=rejected).exists()
    told = {
        request.pk: list(
            Notification.objects.filter(request=request).order_by("created").values_list("event", flat=True)
        )
        for request in (approved, rejected)
    }
    assert told == {
        approved.pk: ["awaiting_approval", "approved", "completed"],
        rejected.pk: ["awaiting_approval", "rejected"],
    }
