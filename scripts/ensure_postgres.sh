#!/usr/bin/env bash
# Make sure a PostgreSQL server answers at $DATABASE_URL (default: local 127.0.0.1:5432), installing and starting
# one from Debian's packages when nothing answers. Prints nothing but progress; exits non-zero if it cannot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-"$here/../.venv/bin/python"}
: "${DATABASE_URL:=postgres://postgres:postgres@127.0.0.1:5432/emgapi}"

can_connect() {
  "$PY" - "$1" <<'PYEOF'
import sys, psycopg
from urllib.parse import urlsplit, urlunsplit
url = urlsplit(sys.argv[1])
# Connect to the maintenance database: the target database may not exist yet.
admin = urlunsplit((url.scheme.replace("postgresql", "postgres"), url.netloc, "/postgres", url.query, ""))
try:
    psycopg.connect(admin, connect_timeout=3).close()
except Exception as exc:
    print(f"  not reachable: {exc}".splitlines()[0], file=sys.stderr)
    sys.exit(1)
PYEOF
}

ensure_database() {
  "$PY" - "$1" <<'PYEOF'
import sys, psycopg
from psycopg import sql
from urllib.parse import urlsplit, urlunsplit
url = urlsplit(sys.argv[1])
name = url.path.lstrip("/")
admin = urlunsplit((url.scheme.replace("postgresql", "postgres"), url.netloc, "/postgres", url.query, ""))
with psycopg.connect(admin, autocommit=True) as conn:
    if name and not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        print(f"PostgreSQL: created database {name}")
PYEOF
}

if can_connect "$DATABASE_URL"; then
  echo "PostgreSQL: reachable"
  ensure_database "$DATABASE_URL"
  exit 0
fi

advise() {
  cat >&2 <<EOM
PostgreSQL is not reachable at $DATABASE_URL.
Point DATABASE_URL at a server and role that can create databases, for example
  export DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/emgapi
(the password of an existing role is never changed by this script).
EOM
  exit 1
}

host=$("$PY" -c 'import sys; from urllib.parse import urlsplit; print(urlsplit(sys.argv[1]).hostname or "")' "$DATABASE_URL")
case "$host" in 127.0.0.1|localhost|"") ;; *) advise;; esac

installed_now=
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "PostgreSQL: installing from Debian's packages"
  [ "$(id -u)" = 0 ] || { echo "need root to install PostgreSQL" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  installed_now=1
fi
version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
echo "PostgreSQL: starting cluster $version/main"
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start || true
for _ in $(seq 1 60); do
  su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
# A packaged install asks for a password on TCP. Only a cluster installed just now, whose postgres role has no
# password yet, gets the one our default URL carries: an existing role's password is someone's, never ours.
if [ -n "$installed_now" ] && [ "$(su postgres -c "psql -qAtc \"SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'postgres'\"")" = t ]; then
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
fi
can_connect "$DATABASE_URL" || advise
echo "PostgreSQL: reachable"
ensure_database "$DATABASE_URL"
