#!/usr/bin/env bash
# `make lint`: the checks CI runs, with the linters pinned in uv.lock (a new release must not turn CI red).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

.tools/bin/uv lock --check --quiet || { echo "uv.lock does not match pyproject.toml: run '.tools/bin/uv lock'" >&2; exit 1; }
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy emgapi analyses workflows prefect_utils manage.py tests scripts bench
.venv/bin/shellcheck scripts/*.sh docker/*.sh demo/bin/* .ci/run
