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
# demo/bin first: its fault injector stalls one demo run's first assembly (a test case of a TIMEOUT; see
# demo/bin/megahit), and passes every other call to the real tool.
export PIPELINE_JOB_PATH=${PIPELINE_JOB_PATH:-$PWD/demo/bin:/usr/local/bin:/usr/bin:/bin}
# The demo's assemblies take seconds: a 2-minute limit lets PRJEB00004's stalled first assembly (demo/bin/megahit)
# time out and its escalated attempt (4 minutes) finish within minutes, started from the admin or the API, rather
# than hold the node for the default two hours. A site's own PIPELINE_CONFIG replaces it.
export PIPELINE_CONFIG=${PIPELINE_CONFIG:-'{"assembly": {"assembly": {"time_limit_minutes": 2}}}'}
WEB_PORT=${WEB_PORT:-8000}
ENA_STUB_PORT=${ENA_STUB_PORT:-8081}
SMTP_SINK_PORT=${SMTP_SINK_PORT:-8025}
mkdir -p var/log "$JOBS_ROOT"

# One `make run` per clone: a second one must change nothing (not the live stub's port file, not the password).
# `<>` opens without truncating, so the loser can still read the winner's pid.
exec 7<>var/run.lock
if ! flock -n 7; then
  echo "make run: already running (pid $(cat var/run.lock 2>/dev/null || echo '?')); 'make down' stops it" >&2
  exit 1
fi
echo $$ >var/run.lock
# A shared hold on the machine's services: tests that stop Slurm daemons or restart PostgreSQL take it
# exclusively, so they skip while this stack uses them, and this waits while one of them runs.
mkdir -p "$(dirname "$EMGAPI_SERVICES_LOCK")"
exec 6<>"$EMGAPI_SERVICES_LOCK"
if ! flock -s -n 6; then
  echo "make run: a test that stops the shared daemons is running; waiting for it to finish..."
  flock -s 6
fi

scripts/bootstrap.sh 6>&- 7>&-
scripts/ensure_postgres.sh 6>&- 7>&-

started=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "Stopping what make run started..."
  for pid in "${started[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  [ -n "${stop_prefect:-}" ] && scripts/prefect_server.sh down || true
  [ -n "${stop_slurm:-}" ] && scripts/slurm.sh down || true
  rm -f var/run.pids
}
trap cleanup INT TERM EXIT

scripts/slurm.sh status >/dev/null 2>&1 || stop_slurm=1
scripts/slurm.sh up 6>&- 7>&-
scripts/prefect_server.sh status >/dev/null 2>&1 || stop_prefect=1
scripts/prefect_server.sh up 6>&- 7>&-
: >var/run.pids

if [ -z "${ENA_PORTAL_API_URL:-}" ]; then
  rm -f var/ena_stub.port
  setsid .venv/bin/python scripts/ena_stub.py --data-dir demo/ena --port "$ENA_STUB_PORT" \
    --port-file var/ena_stub.port >var/log/ena_stub.log 2>&1 7>&- &
  started+=($!); echo $! >>var/run.pids
  for _ in $(seq 1 100); do [ -s var/ena_stub.port ] && break; sleep 0.1; done
  [ -s var/ena_stub.port ] || { echo "ENA stub did not start; see var/log/ena_stub.log" >&2; exit 1; }
  ENA_PORTAL_API_URL="http://127.0.0.1:$(cat var/ena_stub.port)/ena/portal/api"
  export ENA_PORTAL_API_URL
  demo_note="ENA stub (demo data, studies PRJEB00001 to PRJEB00008): $ENA_PORTAL_API_URL"
fi

# Notifications are mailed to a local SMTP sink (nothing leaves the machine), unless a site's EMAIL_HOST is set.
if [ -z "${EMAIL_HOST:-}" ]; then
  mkdir -p var/mail
  setsid .venv/bin/python scripts/smtp_sink.py --port "$SMTP_SINK_PORT" --mbox var/mail/inbox.mbox \
    >var/log/smtp_sink.log 2>&1 7>&- &
  started+=($!); echo $! >>var/run.pids
  export EMAIL_HOST=127.0.0.1 EMAIL_PORT=$SMTP_SINK_PORT
  mail_note="Mail           var/mail/inbox.mbox (notifications, via the SMTP sink on 127.0.0.1:$SMTP_SINK_PORT)"
