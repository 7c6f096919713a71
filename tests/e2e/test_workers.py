"""Prefect workers instead of serve_flows: the same deployments on a process work pool, run by two
`prefect worker start` beside `manage.py service_loop`, as a site with a worker next to its cluster runs them."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.db.models import Count

from analyses.models import Analysis, AssemblyAnalysisRequest
from tests.slurm_support import ROOT, poll_until
from tests.stack import (
    FlowsServer,
    assert_one_slurm_job_per_key,
    delete_leftover_runs,
    post_request,
    request_status,
)
from workflows.models import ClusterJob
from workflows.outbox import deployments

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

PREFECT = str(Path(sys.executable).parent / "prefect")


# Lingering: a pass follows the demo's short steps rather than suspending after each (four flow processes a request
# on two cores). What is proven is that the workers share the requests and that a killed one loses nothing.
@pytest.mark.linger
def test_two_workers_and_a_kill_9_of_one_do_every_request_once(
    flows_server_env, slurm_cluster, prefect_server, user_client, tmp_path
):
    env = {**flows_server_env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "2"}
    delete_leftover_runs()
    subprocess.run(
        [sys.executable, "manage.py", "deploy_to_work_pool"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    pool = deployments.work_pool_name()
    loop = FlowsServer(
        env, tmp_path, command=[sys.executable, "manage.py", "service_loop"], name="service_loop"
    )
    workers = [
        FlowsServer(
            env,
            tmp_path,
            command=[PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--name", name],
            name=name,
        )
        for name in (f"{pool}-a", f"{pool}-b")
    ]
    processes = [loop, *workers]
    try:
        for process in processes:
            process.start()
        requests = [
            post_request(user_client, accession, force=True)
            for accession in ("PRJEB00001", "PRJEB00002", "PRJEB00001")
        ]

        # A crash of a worker's host while it runs passes: it and its flow-run processes die at once. Whichever
        # worker it is: on a loaded machine one worker may take every run before the other polls.
        def busy_worker() -> FlowsServer | None:
            if not ClusterJob.objects.filter(request__in=requests).exists():
                return None
            return next((worker for worker in workers if worker.flow_processes()), None)

        busy = poll_until(
            busy_worker,
            timeout=180,
            what="a worker to run a flow process that has submitted jobs",
        )
        busy.kill()
        poll_until(
            lambda: all(request_status(r) in {"completed", "failed"} for r in requests),
            timeout=400,
            what="every request to finish on the other worker",
        )
    finally:
        for process in processes:
            process.stop()
        delete_leftover_runs()
    for request in requests:
        assert request.status == "completed", request.status_detail
        assert_one_slurm_job_per_key(request)
    # Five runs, each analysed by the assembly and by the analysis chained after it.
    assert Analysis.objects.filter(request__in=requests).count() == 10
    assert not Analysis.objects.values("request", "run", "pipeline").annotate(n=Count("pk")).filter(n__gt=1)
    assert (
        AssemblyAnalysisRequest.objects.filter(pk__in=[r.pk for r in requests], status="completed").count()
        == 3
    )
