"""Freezing a large plan leaves the planner knowing its steps (issue 19: the job pages of a 20,000-step request)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analyses.models import AssemblyAnalysisRequest
from workflows.models import PlanStep
from workflows.orchestration import plans, reconciler
from workflows.pipelines.analysis.pipeline import STUDY_ANALYSIS

pytestmark = pytest.mark.django_db(transaction=True)


def planner_rows() -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [PlanStep._meta.db_table])
        return cursor.fetchone()[0]


def test_a_large_plan_is_analysed_as_it_is_frozen(pipeline_world, monkeypatch):
    # The demo study's plan stands for a large one: the threshold is lowered, not the plan raised to 1,000 steps.
    monkeypatch.setattr(plans, "ANALYZE_AFTER_STEPS", 1)
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    plan = plans.freeze_plan(request, STUDY_ANALYSIS)
    steps = PlanStep.objects.filter(plan=plan).count()
    assert steps > 1
    # Never analysed, a table says -1 (PostgreSQL 14+); a small one analysed says exactly how many rows it holds.
    assert planner_rows() == steps


def test_a_pass_reads_the_job_specs_of_the_steps_it_submits_only(pipeline_world):
    # At 20,000 steps, decoding every step's spec, inputs and policy each pass was most of the pass (scenario a of
    # bench/scale.py), though a pass submits a handful of steps.
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB00001")
    plan = plans.freeze_plan(request, STUDY_ANALYSIS)
    steps = reconciler.plan_steps(plan)
    with CaptureQueriesContext(connection) as queries:
        runs = reconciler._evaluate(steps, {}, {"request_id": request.pk})
    assert len(queries) == 1
    submitted = {s.key: s for run in runs for s in run.to_submit}
    assert len(submitted) == 2  # the first step of each of the two runs
    loaded = [step for step in steps if "spec" not in step.get_deferred_fields()]
    assert sorted(step.key for step in loaded) == sorted(submitted)
    frozen = dict(PlanStep.objects.filter(plan=plan).values_list("key", "spec"))
    assert all(submission.spec == frozen[key] for key, submission in submitted.items())
