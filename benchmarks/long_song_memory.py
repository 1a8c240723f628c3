"""Peak host memory of long inputs and many stems, with tiny models.

Generated songs of each length (default 2, 10 and 30 minutes) are written as FLAC, then decoded and
separated by `Separator.stems_as_written`, the prediction code path, with the tiny random models of
`fixtures/tiny_weights.py`: the buffers that grow with the track or with the number of stems (decoded mix,
chunk accumulators, spans queued for the writers, Demucs sources, encoder spools) are the same as with the
real models, and the model activations, which do not, are small. Each case runs after its models and heads
are loaded, and prints the peak RSS above that idle RSS (kernel high-water mark and a sampling thread)
against the target (2 GiB), and how it grows with the minutes against the decoded input's own growth.

Cases: vocals_instrumental, all_4, guitar, guitar + 20 extra stems, guitar + 52 (every Mega-53 head), MP3 out
(`MODE+N` as in `benchmarks.pipeline`). `--smoke`: 1.2 and 1.8 s songs, vocals_instrumental and guitar+1.

    python -m benchmarks.long_song_memory [--minutes 2 10 30] [--cases vocals_instrumental guitar+20 ...]
        [--weights TINY_DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.pipeline import GIB, MemoryMonitor, StageRecorder, case_request, load_average
from benchmarks.smoke import add_smoke_option, parse_with_smoke, tiny_weights
from fixtures.songs import write_long_song
from separation.audio.samplerate import SAMPLE_RATE
from separation.pipeline import Separator
from separation.request import Request
from separation.serving import release_free_memory

BYTES_PER_SAMPLE = 4  # float32
TARGET_GIB = 2.0  # peak above the loaded models, in every case
CASES = ("vocals_instrumental", "all_4", "guitar", "guitar+20", "guitar+52")


def load_everything(separator: Separator, request: Request) -> None:
    """Load the models and heads a request uses, so that the idle figure holds them."""
    for name, stems in separator.plan.resolve(request).uses.items():
        model = separator.model(name)
        if hasattr(model, "checkpoint"):
            model.checkpoint.ensure_heads(model.spec.stem_names().index(stem) for stem in stems)


def measure(separator: Separator, song: Path, request: Request, out_dir: Path) -> dict:
    """Separate `song` once; the figures in bytes and seconds."""
    load_everything(separator, request)
    gc.collect()
    release_free_memory()  # as the server does after every prediction: the idle figure holds no garbage
    start = time.perf_counter()
    with MemoryMonitor() as monitor:
        recorder = StageRecorder(monitor)
        for _ in separator.stems_as_written(song, out_dir, request, recorder):
            pass
    return {
        "extra": monitor.peak_bytes - monitor.idle_bytes,
        "idle": monitor.idle_bytes,
        "wall": time.perf_counter() - start,
        "stages": {stage: peak - monitor.idle_bytes for stage, peak in monitor.stage_peaks.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 10.0, 30.0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), help=f"e.g. {', '.join(CASES)}")
    parser.add_argument("--weights", type=Path, help="a tiny weights folder (default: written to a temp dir)")
    add_smoke_option(parser)
    smoke = {"minutes": [0.02, 0.03], "cases": ["vocals_instrumental", "guitar+1"]}
    args = parse_with_smoke(parser, smoke)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {load_average()}")
    results: dict[str, dict[float, dict]] = {case: {} for case in args.cases}
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="long-song-memory-")))
        separator = Separator(stack.enter_context(tiny_weights(args.weights)), "cpu")
        for minutes in args.minutes:
            seconds = minutes * 60
            song = write_long_song(scratch / "song.flac", seconds)
            input_gib = round(seconds * SAMPLE_RATE) * 2 * BYTES_PER_SAMPLE / GIB
            print(f"\n{minutes:g} min song, decoded input {input_gib:.3f} GiB, {load_average()}")
            for case in args.cases:
                request = case_request(separator.plan, case, seconds, output_format="mp3")
                figures = measure(separator, song, request, scratch / "out")
                results[case][minutes] = figures
                stages = ", ".join(f"{stage} {extra / GIB:.2f}" for stage, extra in figures["stages"].items())
                verdict = "met" if figures["extra"] / GIB <= TARGET_GIB else "NOT met"
                print(
                    f"  {case:20s} peak - idle {figures['extra'] / GIB:6.3f} GiB ({verdict}; idle "
                    f"{figures['idle'] / GIB:.2f} GiB), {figures['wall']:.0f} s; per stage: {stages}"
                )
            song.unlink()

    if len(args.minutes) > 1:
        first, last = min(args.minutes), max(args.minutes)
        input_growth = (last - first) * 60 * SAMPLE_RATE * 2 * BYTES_PER_SAMPLE / GIB
        print(f"\ngrowth from {first:g} to {last:g} min (decoded input grows {input_growth:.3f} GiB):")
        for case, by_minutes in results.items():
            growth = (by_minutes[last]["extra"] - by_minutes[first]["extra"]) / GIB
            print(f"  {case:20s} {growth:+.3f} GiB = {growth / input_growth:.2f} x the input's growth")


if __name__ == "__main__":
    main()
