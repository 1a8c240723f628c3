#!/usr/bin/env bash
# A virtual environment that runs the command line: the package and its dependencies, with the CPU build of
# torch where there is no NVIDIA GPU (about 1 GB instead of about 6 GB with the CUDA build and its libraries).
#   bash scripts/setup_venv.sh [VENV]        # VENV: default .venv
# TORCH_CPU_INDEX names the index of CPU builds (default: PyTorch's own); set it empty where pip already
# finds a CPU build of the pinned torch (a local wheel folder).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${1:-.venv}"
cpu_index="${TORCH_CPU_INDEX-https://download.pytorch.org/whl/cpu}"
torch_pin="$(grep -E '^torch==' requirements-dev.txt)"  # the version the tests run on

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "no NVIDIA GPU: installing the CPU build of $torch_pin" >&2
    "$venv/bin/python" -m pip install -q "$torch_pin" ${cpu_index:+--extra-index-url "$cpu_index"}
fi
"$venv/bin/python" -m pip install -q -e .
echo "$venv: $(du -sh "$venv" | cut -f1)" >&2
