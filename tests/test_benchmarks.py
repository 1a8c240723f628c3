"""Every benchmark in its smoke mode, and the GPU suite's dry run, each as the command a person would type.

A benchmark nobody runs rots: an API changes and the script breaks unseen until a GPU session is wasted on
it. Each smoke run here takes the script's real code path with the tiny models, about a second of audio
and one repetition, and must exit 0 having printed its figures (the figures themselves mean nothing at
that size; none is compared with a value). The scripts the GPU suite runs (pipeline, cold_start,
roformer_gpu, rms_norm_gpu, full_size_weights) run their smoke modes inside `benchmarks/gpu_suite.sh
--dry-run`, checked step by step by the last test, rather than twice.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from separation.weights.manifest import REPO_ROOT

pytestmark = pytest.mark.slow

SUITE = REPO_ROOT / "benchmarks" / "gpu_suite.sh"
TIMEOUT_SECONDS = 600  # a hung script fails the test instead of the whole run; no figure is timed here
NUMBER = r"-?\d+(?:\.\d+)?"

# name: (the command after `python`, whether it takes --weights TINY_DIR, regexes its output must match)
SMOKE_RUNS = {
    "audio_io": (
        ["benchmarks/audio_io.py", "--smoke"],
        False,
        [rf"encode +WAV 24-bit +{NUMBER} +{NUMBER}", rf"decode +MP3 320k +{NUMBER}", r"MP3 320k +MP3 320k"],
    ),
    "encode_memory": (
        ["benchmarks/encode_memory.py", "--smoke"],
        False,
        [
            rf"clipping +streamed +{NUMBER} +{NUMBER}%",
            rf"streamed/whole CPU (?:{NUMBER}|nan); same bytes: \w+",  # nan: a write below os.times' tick
        ],
    ),
    "stem_report_cost": (
        ["benchmarks/stem_report_cost.py", "--smoke"],
        False,
        [rf"request: +wall {NUMBER} s, CPU {NUMBER} s", rf"K-weighting filter: +{NUMBER}%"],
    ),
    "demucs_speed": (
        ["-m", "benchmarks.demucs_speed", "--smoke"],
        True,
        [rf"ratio skip / baseline: +{NUMBER} +{NUMBER}", rf"skip, +2 segments per forward pass: +{NUMBER}"],
    ),
    "long_song_memory": (
        ["-m", "benchmarks.long_song_memory", "--smoke"],
        True,
        [rf"guitar\+1 +peak - idle +{NUMBER} GiB", rf"guitar\+1 +[+-]\d+\.\d+ GiB = {NUMBER} x the input"],
    ),
    "roformer_speed": (
        ["-m", "benchmarks.roformer_speed", "--smoke", "--profile"],
        False,
        [
            rf"ours fp32 +{NUMBER} s +ratio ours/reference {NUMBER}",
            rf"ratio floor .*: {NUMBER}",
            rf"ours bf16 +{NUMBER} s",
            rf"checkpoint load .* {NUMBER} s",
        ],
    ),
    "roformer_heads": (
        ["-m", "benchmarks.roformer_heads", "--smoke"],
        False,
        [rf"trunk \+ 1 head / all 53: RSS {NUMBER}%", rf"Mega-53 trunk \+ 1 head .* ratio {NUMBER}"],
    ),
    "roformer_heads forward memory": (
        ["-m", "benchmarks.roformer_heads", "--smoke", "--forward-memory", "tiny"],
        False,
        [rf"(?m)^ +2 +{NUMBER} +{NUMBER} +{NUMBER}$"],
    ),
    "roformer_heads GPU memory from the shapes": (
        ["-m", "benchmarks.roformer_heads", "--forward-memory", "gpu"],
        False,
        [rf"53 heads: forward +{NUMBER} GiB \+ weights +{NUMBER} GiB = +{NUMBER}% of a T4"],
    ),
    "stream_outputs": (
        ["-m", "benchmarks.stream_outputs", "--smoke"],
        True,
        [rf"all_4 +median ratio {NUMBER}", rf"guitar +median ratio {NUMBER}"],
    ),
    "busy_window": (
        ["-m", "benchmarks.busy_window", "--smoke"],
        True,
        [rf"model \(tiny weights\) +409 answers +\d+/2, BUSY .* {NUMBER} s per prediction", r"empty runner"],
    ),
    "soak": (
        ["-m", "benchmarks.soak", "--smoke"],
        True,
        [
            rf"idle tree RSS {NUMBER} MB",
            rf"(?m)^ +3 +{NUMBER} +{NUMBER} +\+?{NUMBER}",
            r"summary: process-tree",
        ],
    ),
}


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    """`command` from the repository root with this Python first on PATH, its output as text."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **env)
    environment["PATH"] = str(Path(sys.executable).parent) + os.pathsep + environment.get("PATH", "")
    return subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )


