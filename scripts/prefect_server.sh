#!/usr/bin/env bash
# A Prefect server on PostgreSQL (its SQLite locks under a worker): `up` starts it if nothing answers at
# $PREFECT_API_URL, `down` stops the one this script started, `status` says whether it answers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
state="$PREFECT_HOME"
pidfile="$state/server.pid"
logfile="$state/server.log"
mkdir -p "$state"

healthy() {
  .venv/bin/python - "$PREFECT_API_URL" <<'PYEOF'
import sys, httpx
try:
    ok = httpx.get(sys.argv[1].rstrip("/") + "/health", timeout=2).status_code == 200
except httpx.HTTPError:
    ok = False
sys.exit(0 if ok else 1)
PYEOF
}

alive() {
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  [ -r "/proc/$pid/stat" ] && ! awk '{exit ($3 == "Z") ? 0 : 1}' "/proc/$pid/stat"
}

ensure_database() {
  .venv/bin/python - "$PREFECT_SERVER_DATABASE_CONNECTION_URL" <<'PYEOF'
import sys
from urllib.parse import urlsplit, urlunsplit
import psycopg
from psycopg import sql
url = urlsplit(sys.argv[1])
if not url.scheme.startswith("postgresql"):
    sys.exit(0)
name = url.path.lstrip("/")
admin = urlunsplit(("postgresql", url.netloc, "/postgres", "", ""))
with psycopg.connect(admin, autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
PYEOF
}

case "${1:-}" in
  up)
    if healthy; then echo "Prefect server: answering at $PREFECT_API_URL"; exit 0; fi
    ensure_database
    echo "Prefect server: starting (log $logfile)"
    setsid .venv/bin/prefect server start --host 127.0.0.1 --port "$PREFECT_SERVER_API_PORT" \
      >"$logfile" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    for _ in $(seq 1 240); do
      healthy && { echo "Prefect server: answering at $PREFECT_API_URL"; exit 0; }
      alive || { echo "Prefect server exited; last lines of $logfile:" >&2; tail -n 30 "$logfile" >&2; exit 1; }
      sleep 0.5
    done
    echo "Prefect server did not answer within 120 s; see $logfile" >&2
    exit 1
    ;;
  down)
    if alive; then
      pid=$(cat "$pidfile")
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
      for _ in $(seq 1 40); do alive || break; sleep 0.25; done
      alive && kill -KILL -- "-$pid" 2>/dev/null || true
      echo "Prefect server: stopped"
    else
      echo "Prefect server: not started by this script"
    fi
    rm -f "$pidfile"
    ;;
  status)
    if healthy; then echo "Prefect server: answering at $PREFECT_API_URL"; else echo "Prefect server: down"; exit 1; fi
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
