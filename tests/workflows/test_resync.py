"""Studies kept in sync with ENA: the change log of a sync (a run added, one withdrawn, checksums and metadata
changed, between two syncs of ENA's stub), a watched study's new runs as an incremental request, and the
scheduled re-sync over the studies due."""

import copy
from datetime import timedelta

import pytest
from django.utils import timezone
from prefect.client.schemas.schedules import CronSchedule

from analyses.models import AssemblyAnalysisRequest, Run, Study, StudyChange
from tests.conftest import token_client
from tests.workflows.pipeline_inputs import check_run_usable
from workflows.ena.client import EnaClient
from workflows.ena.resync import due_studies, resync_due_studies, sync_and_follow
from workflows.models import Plan
from workflows.orchestration.reconciler import reconcile_once
from workflows.orchestration.recovery import carry_out_cancellation
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS
from workflows.pipelines.registry import runner_deployments

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ena(demo_stub):
    server, base_url = demo_stub
    with EnaClient(base_url, retries=0) as client:
        yield server.data, client


def synced_study(client: EnaClient, accession: str = "PRJEB00001") -> Study:
    study = Study.objects.create(ena_accession=accession)
    sync_and_follow(study, client, check_run=check_run_usable)
    study.refresh_from_db()
    return study


def change_enas_copy(data) -> None:
    """Between two syncs, ENA: a run added (ERR9000003), one withdrawn (ERR9000001), the other's checksums
    changed (ERR9000002), and the study's title edited."""
    runs = data.runs["PRJEB00001"]
    first, second = runs
    added = copy.deepcopy(second)
    added["run_accession"] = "ERR9000003"
    second["fastq_md5"] = ";".join(["0" * 32, "1" * 32])
    runs[:] = [second, added]
    data.study_for({"PRJEB00001"})["study_title"] = "Demo metagenome, resequenced"
    assert first["run_accession"] == "ERR9000001"


def kinds(study: Study) -> set[tuple[str, str]]:
    return set(StudyChange.objects.filter(study=study).values_list("kind", "run_accession"))


def test_a_sync_logs_what_changed_and_deletes_nothing(ena, user_client, admin_client):
    data, client = ena
    study = synced_study(client)
    assert not StudyChange.objects.exists()  # a first sync: everything is new, nothing is logged

    change_enas_copy(data)
    result = sync_and_follow(study, client, check_run=check_run_usable)
    assert result.added == ["ERR9000003"] and result.changes == 4
    assert kinds(study) == {
        ("run_added", "ERR9000003"),
        ("run_withdrawn", "ERR9000001"),
        ("checksums_changed", "ERR9000002"),
        ("metadata_changed", ""),
    }
    checksums = StudyChange.objects.get(kind="checksums_changed").detail["fastq_md5"]
    assert checksums["after"] == ["0" * 32, "1" * 32] and checksums["before"] != checksums["after"]
    title = StudyChange.objects.get(kind="metadata_changed").detail["title"]
    assert title["after"] == "Demo metagenome, resequenced"
    withdrawn = Run.objects.get(accession="ERR9000001")  # kept, marked, out of any new plan
    assert withdrawn.withdrawn_at is not None and withdrawn.pk not in result.usable_run_ids

    logged = user_client.get(f"/api/studies/{study.accession}/changes/").json()
    assert {(c["kind"], c["run_accession"]) for c in logged["results"]} == kinds(study)
    assert (
        user_client.get(f"/api/studies/{study.accession}/")
        .json()["changes"]
        .endswith(f"/api/studies/{study.accession}/changes/")
    )

    page = admin_client.get(f"/admin/analyses/study/{study.pk}/change/")
    assert [label for _, label in page.context["steering_actions"]] == ["Sync now"]
    assert b"Checksums changed" in page.content and b"Run withdrawn or suppressed" in page.content

    # ENA lists it again: restored, and an unchanged sync logs nothing more.
    data.runs["PRJEB00001"].append(
        copy.deepcopy(data.runs["PRJEB00001"][0]) | {"run_accession": "ERR9000001"}
    )
    sync_and_follow(study, client, check_run=check_run_usable)
    assert ("run_restored", "ERR9000001") in kinds(study)
    assert Run.objects.get(accession="ERR9000001").withdrawn_at is None
    count = StudyChange.objects.count()
    sync_and_follow(study, client, check_run=check_run_usable)
    assert StudyChange.objects.count() == count


