"""Benchmark the per-stem presence and loudness figures (separation/audio/stem_figures.py) of one request.

A generated song stands in for the mix and for every stem (the cost does not depend on the content): the
mix is measured with `measure_mix`, each stem with a `StemMeter` fed in blocks of `--block-frames`, as the
writer hands them over, then reported. Prints wall and CPU seconds for the whole request, per stem, per
minute of stem audio, and the share of it spent in the K-weighting filter (scipy's sosfilt, the floor of
this design), then the total as a fraction of the GPU time of a request: 42 s (README's T4 estimate for
the BS-RoFormer vocals stage of a 5-minute song) and 55 s (the low end of the estimate for a whole all_6
request, whose seven stems are measured here). Target: under 1 %.

    .venv/bin/python benchmarks/stem_report_cost.py [--minutes 5] [--stems 7] [--block-frames 1000000]
        [--smoke]

`--smoke`: 1.2 s, two stems.
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.smoke import add_smoke_option, parse_with_smoke  # noqa: E402
from fixtures.songs import SAMPLE_RATE, song_block  # noqa: E402
from separation.audio.stem_figures import StemMeter, k_weighting_sos, measure_mix  # noqa: E402

GPU_SECONDS = {"T4 vocals stage, 5-min song": 42.0, "T4 all_6 request, low end": 55.0}


def make_song(minutes: float) -> np.ndarray:
    """float32 [2, samples] at SAMPLE_RATE, generated 30 s at a time."""
    samples = round(minutes * 60 * SAMPLE_RATE)
    step = 30 * SAMPLE_RATE
    return np.concatenate(
        [song_block(start, min(step, samples - start)).T for start in range(0, samples, step)], axis=1
    )


def timed(stage: Callable[[], object]) -> tuple[float, float, object]:
    """Run `stage` once; return (wall seconds, CPU seconds of this process, its result)."""
    started, started_cpu = time.perf_counter(), time.process_time()
    result = stage()
    return time.perf_counter() - started, time.process_time() - started_cpu, result


def measure_stem(song: np.ndarray, mix_lufs: float, block_frames: int) -> None:
    """Feed `song` [2, samples] to a StemMeter in blocks of `block_frames` and take its figures."""
    meter = StemMeter(SAMPLE_RATE)
    for start in range(0, song.shape[1], block_frames):
        meter.add(song[:, start : start + block_frames])
    meter.figures(mix_lufs)


def filter_only(song: np.ndarray, block_frames: int) -> None:
    """Only the K-weighting of `song` [2, samples], block by block with the state carried."""
    sos, state = k_weighting_sos(SAMPLE_RATE), np.zeros((2, 2, 2))
    for start in range(0, song.shape[1], block_frames):
        _, state = scipy.signal.sosfilt(sos, song[:, start : start + block_frames], axis=1, zi=state)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the generated song")
    parser.add_argument("--stems", type=int, default=7, help="stems measured besides the mix")
    parser.add_argument("--block-frames", type=int, default=1_000_000, help="frames per block fed")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"minutes": 0.02, "stems": 2})

    song = make_song(args.minutes)  # [2, samples]
    minutes = song.shape[1] / SAMPLE_RATE / 60
    mix_wall, mix_cpu, mix_lufs = timed(lambda: measure_mix(song, SAMPLE_RATE))
    stem_wall, stem_cpu = 0.0, 0.0
    for _ in range(args.stems):
        wall, cpu, _ = timed(lambda: measure_stem(song, mix_lufs, args.block_frames))
        stem_wall, stem_cpu = stem_wall + wall, stem_cpu + cpu
    _, filter_cpu, _ = timed(lambda: filter_only(song, args.block_frames))
    wall, cpu = mix_wall + stem_wall, mix_cpu + stem_cpu
    signals = args.stems + 1

    print(
        f"{minutes:.2f} min at {SAMPLE_RATE} Hz, {args.stems} stems + the mix, blocks of {args.block_frames}"
    )
    print(f"mix:                  wall {mix_wall:.3f} s, CPU {mix_cpu:.3f} s")
    print(f"stems (all):          wall {stem_wall:.3f} s, CPU {stem_cpu:.3f} s")
    per_stem = stem_wall / args.stems
    print(f"per stem:             wall {per_stem:.3f} s, {per_stem / minutes:.4f} s per minute of audio")
    print(f"request:              wall {wall:.3f} s, CPU {cpu:.3f} s")
    print(f"per sample:           {cpu / (signals * song.size) * 1e9:.2f} ns CPU (one channel's sample)")
    print(f"K-weighting filter:   {filter_cpu * signals / cpu:.0%} of the CPU time")
    for label, gpu_seconds in GPU_SECONDS.items():
        print(f"vs {gpu_seconds:.0f} s ({label}): wall {wall / gpu_seconds:.2%}, CPU {cpu / gpu_seconds:.2%}")


if __name__ == "__main__":
    main()
