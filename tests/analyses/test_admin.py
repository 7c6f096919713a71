import pytest
from django.urls import reverse

from analyses.models import Analysis, Assembly, AssemblyAnalysisRequest, Biome, Run, Sample, Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def populated():
    biome = Biome.objects.create(lineage="root:Environmental:Aquatic")
    study = Study.objects.create(ena_accession="PRJEB30001", title="t", biome=biome)
    sample = Sample.objects.create(accession="SAMEA3000001", study=study)
    run = Run.objects.create(accession="ERR3000001", study=study, sample=sample)
    assembly = Assembly.objects.create(study=study)
    assembly.runs.add(run)
    Analysis.objects.create(study=study, assembly=assembly)
    AssemblyAnalysisRequest.objects.create(study_accession="PRJEB30001", study=study)


@pytest.mark.parametrize(
    "model", ["biome", "study", "sample", "run", "assembly", "analysis", "assemblyanalysisrequest"]
)
def test_admin_changelist_and_add_pages_load(admin_client_logged_in, populated, model):
    for view in ("changelist", "add"):
        response = admin_client_logged_in.get(reverse(f"admin:analyses_{model}_{view}"))
        assert response.status_code == 200, (model, view)
    response = admin_client_logged_in.get(reverse(f"admin:analyses_{model}_changelist"), {"q": "PRJEB30001"})
    assert response.status_code == 200


def test_admin_change_pages_load(admin_client_logged_in, populated):
    for obj in [
        Study.objects.get(),
        Run.objects.get(),
        Analysis.objects.get(),
        AssemblyAnalysisRequest.objects.get(),
    ]:
        url = reverse(f"admin:analyses_{obj._meta.model_name}_change", args=[obj.pk])
        assert admin_client_logged_in.get(url).status_code == 200


def test_admin_creates_study_through_validation(admin_client_logged_in):
    url = reverse("admin:analyses_study_add")
    bad = admin_client_logged_in.post(
        url, {"ena_accession": "PRJ1", "title": "x", "runs-TOTAL_FORMS": 0, "runs-INITIAL_FORMS": 0}
    )
    assert bad.status_code == 200
    assert "ena_accession" in bad.context["adminform"].form.errors
    assert not Study.objects.exists()
    good = admin_client_logged_in.post(
        url, {"ena_accession": "PRJEB30002", "title": "x", "runs-TOTAL_FORMS": 0, "runs-INITIAL_FORMS": 0}
    )
    assert good.status_code == 302
    assert Study.objects.get().accession.startswith("MGYS")


def test_admin_creates_request_through_validation(admin_client_logged_in, superuser):
    url = reverse("admin:analyses_assemblyanalysisrequest_add")
    bad = admin_client_logged_in.post(url, {"study_accession": "not-an-accession"})
    assert bad.status_code == 200
    assert "study_accession" in bad.context["adminform"].form.errors
    good = admin_client_logged_in.post(url, {"study_accession": "PRJEB30003"})
    assert good.status_code == 302
    request = AssemblyAnalysisRequest.objects.get()
    assert request.requester == superuser and request.status == "pending"


def test_admin_cancel_action_asks_first_and_takes_a_reason(admin_client_logged_in, populated):
    request = AssemblyAnalysisRequest.objects.get()
    changelist = reverse("admin:analyses_assemblyanalysisrequest_changelist")
    chosen = {"action": "cancel_requests", "_selected_action": [request.pk]}

    asked = admin_client_logged_in.post(changelist, chosen)
    assert asked.status_code == 200 and b"Cancel these requests?" in asked.content
    assert f"Request {request.pk} for {request.study_accession}".encode() in asked.content
    request.refresh_from_db()
    assert request.status == "pending"  # nothing happens at one click

    too_long = admin_client_logged_in.post(changelist, {**chosen, "confirmed": "yes", "reason": "x" * 501})
    assert too_long.status_code == 200 and b"at most 500 are kept" in too_long.content
    request.refresh_from_db()
    assert request.status == "pending"

    response = admin_client_logged_in.post(
        changelist, {**chosen, "confirmed": "yes", "reason": "wrong study"}
    )
    assert response.status_code == 302
    request.refresh_from_db()
    assert (request.status, request.status_detail) == ("cancelled", "wrong study")


