#!/usr/bin/env bash
# `make run`: the whole stack on this machine, in the foreground; Ctrl-C stops what this script started.
#   single-node Slurm, PostgreSQL for Prefect, the Prefect server, the served deployments (+ trigger
#   dispatcher), an ENA stub with demo data (unless ENA_PORTAL_API_URL is set), and Django on 127.0.0.1:8000.
# Django uses the PostgreSQL database emgapi_dev unless DATABASE_URL is set: the reconciler's per-request lock and
# the recovery sweep's view of live passes are PostgreSQL advisory locks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
export DEBUG=${DEBUG:-1}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/emgapi_dev}
export WORKFLOWS_DISPATCH_INTERVAL_SECONDS=${WORKFLOWS_DISPATCH_INTERVAL_SECONDS:-2}
export SLURM_POLL_MIN_SECONDS=${SLURM_POLL_MIN_SECONDS:-1}
export SLURM_POLL_MAX_SECONDS=${SLURM_POLL_MAX_SECONDS:-10}
# The demo's jobs take seconds: a flow pass watches them that long instead of suspending after each step.
export WORKFLOWS_LINGER_SECONDS=${WORKFLOWS_LINGER_SECONDS:-20}
export WORKFLOWS_SWEEP_INTERVAL_SECONDS=${WORKFLOWS_SWEEP_INTERVAL_SECONDS:-5}
export WORKFLOWS_STALL_SECONDS=${WORKFLOWS_STALL_SECONDS:-30}
WEB_PORT=${WEB_PORT:-8000}
ENA_STUB_PORT=${ENA_STUB_PORT:-8081}
mkdir -p var/log "$JOBS_ROOT"

scripts/bootstrap.sh
scripts/ensure_postgres.sh

started=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "Stopping what make run started..."
  for pid in "${started[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  [ -n "${stop_prefect:-}" ] && scripts/prefect_server.sh down || true
  [ -n "${stop_slurm:-}" ] && scripts/slurm.sh down || true
}
trap cleanup INT TERM EXIT

scripts/slurm.sh status >/dev/null 2>&1 || stop_slurm=1
scripts/slurm.sh up
scripts/prefect_server.sh status >/dev/null 2>&1 || stop_prefect=1
scripts/prefect_server.sh up

if [ -z "${ENA_PORTAL_API_URL:-}" ]; then
  rm -f var/ena_stub.port
  setsid .venv/bin/python scripts/ena_stub.py --data-dir demo/ena --port "$ENA_STUB_PORT" \
    --port-file var/ena_stub.port >var/log/ena_stub.log 2>&1 &
  started+=($!)
  for _ in $(seq 1 100); do [ -s var/ena_stub.port ] && break; sleep 0.1; done
  [ -s var/ena_stub.port ] || { echo "ENA stub did not start; see var/log/ena_stub.log" >&2; exit 1; }
  export ENA_PORTAL_API_URL="http://127.0.0.1:$(cat var/ena_stub.port)/ena/portal/api"
  demo_note="ENA stub (demo data, studies PRJEB00001 and PRJEB00002): $ENA_PORTAL_API_URL"
fi

.venv/bin/python manage.py migrate --noinput >/dev/null
.venv/bin/python manage.py collectstatic --noinput >/dev/null
export ADMIN_PASSWORD=${ADMIN_PASSWORD:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')}
ADMIN_TOKEN=$(.venv/bin/python manage.py shell --no-imports -c "
import os
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user, _ = get_user_model().objects.get_or_create(username='admin', defaults={'email': 'admin@example.org'})
user.is_staff = user.is_superuser = True
user.set_password(os.environ['ADMIN_PASSWORD'])
user.save()
print(Token.objects.get_or_create(user=user)[0].key)" | tail -n 1)

setsid .venv/bin/python manage.py serve_flows >var/log/flows.log 2>&1 &
started+=($!)

cat <<EOM

  emgapi is up.
    Admin          http://127.0.0.1:$WEB_PORT/admin/   (user admin, password $ADMIN_PASSWORD)
    API docs       http://127.0.0.1:$WEB_PORT/api/docs/
    API            http://127.0.0.1:$WEB_PORT/api/     (header: Authorization: Token $ADMIN_TOKEN)
    Health         http://127.0.0.1:$WEB_PORT/healthz
    Prefect UI     ${PREFECT_API_URL%/api}/
    ${demo_note:-ENA: $ENA_PORTAL_API_URL}
    Logs           var/log/ (flows.log, ena_stub.log), var/prefect/server.log, Slurm: scripts/slurm.sh status

  Try:  curl -s -X POST http://127.0.0.1:$WEB_PORT/api/assembly-analysis-requests/ \\
          -H 'Authorization: Token $ADMIN_TOKEN' -H 'Content-Type: application/json' \\
          -d '{"study_accession": "PRJEB00001"}'
  Ctrl-C stops everything make run started.

EOM
.venv/bin/python manage.py runserver "127.0.0.1:$WEB_PORT" --noreload
