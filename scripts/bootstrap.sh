#!/usr/bin/env bash
# Install what the project needs on a Debian machine: system packages (the pipeline's tools, and Debian's chromium
# for the browser tests: Playwright's own browser download needs the internet) and the Python venv,
# exactly as uv.lock says (`uv sync --frozen`). Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# uv itself, pinned, in a venv of its own (.tools): the project venv holds only what uv.lock lists.
UV_VERSION=0.13.8
TOOLS=${TOOLS:-.tools}
# The demo's profile-HMM library (assembly_analysis's `hmm_library`; a site points it to Pfam, PIPELINE_CONFIG).
HMMER_EXAMPLES=/usr/share/doc/hmmer/examples
DEMO_HMM_LIBRARY=/usr/local/share/emgapi/hmm/demo-profiles.hmm

need_apt=()
for pair in python3:python3 curl:curl fastp:fastp megahit:megahit seqkit:seqkit md5sum:coreutils chromium:chromium \
  prodigal:prodigal hmmsearch:hmmer barrnap:barrnap cutadapt:cutadapt vsearch:vsearch; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
[ -d "$HMMER_EXAMPLES" ] || need_apt+=(hmmer-examples)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

bash scripts/demo_hmm_library.sh "$DEMO_HMM_LIBRARY"

if [ "$("$TOOLS/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "bootstrap: installing uv $UV_VERSION into $TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ uv.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages into $VENV (uv.lock)"
  # The machine's python3; never a download (there may be no internet but the package registries).
  UV_PROJECT_ENVIRONMENT=$VENV UV_PYTHON_DOWNLOADS=never \
    "$TOOLS/bin/uv" sync --frozen --extra dev --python "$(command -v python3)" --quiet
  touch "$stamp"
fi
