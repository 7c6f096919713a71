#!/usr/bin/env bash
# Command of the `web` service: bring the schema up to date, collect the static files whitenoise serves, serve.
set -euo pipefail
python manage.py migrate --noinput
python manage.py collectstatic --noinput --verbosity 0
exec gunicorn emgapi.wsgi --bind 0.0.0.0:8000 --workers "${GUNICORN_WORKERS:-3}" --access-logfile -
