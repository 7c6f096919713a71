"""Restarts that change the world, and two flow servers on one database."""

import pytest
from django.db.models import Count

from analyses.models import Analysis
from tests.slurm_support import poll_until
from tests.stack import (
    FlowsServer,
    assert_one_slurm_job_per_key,
    linger_past_a_held_job,
    post_request,
    request_status,
    running_job,
    suspended,
)
from workflows.models import ClusterJob, PlanStep, PollerLease

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


@linger_past_a_held_job
def test_a_redeploy_with_new_settings_and_ena_reattaches_to_the_original_jobs(
    flows_server, gated_stub, user_client, tmp_path
):
    stub, _ = gated_stub
    stub.fastq_gate.clear()
    request = post_request(user_client, "PRJEB00002")
    held = poll_until(lambda: running_job(request), timeout=120, what="the fetch job to run")
    poll_until(lambda: suspended(request), timeout=60, what="the flow run to suspend")
    planned = dict(PlanStep.objects.filter(plan__request=request).values_list("key", "spec"))

    flows_server.kill()
    # The redeploy: other resources for every step, another jobs root, and ENA unreachable.
    flows_server.env.update(
        PIPELINE_CONFIG='{"assembly": {"fetch_reads": {"memory_mb": 700}, "read_qc": {"cpus": 2}, "assembly": {"memory_mb": 1500}}}',
        JOBS_ROOT=str(tmp_path / "jobs-after-redeploy"),
        ENA_PORTAL_API_URL="http://127.0.0.1:9/ena/portal/api",
    )
    flows_server.start()
    stub.fastq_gate.set()

    poll_until(
        lambda: request_status(request) in {"completed", "failed"}, timeout=400, what="the request to finish"
    )
    assert request.status == "completed", request.status_detail
    jobs = ClusterJob.objects.filter(request=request)
    # One run: the assembly (4 steps), the analysis chained after it (3), and a datamove ending each.
    assert jobs.count() == 9 and not jobs.filter(attempt__gt=1).exists()
    assert all(job.key in planned and job.spec == planned[job.key] for job in jobs)
    assert jobs.get(pk=held.pk).state == "COMPLETED"
    assert_one_slurm_job_per_key(request)
    assert not (tmp_path / "jobs-after-redeploy").exists()


# Lingering: what is proven is that two runners share the requests and do each once; every request resuming after
# every step (4 flow processes a run on two cores) tested nothing more and cost two minutes.
@pytest.mark.linger
def test_two_flow_servers_on_one_database_do_every_request_once(
    flows_server, flows_server_env, user_client, tmp_path
):
    second = FlowsServer(flows_server_env, tmp_path / "second")
    (tmp_path / "second").mkdir()
    second.start()
    try:
        requests = [
            post_request(user_client, accession, force=True)
            for accession in ("PRJEB00001", "PRJEB00002", "PRJEB00001")
        ]
        poll_until(
            lambda: all(request_status(r) in {"completed", "failed"} for r in requests),
            timeout=400,
            what="every request to finish",
        )
    finally:
        stopped = second.stop()
    # A SIGTERM (make down's) ends it at once and quietly: no "coroutine 'Runner.astop' was never awaited".
    assert stopped == 0 and "never awaited" not in second.log(), second.log()[-2000:]
    for request in requests:
        assert request.status == "completed", request.status_detail
        assert_one_slurm_job_per_key(request)
    # Five runs, each analysed by the assembly and by the analysis chained after it.
    assert Analysis.objects.filter(request__in=requests).count() == 10
    assert not Analysis.objects.values("request", "run", "pipeline").annotate(n=Count("pk")).filter(n__gt=1)
    assert PollerLease.objects.count() == 1  # one poller lease for the service, whoever held it
