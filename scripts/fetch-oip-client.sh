#!/usr/bin/env bash
# Installs the real Open Inference Protocol client the tests call the entry with: Triton's
# tritonclient[http] (pinned), from PyPI into a virtualenv at tools/venv. Idempotent.
# Usage: scripts/fetch-oip-client.sh [VENV_DIR]   (default: <repo>/tools/venv; `make tools`)
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo_root/tools/venv}"
version=2.73.0
die() { echo "fetch-oip-client: error: $*" >&2; exit 1; }
if [[ -x "$venv/bin/python" ]] \
  && "$venv/bin/python" -c "import importlib.metadata as m, tritonclient.http; assert m.version('tritonclient') == '$version'" 2>/dev/null; then
  echo "fetch-oip-client: $venv has tritonclient $version"
  exit 0
fi
command -v python3 >/dev/null || die "python3 is required"
python3 -m venv "$venv" || die "cannot create a virtualenv at $venv (apt-get install python3-venv)"
"$venv/bin/pip" install --quiet --disable-pip-version-check "tritonclient[http]==$version" \
  || die "pip install tritonclient[http]==$version failed (is the package index reachable?)"
"$venv/bin/python" -c "import tritonclient.http" || die "tritonclient does not import"
echo "fetch-oip-client: installed tritonclient[http] $version into $venv"