@pytest.mark.slurm
def test_a_watched_studys_new_runs_start_a_request_of_them_only(ena, user, user_client, pipeline_world, jobs):
    data, client = ena
    study = synced_study(client)
    answer = user_client.post(f"/api/studies/{study.accession}/watch/")
    assert answer.status_code == 200 and answer.json()["watched_by"] == "alice"
    sync_and_follow(study, client, check_run=check_run_usable)
    assert not AssemblyAnalysisRequest.objects.exists()  # nothing new, nothing started

    change_enas_copy(data)
    sync_and_follow(study, client, check_run=check_run_usable)
    request = AssemblyAnalysisRequest.objects.get()
    assert (request.requester, request.forced, request.request_metadata["runs"]) == (
        user,
        True,
        ["ERR9000003"],
    )
    assert user_client.get(f"/api/assembly-analysis-requests/{request.pk}/").json()["status"] == "pending"

    # Before its first pass, ENA lists one more: its planning's sync finds it, and no other request would take it.
    data.runs["PRJEB00001"].append(
        copy.deepcopy(data.runs["PRJEB00001"][-1]) | {"run_accession": "ERR9000004"}
    )
    try:  # pipeline_world's ENA is this stub, changed as above
        reconcile_once(request.pk, pipeline=STUDY_ANALYSIS, jobs=jobs)
        planned = set(Plan.objects.get(request=request).steps.values_list("run_accession", flat=True))
        assert planned == {
            "ERR9000003",
            "ERR9000004",
        }  # ERR9000002 was analysed before, ERR9000001 is withdrawn
    finally:
        carry_out_cancellation(request.pk)


def test_a_study_has_one_watcher(ena, user_client, other_client, reader):
    _, client = ena
    study = synced_study(client)
    assert user_client.post(f"/api/studies/{study.accession}/watch/").status_code == 200
    taken = other_client.post(f"/api/studies/{study.accession}/watch/")
    assert taken.status_code == 409 and taken.json()["watched_by"] == "alice"
    assert other_client.delete(f"/api/studies/{study.accession}/watch/").status_code == 409
    answer = user_client.delete(f"/api/studies/{study.accession}/watch/")
    assert answer.status_code == 200 and answer.json()["watched_by"] is None
    assert other_client.post(f"/api/studies/{study.accession}/watch/").status_code == 200
    # Watching starts requests in one's name: it needs the permission to create them.
    assert token_client(reader).post(f"/api/studies/{study.accession}/watch/").status_code == 403


def test_the_scheduled_resync_takes_the_due_studies_oldest_first_paced(ena, settings):
    _, client = ena
    settings.ENA_RESYNC_MIN_AGE_HOURS = 20
    settings.ENA_RESYNC_PAUSE_SECONDS = 0.25
    fresh = synced_study(client, "PRJEB00002")
    old = synced_study(client, "PRJEB00001")
    gone = Study.objects.create(ena_accession="PRJEB99999")  # ENA has no such study
    day_ago = timezone.now() - timedelta(days=1)
    Study.objects.filter(pk=old.pk).update(last_synced_with_ena=day_ago)
    Study.objects.filter(pk=gone.pk).update(last_synced_with_ena=day_ago - timedelta(days=1))
    assert due_studies(10) == [gone.pk, old.pk]

    pauses: list[float] = []
    report = resync_due_studies(client, check_run=check_run_usable, sleep=pauses.append)
    assert report.synced == ["PRJEB00001"] and list(report.failed) == ["PRJEB99999"]
    assert pauses == [0.25]  # between two studies, not before the first
    old.refresh_from_db()
    assert old.last_synced_with_ena and old.last_synced_with_ena > day_ago
    fresh_synced = fresh.last_synced_with_ena
    fresh.refresh_from_db()
    assert fresh.last_synced_with_ena == fresh_synced


def test_the_study_sync_deployment_is_scheduled_in_the_sites_time_zone(settings):
    settings.ENA_RESYNC_CRON = "0 2 * * *"
    settings.TIME_ZONE = "Europe/London"
    [study_sync] = [d for d in runner_deployments() if d.name.startswith("study_sync_deployment@")]
    [schedule] = study_sync.schedules or []
    assert isinstance(schedule.schedule, CronSchedule)
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Europe/London")
    assert set(schedule.parameters or {}) == {"environment"}  # no study: the studies due
    others = [d for d in runner_deployments() if not d.name.startswith("study_sync_deployment@")]
    assert all(not d.schedules for d in others)
    settings.ENA_RESYNC_CRON = ""
    assert not [d for d in runner_deployments() if d.schedules]