def test_adding_a_second_active_request_in_the_admin_says_why(admin_client_logged_in, superuser):
    url = reverse("admin:analyses_assemblyanalysisrequest_add")
    assert admin_client_logged_in.post(url, {"study_accession": "PRJEB30002"}).status_code == 302
    again = admin_client_logged_in.post(url, {"study_accession": "PRJEB30002"})
    assert again.status_code == 200
    first = AssemblyAnalysisRequest.objects.get()
    assert f"Request {first.pk} for this study is already pending" in again.content.decode()
    assert first.requester == superuser


def test_a_study_page_counts_its_analyses_by_pipeline_with_links(admin_client_logged_in, populated):
    study = Study.objects.first()
    assert study is not None
    run = study.runs.first()
    Analysis.objects.create(study=study, run=run, pipeline="assembly_analysis")
    page = admin_client_logged_in.get(
        reverse("admin:analyses_study_change", args=[study.pk])
    ).content.decode()
    listed = reverse("admin:analyses_analysis_changelist")
    assert f'<a href="{listed}?study__id__exact={study.pk}&amp;pipeline=assembly">assembly: 1</a>' in page
    assert (
        f'<a href="{listed}?study__id__exact={study.pk}&amp;pipeline=assembly_analysis">assembly_analysis: 1</a>'
        in page
    )


def test_a_requests_page_is_titled_view_and_says_what_its_status_detail_is(admin_client_logged_in, populated):
    request = AssemblyAnalysisRequest.objects.get()
    page = admin_client_logged_in.get(
        reverse("admin:analyses_assemblyanalysisrequest_change", args=[request.pk])
    )
    content = page.content.decode()
    assert "View assembly analysis request</h1>" in content and "Change assembly" not in content
    assert "Why the request failed" not in content
    # "View site" leads to the API, not to a 404 at the root.
    assert 'href="/api/"' in content


def test_a_synced_studys_ena_fields_are_read_only(admin_client_logged_in, populated):
    study = Study.objects.get()
    url = reverse("admin:analyses_study_change", args=[study.pk])
    assert 'name="title"' in admin_client_logged_in.get(url).content.decode()  # never synced: a curator's

    Study.objects.filter(pk=study.pk).update(last_synced_with_ena="2026-01-01T00:00:00Z")
    content = admin_client_logged_in.get(url).content.decode()
    for name in ("title", "description", "ena_accession", "secondary_ena_accession"):
        assert f'name="{name}"' not in content, name


def test_a_request_links_its_analyses_and_a_study_its_requests(admin_client_logged_in, populated):
    request = AssemblyAnalysisRequest.objects.get()
    Analysis.objects.filter(study=request.study).update(request=request)
    page = admin_client_logged_in.get(
        reverse("admin:analyses_assemblyanalysisrequest_change", args=[request.pk])
    )
    url = reverse("admin:analyses_analysis_changelist") + f"?request__id__exact={request.pk}"
    assert f'<a href="{url}">1 analysis(es)</a>' in page.content.decode()
    assert admin_client_logged_in.get(url).context["cl"].result_count == 1

    page = admin_client_logged_in.get(reverse("admin:analyses_study_change", args=[request.study_id]))
    url = (
        reverse("admin:analyses_assemblyanalysisrequest_changelist") + f"?study__id__exact={request.study_id}"
    )
    assert f'<a href="{url}">1 request(s)</a>' in page.content.decode()
    assert admin_client_logged_in.get(url).context["cl"].result_count == 1
