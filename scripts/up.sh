#!/usr/bin/env bash
# Install natkit into .venv (on a fresh Debian machine, as root) and run the whole stack on
# localhost on its embedded defaults. Extra arguments go to `natkit up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh python3-venv
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e .
exec .venv/bin/natkit up "$@"
