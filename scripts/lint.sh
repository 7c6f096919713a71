#!/usr/bin/env bash
# `make lint`: the checks CI runs, with the linters pinned in uv.lock (a new release must not turn CI red).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

.tools/bin/uv lock --check --quiet || { echo "uv.lock does not match pyproject.toml: run '.tools/bin/uv lock'" >&2; exit 1; }
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# prefect_utils/ knows nothing of Django and is fully typed; workflows/ is on its way (docs/design.md, "Left").
.venv/bin/mypy prefect_utils
.venv/bin/shellcheck scripts/*.sh docker/*.sh demo/bin/* .ci/run
