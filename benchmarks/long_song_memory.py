"""Peak host memory of a long input, relative to the input's size, with tiny models.

A long generated song (default 60 minutes) is written as FLAC, then decoded and separated by
`Separator.separate_file`, the prediction code path, with the tiny random models of
`fixtures/tiny_weights.py`: the buffers that grow with the track (decoded mix, padded copies, stem
accumulators, written stems) are the same as with the real models, and the model activations, which do
not grow with the track, are small. For each mode it prints the idle RSS, the peak RSS (kernel
high-water mark and a sampling thread), the float32 size of the input, and the ratio
(peak - idle) / input size against the target of (number of output stems + 3), per stage as well.

It ends with the GPU-memory bound: what is on the device at once does not depend on the track length.

    python -m benchmarks.long_song_memory [--minutes 60] [--modes vocals_instrumental all_4]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.full_size_weights import HTDEMUCS_SEGMENT_SECONDS
from benchmarks.pipeline import GIB, MemoryMonitor, StageRecorder, load_average
from fixtures.songs import write_long_song
from fixtures.tiny_weights import write_tiny_weights
from separation.pipeline import Separator
from separation.samplerate import SAMPLE_RATE
from separation.settings import SeparationSettings

BYTES_PER_SAMPLE = 4  # float32
TARGET_EXTRA_BUFFERS = 3  # target: peak growth <= (output stems + 3) x the float32 input


def measure_mode(separator: Separator, song: Path, mode: str, seconds: float, out_dir: Path) -> None:
    """Separate `song` in `mode` and print the memory figures in units of the input's float32 size."""
    settings = SeparationSettings(stems=mode, max_duration_seconds=seconds + 60)
    input_bytes = round(seconds * SAMPLE_RATE) * 2 * BYTES_PER_SAMPLE
    stems = separator.plan.stems_of(mode)
    target = len(stems) + TARGET_EXTRA_BUFFERS
    gc.collect()
    start = time.perf_counter()
    with MemoryMonitor() as monitor:
        recorder = StageRecorder(monitor)
        separator.separate_file(song, out_dir, settings, recorder)
    wall = time.perf_counter() - start
    ratio = (monitor.peak_bytes - monitor.idle_bytes) / input_bytes
    print(f"\n[{mode}] {len(stems)} output stems ({', '.join(stems)}), {wall:.0f} s wall, {load_average()}")
    print(f"  input float32 size: {input_bytes / GIB:.3f} GiB")
    print(f"  idle RSS:           {monitor.idle_bytes / GIB:.3f} GiB")
    print(f"  peak RSS:           {monitor.peak_bytes / GIB:.3f} GiB")
    verdict = "met" if ratio <= target else "NOT met"
    print(f"  (peak - idle) / input = {ratio:.2f}   target <= {target} (stems + 3): {verdict}")
    source = "kernel high-water mark per stage + sampling" if monitor.kernel_mark else "sampling only"
    print(f"  per stage, (stage peak - idle) / input ({source}):")
    for stage, peak in monitor.stage_peaks.items():
        seconds_text = f", {recorder.stage_seconds[stage]:.1f} s" if stage in recorder.stage_seconds else ""
        print(f"    {stage:20s} {(peak - monitor.idle_bytes) / input_bytes:6.2f}{seconds_text}")


def print_gpu_bound(settings: SeparationSettings, roformer_batch: int, demucs_batch: int) -> None:
    """What sits on the device at once, for the real geometries: no term grows with the track."""
    batch_bytes = roformer_batch * 2 * settings.chunk_samples * BYTES_PER_SAMPLE
    segment_samples = int(SAMPLE_RATE * HTDEMUCS_SEGMENT_SECONDS)
    segment_bytes = 2 * segment_samples * BYTES_PER_SAMPLE
    print("\nGPU memory does not grow with the track (code reading of the two loops):")
    print(
        "  BS-RoFormer: separate_chunked moves one batch "
        f"[{roformer_batch}, 2, {settings.chunk_samples}] = {batch_bytes / 2**20:.1f} MiB to the device "
        "at a time and brings its estimates back to the host while the next batch runs; the padded track, "
        "the output accumulator and the window sums stay on the host. Activations depend on batch size "
        "and chunk length only."
    )
    print(
        "  Demucs: DemucsSeparator cuts, normalises and pads each segment on the host and moves "
        f"[{demucs_batch}, 2, {segment_samples}] ({demucs_batch * segment_bytes / 2**20:.1f} "
        "MiB) to the device per forward pass; only the wanted sources of each output "
        f"(at most [{demucs_batch}, 6, 2, {segment_samples}]) come back, into a one-segment "
        "cross-fade buffer and the output on the host."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="length of the generated song (default 60)"
    )
    parser.add_argument("--modes", nargs="+", default=["vocals_instrumental", "all_4"])
    parser.add_argument("--format", default="flac", choices=["flac", "wav"], help="input file format")
    args = parser.parse_args()
    seconds = args.minutes * 60

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {load_average()}")
    with tempfile.TemporaryDirectory(prefix="long-song-memory-") as folder:
        scratch = Path(folder)
        weights_dir = write_tiny_weights(scratch / "weights")
        start = time.perf_counter()
        song = write_long_song(scratch / f"song.{args.format}", seconds)
        print(
            f"input: {args.minutes:g} min generated song, {song.stat().st_size / 1e6:.0f} MB {args.format}, "
            f"written in {time.perf_counter() - start:.0f} s"
        )
        separator = Separator(weights_dir, "cpu")
        for mode in args.modes:
            measure_mode(separator, song, mode, seconds, scratch / "out")
        print_gpu_bound(
            SeparationSettings(),
            separator.model("bs_roformer_vocals").inference["batch_size"],
            separator.model("htdemucs_ft").spec.batch_size,
        )


if __name__ == "__main__":
    main()
