from tests.stack import flows_server, flows_server_env, gated_stub  # noqa: F401  (the stack's fixtures)
