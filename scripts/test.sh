#!/usr/bin/env bash
# `make test`: install what is missing, bring up the services the suite needs, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
export DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/emgapi}

scripts/bootstrap.sh
scripts/ensure_postgres.sh
# Slurm and the Prefect server come up side by side (each mostly waits for its daemons).
scripts/slurm.sh up &
slurm_pid=$!
scripts/prefect_server.sh up
wait "$slurm_pid"

.venv/bin/python manage.py makemigrations --check --dry-run >/dev/null || {
  echo "Migrations are out of date: run 'python manage.py makemigrations'" >&2; exit 1; }
# The suite's own Prefect home (results, memo store, profiles): a `make run` of this clone keeps var/prefect. The
# server it talks to is shared; its environment (the test database's name) keeps its flow runs apart.
export PREFECT_HOME=$PWD/var/prefect-test
if [[ $# -gt 0 ]]; then
  scripts/lint.sh
  exec .venv/bin/pytest "$@"
fi
# Two workers: each has its own test database, hence its own environment on the shared Prefect server and its own
# Slurm job keys. Three were slower (689 s against 636 s for this part): the cores are busy throughout, mostly
# starting flow processes and serve_flows. The tests that stop slurmctld or restart PostgreSQL (marker `disruptive`) run
# afterwards, alone. --durations: where the time went, for whoever makes it shorter next.
# The linters (mypy over the project is the slow one: 26 s of CPU on a fresh clone) run beside the disruptive
# tests, which run alone and leave a core idle; beside the first part they competed with it for both cores.
status=0
.venv/bin/pytest -n 2 --dist worksteal -m "not disruptive" --durations=15 || status=$?
mkdir -p var
scripts/lint.sh >var/lint.log 2>&1 &
lint_pid=$!
.venv/bin/pytest -m disruptive --durations=8 || status=$?
lint_status=0
wait "$lint_pid" || lint_status=$?
cat var/lint.log
if [[ $lint_status -ne 0 ]]; then
  echo "make test: lint failed (above)" >&2
  status=$lint_status
fi
exit "$status"