def assert_printed(output: str, patterns: list[str], what: str) -> None:
    missing = [pattern for pattern in patterns if not re.search(pattern, output)]
    assert not missing, f"{what} did not print {missing}; its output ends:\n{output[-6000:]}"


@pytest.mark.parametrize("name", SMOKE_RUNS)
def test_benchmark_smoke_run_prints_its_figures(name, tiny_weights_dir):
    arguments, takes_weights, patterns = SMOKE_RUNS[name]
    command = [sys.executable, *arguments] + (["--weights", str(tiny_weights_dir)] if takes_weights else [])
    done = run(command)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-6000:]}"
    assert_printed(done.stdout, patterns, name)


def suite_cases() -> list[str]:
    """The cases the GPU suite's pipeline step runs (its CASES line)."""
    (cases,) = re.findall(r'(?m)^CASES="([^"]+)"$', SUITE.read_text())
    return cases.split()


def test_gpu_suite_dry_run_takes_every_step_on_the_cpu(tmp_path):
    done = run(["bash", str(SUITE), "--dry-run"], PYTHON=sys.executable, OUT=str(tmp_path))
    assert done.returncode == 0, f"the dry run exited {done.returncode}:\n{done.stdout[-8000:]}"
    output = done.stdout
    assert (tmp_path / "gpu_suite.log").read_text() == output  # the log a GPU session brings back
    cases = suite_cases()
    assert {"vocals_instrumental", "all_4", "all_6", "guitar", "guitar_only"} <= set(cases)
    assert any(re.fullmatch(r"guitar\+\d+", case) for case in cases)
    assert_printed(
        output,
        [
            r"skipped in the dry run \(CUDA only\): nvidia-smi",
            # the CUDA test run's selection, collected with --device cuda
            r"skipped in the dry run \(CUDA only\): the test run",
            r"\d+/\d+ tests collected \(\d+ deselected\)",
            # full_size_weights --smoke: every model of the plan has a writer
            *(
                rf"{model} +\d+ module\(s\), +{NUMBER} M parameters"
                for model in ("bs_roformer_vocals", "htdemucs_ft", "htdemucs_6s", "bs_roformer_mega53")
            ),
            # pipeline: every case, its figures, the summary and the reference comparison
            *(rf"(?m)^\[{re.escape(case)}\] stems=" for case in cases),
            *(
                rf"(?m)^{re.escape(case)}: {NUMBER} s of audio in {NUMBER} s: .*CPU time {NUMBER} s"
                for case in cases
            ),
            rf"host RSS: idle {NUMBER} GiB, peak {NUMBER} GiB",
            rf"guitar_only +{NUMBER} s +RTF {NUMBER} +CPU +{NUMBER} s +wall x{NUMBER} +CPU x{NUMBER}",
            rf"throughput ours / reference: {NUMBER}x",
            rf"ours fp32 batch 2 +{NUMBER} s: {NUMBER}x the reference",
            # cold start, the Mega-53 trunk and heads
            rf"PredictionService\(\) construction +{NUMBER} s",
            rf"bs_roformer_mega53 \(lazy, trunk\) +{NUMBER} s",
            rf"head guitar +{NUMBER} s",
            rf"the other 52 heads +{NUMBER} s",
            # roformer_gpu and rms_norm_gpu on the CPU
            rf"ours fp16 autocast, batch 2 +{NUMBER} ms/chunk",
            r"Self CPU time total",
            rf"F\.rms_norm, gains cast to fp16 +{NUMBER} ms",
            r"=== done",
        ],
        "gpu_suite.sh --dry-run",
    )
