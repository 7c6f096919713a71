"""Every deployment's test cases (workflows/pipelines/*/test-cases.yaml), together, on the real stack."""

import pytest
from prefect.client.orchestration import get_client

from analyses.models import AssemblyAnalysisRequest
from tests.stack import assert_one_slurm_job_per_key, flow_run_logs, flow_run_of
from workflows.operations import case_runner
from workflows.operations import cases as pipeline_cases
from workflows.outbox import deployments
from workflows.pipelines.registry import FLOWS

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.linger]


def test_every_case_of_every_deployment_passes(flows_server) -> None:
    cases = pipeline_cases.all_cases()
    assert {case.deployment for case in cases} == set(FLOWS)
    outcomes = case_runner.run_cases(cases, poll_seconds=1, say=print)
    table = pipeline_cases.format_table(outcomes)
    print(table)
    assert all(outcome.passed for outcome in outcomes), "\n" + table

    requests = AssemblyAnalysisRequest.objects.all()
    assert requests.count() == sum(case.deployment == deployments.ASSEMBLY_ANALYSIS for case in cases)
    for request in requests.exclude(status="failed"):  # a failed request (an unknown study) never had a job
        assert_one_slurm_job_per_key(request)
    # Each ran on this environment's deployment, and the project's own log lines reached its flow run's log in
    # the Prefect UI, each naming its request.
    happy = requests.get(study_accession="PRJEB00001")
    flow_run = flow_run_of(happy)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(flow_run.deployment_id)
        flow = client.read_flow(flow_run.flow_id)
    assert f"{flow.name}/{deployment.name}" == deployments.in_this_environment(deployments.ASSEMBLY_ANALYSIS)
    assert flow_run.parameters["environment"] == deployments.environment()
    assert deployments.environment_tag() in flow_run.tags
    ingested = [
        log
        for log in flow_run_logs(happy)
        if log.name == "workflows.orchestration.reconciler" and "ingested" in log.message
    ]
    assert len(ingested) == 4  # two runs, each by the assembly and by the analysis chained after it
