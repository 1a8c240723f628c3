#!/usr/bin/env bash
# The one benchmark script for a lent GPU machine (written for one H100; about 4-6 minutes of wall time).
#
#   bash benchmarks/gpu_suite.sh            # from anywhere; run in a copy of the repository
#
# It needs a `python3` with CUDA torch. Python packages the machine lacks travel as wheels in
# benchmarks/wheels/ (see benchmarks/README.md) and are installed into /tmp/bench-site, nowhere else.
# Then: full-size random weights into /tmp (~1 GB), cold start on CUDA, and the 300 s song through the
# prediction code path in every stems mode with the MSST reference comparison. Everything printed is
# also written to $OUT/gpu_suite.log when $OUT is set (else /tmp/gpu_suite.log).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WEIGHTS=${WEIGHTS:-/tmp/bs-roformer-cog-full-size-weights}
SECONDS_OF_AUDIO=${SECONDS_OF_AUDIO:-300}
export PYTHONUNBUFFERED=1
exec > >(tee "${OUT:-/tmp}/gpu_suite.log") 2>&1

step() { printf '\n=== %s (%s s into the suite)\n' "$1" "$SECONDS"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
if compgen -G "benchmarks/wheels/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/bench-site benchmarks/wheels/*.whl
    export PYTHONPATH=/tmp/bench-site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PYTHON" - <<'EOF'
import importlib.util, sys
needed = ["torch", "numpy", "yaml", "einops", "tqdm", "soundfile", "soxr", "demucs", "julius",
          "bs_roformer", "beartype", "rotary_embedding_torch"]
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)}; put their wheels in benchmarks/wheels/")
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
EOF
command -v ffmpeg ffprobe || echo "ffmpeg/ffprobe absent: pipeline.py decodes the generated WAV with soundfile"
uptime

step "RMSNorm: the model's way vs one fused kernel"
timeout 60 "$PYTHON" -m benchmarks.rms_norm_gpu || echo "rms_norm_gpu stopped (status $?)"

step "BS-RoFormer forward variants (batch of 8 s chunks): eager at two batch sizes, with a profile"
timeout 240 "$PYTHON" -m benchmarks.roformer_gpu --profile || echo "roformer_gpu stopped (status $?)"

step "full-size random weights into $WEIGHTS"
timeout 180 "$PYTHON" -m benchmarks.full_size_weights "$WEIGHTS"

step "htdemucs_ft: segments per forward pass, 60 s track"
timeout 120 "$PYTHON" -m benchmarks.demucs_speed --weights "$WEIGHTS" --device cuda --seconds 60 \
    --batch-sizes 4 8 16 || echo "demucs_speed stopped (status $?)"

step "cold start on CUDA"
timeout 120 "$PYTHON" -m benchmarks.cold_start --weights "$WEIGHTS" --device cuda

step "pipeline, ${SECONDS_OF_AUDIO} s song, every stems mode, with the MSST reference comparison"
timeout 420 "$PYTHON" -m benchmarks.pipeline --weights "$WEIGHTS" --device cuda \
    --seconds "$SECONDS_OF_AUDIO" --modes vocals_instrumental all_4 all_6 --compare-reference \
    --extra-batch-sizes 8 16

step "done"
