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

host=$("$PY" -c 'import sys; from urllib.parse import urlsplit; print(urlsplit(sys.argv[1]).hostname or "")' "$DATABASE_URL")
case "$host" in 127.0.0.1|localhost|"") ;; *) echo "PostgreSQL at $host is not reachable; start it or fix DATABASE_URL" >&2; exit 1;; esac

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "PostgreSQL: installing from Debian's packages"
  [ "$(id -u)" = 0 ] || { echo "need root to install PostgreSQL" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "PostgreSQL: starting cluster $version/main"
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start || true
for _ in $(seq 1 60); do
  su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
# A packaged install asks for a password on TCP; give the postgres role the one our default URL carries.
su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
can_connect "$DATABASE_URL" || { echo "PostgreSQL still not reachable at $DATABASE_URL" >&2; exit 1; }
echo "PostgreSQL: reachable"
ensure_database "$DATABASE_URL"
