"""The one registry of deployment names, and the environment that scopes them on a shared Prefect server.

Signals and recovery record the *base* name (`ASSEMBLY_ANALYSIS`) on a trigger; the dispatcher and `serve_flows`
both resolve it to this environment's deployment (`...@<environment>`). Two services sharing one Prefect server
(staging and production, or `make run` and `make test`) therefore serve and create flow runs of different
deployments, and a served runner only ever picks up its own environment's runs.
"""

import re
from pathlib import PurePath

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.db import connections

from analyses.errors import Conflict

ASSEMBLY_ANALYSIS_FLOW = "Assemble and analyse a study"
ASSEMBLY_ANALYSIS_DEPLOYMENT = "assembly_analysis_request_deployment"
STUDY_SYNC_FLOW = "Sync a study with ENA"
STUDY_SYNC_DEPLOYMENT = "study_sync_deployment"

# Prefect refuses "/", "%", "&", "<" and ">" in names; keep to what reads well in a URL and a log line.
_ENVIRONMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class WrongEnvironment(Conflict):
    """A flow run meant for another environment reached this one: it must not touch this database."""

    code = "wrong_environment"


def full_name(flow_name: str, deployment_name: str) -> str:
    return f"{flow_name}/{deployment_name}"


ASSEMBLY_ANALYSIS = full_name(ASSEMBLY_ANALYSIS_FLOW, ASSEMBLY_ANALYSIS_DEPLOYMENT)
STUDY_SYNC = full_name(STUDY_SYNC_FLOW, STUDY_SYNC_DEPLOYMENT)


def environment() -> str:
    """`EMGAPI_ENVIRONMENT`, or else the name of the database this process is connected to.

    The database is the default because it is exactly what must not cross: a flow run executed against another
    environment's database is the failure this prevents. It is read from the connection settings, not the
    settings module, so under pytest both the test process and the `serve_flows` it starts (given the test
    database's URL) name the test database. A SQLite database's name is a file path: its stem names it.
    """
    name = settings.EMGAPI_ENVIRONMENT or _database_name()
    if not _ENVIRONMENT_NAME.match(name):
        raise ValueError(
            f"EMGAPI_ENVIRONMENT {name!r} is not a valid environment name "
            "(letters, digits, '_', '.', '-'; at most 63; set EMGAPI_ENVIRONMENT explicitly)"
        )
    return name


def _database_name() -> str:
    name = str(connections["default"].settings_dict["NAME"])
    return PurePath(name).stem if "/" in name else name


@register(Tags.compatibility)
def check_environment(**kwargs: object) -> list[CheckMessage]:
    """At start-up, not inside the first POST: an environment name Prefect would refuse stops the service."""
    try:
        environment()
    except ValueError as exc:
        return [
            Error(
                str(exc), hint="Set EMGAPI_ENVIRONMENT to a name such as 'production'.", id="workflows.E001"
            )
        ]
    return []


def served_deployment_name(deployment_name: str) -> str:
    """The deployment name `serve_flows` registers for this environment."""
    return f"{deployment_name}@{environment()}"


def in_this_environment(name: str) -> str:
    """`Flow/deployment` as recorded on a trigger -> this environment's `Flow/deployment@environment`."""
    flow_name, _, deployment_name = name.partition("/")
    return full_name(flow_name, served_deployment_name(deployment_name))


def work_pool_name() -> str:
    """The process work pool of this environment's deployments when Prefect workers run them."""
    return f"emgapi-{environment()}"


def environment_tag() -> str:
    return f"env:{environment()}"


def refuse_other_environment(flow_run_environment: str | None) -> None:
    """First thing in every flow: a run created for another environment fails before reading any row."""
    ours = environment()
    if flow_run_environment is not None and flow_run_environment != ours:
        raise WrongEnvironment(
            f"This flow run belongs to environment {flow_run_environment!r}, but this process serves {ours!r}: "
            "refusing to run it against this database."
        )
