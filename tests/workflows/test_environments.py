"""One Prefect server, many environments: names, parameters and the refusal of a run meant for another."""

import pytest
from django.db import connection

from analyses.models import AssemblyAnalysisRequest
from workflows.outbox import deployments
from workflows.outbox.deployments import WrongEnvironment


@pytest.mark.django_db
def test_the_environment_defaults_to_the_connected_database(settings):
    settings.EMGAPI_ENVIRONMENT = ""
    # Under pytest that is the test database, which the serve_flows a test starts is given too.
    assert deployments.environment() == connection.settings_dict["NAME"]
    assert deployments.environment().startswith("test_")


def test_an_explicit_environment_scopes_every_name(settings):
    settings.EMGAPI_ENVIRONMENT = "staging"
    assert deployments.served_deployment_name("study_sync_deployment") == "study_sync_deployment@staging"
    assert (
        deployments.in_this_environment(deployments.ASSEMBLY_ANALYSIS)
        == "Assemble and analyse a study/assembly_analysis_request_deployment@staging"
    )
    assert deployments.environment_tag() == "env:staging"


@pytest.mark.parametrize("name", ["prod/eu", "a b", "-leading-dash", "x" * 64, "50%"])
def test_an_environment_name_prefect_would_mangle_is_refused(settings, name):
    settings.EMGAPI_ENVIRONMENT = name
    with pytest.raises(ValueError, match="EMGAPI_ENVIRONMENT"):
        deployments.environment()
    # ... and at start-up, by a system check naming the setting, rather than inside the first POST (a 500).
    [error] = deployments.check_environment()
    assert error.id == "workflows.E001" and "EMGAPI_ENVIRONMENT" in error.msg


@pytest.mark.parametrize(
    ("database", "expected"),
    [("/srv/emgapi/var/db.sqlite3", "db"), ("var/archive.sqlite3", "archive"), ("emgapi", "emgapi")],
)
def test_a_sqlite_file_path_names_its_environment_by_its_stem(settings, monkeypatch, database, expected):
    # DATABASE_URL=sqlite:///some/dir/db.sqlite3 made the default a path, refused inside every POST (a 500).
    settings.EMGAPI_ENVIRONMENT = ""
    monkeypatch.setitem(connection.settings_dict, "NAME", database)
    assert deployments.environment() == expected
    assert deployments.check_environment() == []


@pytest.mark.django_db
def test_a_flow_run_of_another_environment_touches_nothing(settings, django_assert_num_queries):
    from workflows.pipelines.analysis.flow import assemble_and_analyse_study
    from workflows.pipelines.study_sync.flow import sync_study_with_ena

    settings.EMGAPI_ENVIRONMENT = "production"
    request = AssemblyAnalysisRequest.objects.create(study_accession="PRJEB40010")
    with django_assert_num_queries(0):
        with pytest.raises(WrongEnvironment, match=r"'staging'.*'production'"):
            assemble_and_analyse_study.fn(request_id=request.pk, environment="staging")
        with pytest.raises(WrongEnvironment):
            sync_study_with_ena.fn(study_id=1, environment="staging")


def test_a_flow_run_from_before_environments_is_taken_as_ours(settings):
    settings.EMGAPI_ENVIRONMENT = "production"
    deployments.refuse_other_environment(None)
    deployments.refuse_other_environment("production")
