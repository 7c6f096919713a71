import pytest

from tests.e2e.conftest import flows_server, flows_server_env, gated_stub  # noqa: F401  (the e2e stack)


@pytest.fixture(autouse=True)
def _services_to_ourselves(services_to_ourselves):
    """Every chaos test stops, kills or restarts something another user of this machine may be using."""
