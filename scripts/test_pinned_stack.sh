#!/usr/bin/env bash
# Runs the test suite on the container's pinned stack (requirements.txt: torch==2.7.0 and the
# older numpy/soundfile/soxr) instead of the CI pins of requirements-dev.txt. Not part of CI: the
# first run downloads several GB (torch 2.7.0 from PyPI is the CUDA 12.6 build with its nvidia-*
# wheels; the CPU runs the tests with it).
#
#   bash scripts/test_pinned_stack.sh [pytest args...]     e.g.  -m "not slow"   or   -x tests/test_roformer.py
#
# Environment:
#   PINNED_VENV   the venv to build or reuse (default /tmp/pinned-venv)
#   PYTHON        interpreter for a new venv (default python3.11, as cog.yaml's python_version)
#   PIP_EXTRA_INDEX_URL  pip's own variable: https://download.pytorch.org/whl/cu128 gets the
#                 +cu128 build that Cog's torch rewrite for cuda "12.8" asks for, where that index is reachable
#
# The venv gets requirements.txt as it is, plus the test tools: every line of requirements-dev.txt
# whose package requirements.txt does not pin (cog, coglet, bs-roformer, librosa, pytest, ...), in
# one pip resolve, so a tool that needs a newer runtime package fails the install instead of
# upgrading it; then msst --no-deps as scripts/test.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

venv="${PINNED_VENV:-/tmp/pinned-venv}"
python="${PYTHON:-python3.11}"

ensure_ffmpeg

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip

# requirements-dev.txt less the names requirements.txt pins (names compared as PEP 503 normalises them)
tools="$(mktemp)"
trap 'rm -f "$tools"' EXIT
"$venv/bin/python" - requirements.txt requirements-dev.txt >"$tools" <<'EOF'
import re
import sys


def name(line):
    line = line.split("#", 1)[0].strip()
    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
    return re.sub(r"[-_.]+", "-", m.group(0)).lower() if m else None


runtime = {name(line) for line in open(sys.argv[1])} - {None}
for line in open(sys.argv[2]):
    n = name(line)
    if n and n not in runtime:
        print(line.split("#", 1)[0].strip())
EOF
echo "test tools added to requirements.txt: $(tr '\n' ' ' <"$tools")"

"$venv/bin/python" -m pip install -q -r requirements.txt -r "$tools"
"$venv/bin/python" -m pip install -q --no-deps msst==0.1.0
"$venv/bin/python" -m pip check || true
"$venv/bin/python" - <<'EOF'
import numpy, scipy, soundfile, soxr, torch
print(f"pinned stack: torch {torch.__version__} (CUDA {torch.version.cuda}), numpy {numpy.__version__}, "
      f"scipy {scipy.__version__}, soundfile {soundfile.__version__}, soxr {soxr.__version__}")
EOF

run_pytest "$venv" "$@"
