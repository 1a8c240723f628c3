#!/usr/bin/env bash
# The one test command: installs what the tests need on a fresh machine, lints, runs the tests.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ensure_ffmpeg
ensure_node

venv="${VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r requirements-dev.txt
"$venv/bin/python" -m pip install -q --no-deps msst==0.1.0

"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .

run_worker_tests

run_pytest "$PWD/$venv" "$@"
