"""The whole path: REST API -> outbox -> real Prefect server -> served deployment -> real Slurm -> database."""

from tests.stack import flows_server, flows_server_env, gated_stub  # noqa: F401  (the stack's fixtures)