fi
export SITE_URL=${SITE_URL:-http://127.0.0.1:$WEB_PORT}

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

# serve_flows keeps the services hold (fd 6): while it lives, this stack is using Slurm and PostgreSQL.
# EMGAPI_FLOW_RUNNER=worker: the same deployments on a process work pool, run by a Prefect worker, with the service
# loop (dispatcher, poller, sweep) as a process of its own; a site runs more workers on other hosts (README).
if [ "${EMGAPI_FLOW_RUNNER:-serve}" = worker ]; then
  .venv/bin/python manage.py deploy_to_work_pool >var/log/flows.log 2>&1
  pool=$(.venv/bin/python manage.py shell --no-imports -c \
    'from workflows.outbox.deployments import work_pool_name; print(work_pool_name())' | tail -n 1)
  setsid .venv/bin/prefect worker start --pool "$pool" --type process \
    --limit "${WORKFLOWS_MAX_FLOW_PROCESSES:-8}" >>var/log/flows.log 2>&1 7>&- &
  started+=($!); echo $! >>var/run.pids
  setsid .venv/bin/python manage.py service_loop >var/log/service_loop.log 2>&1 7>&- &
  serve_pid=$!
  flows_note="flow runs: Prefect worker on work pool $pool (var/log/flows.log), service loop var/log/service_loop.log"
else
  setsid .venv/bin/python manage.py serve_flows >var/log/flows.log 2>&1 7>&- &
  serve_pid=$!
  flows_note="flow runs: serve_flows (var/log/flows.log); EMGAPI_FLOW_RUNNER=worker runs them by a Prefect worker"
fi
started+=("$serve_pid"); echo "$serve_pid" >>var/run.pids
# "Up" means a POST would run: serve_flows alive and this environment's deployments registered and not paused.
deadline=$((SECONDS + 180))
until .venv/bin/python manage.py wait_for_deployments --timeout 5 >/dev/null 2>&1; do
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    echo "the flow runner exited; last lines of var/log/flows.log:" >&2; tail -n 30 var/log/flows.log >&2; exit 1
  fi
  [ $SECONDS -lt $deadline ] || { echo "the deployments were not registered in 180 s; see var/log/flows.log" >&2; exit 1; }
done

cat <<EOM

  emgapi is up.
    Admin          http://127.0.0.1:$WEB_PORT/admin/   (user admin, password $ADMIN_PASSWORD)
    API docs       http://127.0.0.1:$WEB_PORT/api/docs/
    API            http://127.0.0.1:$WEB_PORT/api/     (header: Authorization: Token $ADMIN_TOKEN)
    Health         http://127.0.0.1:$WEB_PORT/healthz
    Prefect UI     ${PREFECT_API_URL%/api}/
    ${demo_note:-ENA: $ENA_PORTAL_API_URL}
    Logs           var/log/ (flows.log, ena_stub.log), var/prefect/server.log, Slurm: scripts/slurm.sh status
    ${mail_note:-Mail           sent through $EMAIL_HOST:${EMAIL_PORT:-25}}
    Flows          $flows_note

  Try:  curl -s -X POST http://127.0.0.1:$WEB_PORT/api/assembly-analysis-requests/ \\
          -H 'Authorization: Token $ADMIN_TOKEN' -H 'Content-Type: application/json' \\
          -d '{"study_accession": "PRJEB00001"}'
        make test-cases      # every deployment's end-to-end test cases, on this stack (another terminal)
  Ctrl-C (or 'make down' from another terminal) stops everything make run started.

EOM
# In the background and waited for: bash runs the cleanup trap (Ctrl-C, `make down`) only between commands.
.venv/bin/python manage.py runserver "127.0.0.1:$WEB_PORT" --noreload 7>&- &
web_pid=$!
started+=("$web_pid"); echo "$web_pid" >>var/run.pids
wait "$web_pid"
