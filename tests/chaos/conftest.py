from tests.e2e.conftest import flows_server, flows_server_env, gated_stub  # noqa: F401  (the e2e stack)
