# Shared defaults for the dev/test scripts; every value can be overridden from the environment.
# shellcheck shell=bash
export SECRET_KEY=${SECRET_KEY:-dev-and-test-only-secret-key-$(hostname)}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_HOME=${PREFECT_HOME:-$PWD/var/prefect}
export PREFECT_SERVER_API_PORT=${PREFECT_SERVER_API_PORT:-4200}
# The server copies its UI here when it starts. The default, inside site-packages, is deleted by a reinstall of
# prefect (uv sync) under a running server, whose UI then answers 500 (API calls are unaffected).
export PREFECT_UI_STATIC_DIRECTORY=${PREFECT_UI_STATIC_DIRECTORY:-$PREFECT_HOME/ui}
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:$PREFECT_SERVER_API_PORT/api}
export PREFECT_SERVER_DATABASE_CONNECTION_URL=${PREFECT_SERVER_DATABASE_CONNECTION_URL:-postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/prefect}
export PREFECT_RUNNER_POLL_FREQUENCY=${PREFECT_RUNNER_POLL_FREQUENCY:-1}
export JOBS_ROOT=${JOBS_ROOT:-$PWD/var/jobs}
export RESULTS_ROOT=${RESULTS_ROOT:-$PWD/var/results}
# Held shared by `make run` while it uses this machine's Slurm and PostgreSQL; tests that stop them take it
# exclusively (tests/faults.py), so they skip rather than break a running stack.
export EMGAPI_SERVICES_LOCK=${EMGAPI_SERVICES_LOCK:-/run/lock/emgapi-services.lock}
