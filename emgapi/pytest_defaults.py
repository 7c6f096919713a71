"""Defaults for a plain `pytest` in a fresh shell, so the README's commands work without sourcing scripts/env.sh.

Loaded through the `pytest11` entry point, before pytest-django imports the settings (a conftest.py would be
too late). Only unset variables are filled, with what scripts/env.sh would give; production never runs pytest.
"""

import os
import socket

os.environ.setdefault("SECRET_KEY", f"dev-and-test-only-secret-key-{socket.gethostname()}")
# The suite needs PostgreSQL (advisory locks, LISTEN/NOTIFY); SQLite, the settings' fallback, would fail obscurely.
os.environ.setdefault("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/emgapi")
os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:4200/api")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The suite's flow servers register no re-sync schedule: each test database's deployment would leave scheduled runs
# on the shared Prefect server (tests/workflows/test_resync.py checks the schedule the deployment is given).
os.environ.setdefault("ENA_RESYNC_CRON", "")
