"""The scheduled re-sync on the real stack: the study-sync deployment is registered with its schedule, and a run of
it as the schedule makes one (no study) re-syncs the studies due and logs what changed in ENA."""

from datetime import timedelta
from typing import cast

import pytest
from django.utils import timezone
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from analyses.models import Run, Study, StudyChange
from tests.slurm_support import poll_until
from workflows.outbox import deployments

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


@pytest.mark.flows_env(ENA_RESYNC_CRON="0 2 * * *", TIME_ZONE="Europe/London")
def test_the_study_sync_deployment_runs_on_its_schedule_over_the_studies_due(flows_server, gated_stub):
    stub, _ = gated_stub
    name = deployments.in_this_environment(deployments.STUDY_SYNC)

    def scheduled() -> list:
        # Polled: an earlier run's record of the deployment (no schedule) may be read before this server's is.
        with get_client(sync_client=True) as client:
            return client.read_deployment_by_name(name).schedules

    [schedule] = poll_until(scheduled, timeout=60, what="the study sync's deployment to carry its schedule")
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == (
        "0 2 * * *",
        "Europe/London",
        True,
    )

    # A study synced two days ago, whose run ERR9000002 ENA has since withdrawn.
    study = Study.objects.create(
        ena_accession="PRJEB00001", last_synced_with_ena=timezone.now() - timedelta(days=2)
    )
    Run.objects.create(accession="ERR9000002", study=study)
    stub.data.runs["PRJEB00001"] = [
        run for run in stub.data.runs["PRJEB00001"] if run["run_accession"] != "ERR9000002"
    ]

    # What the schedule starts: a run with the schedule's parameters (the environment, no study).
    # Called outside an event loop, run_deployment returns the flow run (its type says "or a coroutine").
    run = cast(FlowRun, run_deployment(name, parameters=dict(schedule.parameters), timeout=120))
    assert run.state and run.state.is_completed(), run.state
    study.refresh_from_db()
    assert study.last_synced_with_ena and study.last_synced_with_ena > timezone.now() - timedelta(minutes=5)
    assert set(StudyChange.objects.filter(study=study).values_list("kind", "run_accession")) >= {
        ("run_withdrawn", "ERR9000002")
    }
