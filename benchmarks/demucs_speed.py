"""Demucs time for the `all_4` request with and without the skipped vocals specialist.

In `all_4` the vocals come from BS-RoFormer, so Demucs is asked for drums, bass and other only, and the
model leaves out htdemucs_ft's vocals specialist. This script times, on one random full-size htdemucs_ft
bag (the plan's `htdemucs_ft` entry, loaded as a prediction loads it) and the same random track:

- baseline: all four sources wanted, so all four specialists run (what a full-bag `apply_model` does);
- skip: drums, bass and other wanted, so three specialists run;

both one segment per forward pass, and prints both times (wall clock, and CPU time of this process, which a
busy shared machine disturbs less), their ratios (expected about 0.75) and the largest difference between
the two runs' drums/bass/other (expected 0). With `--batch-sizes`, the skip run is repeated with that many
segments per forward pass and each is compared with one segment at a time (speed-up, largest difference).

The random models have the published htdemucs_ft geometry, from the full-size weights folder
(`benchmarks.full_size_weights`, written there first if missing); a folder with its own stems.yaml (the
tiny one) is used as it is. `--smoke`: tiny models, a 2 s track (two tiny segments), batch size 2.

    python -m benchmarks.demucs_speed [--seconds 30] [--device cpu] [--shifts 1] [--threads N]
        [--batch-sizes 4 8] [--weights DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from pathlib import Path

import torch

from benchmarks.full_size_weights import DEFAULT_DIR
from benchmarks.pipeline import prepare_weights, synchronize
from benchmarks.smoke import add_smoke_option, parse_with_smoke, tiny_weights
from fixtures.requests import run_options
from fixtures.spans import whole_stems
from separation.audio.samplerate import SAMPLE_RATE
from separation.models.base import LoadedModel
from separation.plan import StemPlan

BAG = "htdemucs_ft"
WARMUP_SECONDS = 2


def timed_separation(
    model: LoadedModel, mix: torch.Tensor, wanted: list[str], device: torch.device, batch_size: int = 1
) -> tuple[float, float, dict[str, torch.Tensor]]:
    """Wall seconds and process CPU seconds of one `separate` run (device work included), and its output."""
    synchronize(device)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    out = whole_stems(model.separate(mix, wanted, run_options(batch_size=batch_size)))
    synchronize(device)
    return time.perf_counter() - wall_start, time.process_time() - cpu_start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the random track (default 30)")
    parser.add_argument("--device", default="cpu", help="device the models run on (default cpu)")
    parser.add_argument("--shifts", type=int, default=1, help="Demucs shifts (default 1, as the plan)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[], help="segments per forward pass")
    parser.add_argument("--weights", type=Path, default=DEFAULT_DIR, help=f"default {DEFAULT_DIR}")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"seconds": 2.0, "batch_sizes": [2], "weights": None})
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    with contextlib.ExitStack() as stack:
        if args.smoke:
            weights_dir = stack.enter_context(tiny_weights(args.weights))
        else:
            weights_dir = prepare_weights(args.weights)
        spec = dataclasses.replace(StemPlan.for_weights(weights_dir).models[BAG], shifts=args.shifts)
        model = spec.build(weights_dir, device)
        generator = torch.Generator().manual_seed(0)
        mix = 0.2 * torch.randn(2, int(args.seconds * SAMPLE_RATE), generator=generator)  # [2, samples]
        whole_stems(model.separate(mix[:, : WARMUP_SECONDS * SAMPLE_RATE], ["drums"], run_options()))

        everything, three = list(spec.sources), ["drums", "bass", "other"]
        baseline_wall, baseline_cpu, baseline = timed_separation(model, mix, everything, device)
        skip_wall, skip_cpu, skipped = timed_separation(model, mix, three, device)
        difference = max((baseline[s] - skipped[s]).abs().max().item() for s in three)

        threads = torch.get_num_threads()
        print(f"device {device}, torch threads {threads}, {args.seconds:g} s track, shifts {args.shifts}")
        print("                                           wall s     CPU s")
        print(f"baseline, 4 specialists (all four stems): {baseline_wall:8.2f}  {baseline_cpu:8.2f}")
        print(f"skip, 3 specialists (drums bass other):   {skip_wall:8.2f}  {skip_cpu:8.2f}")
        wall_ratio, cpu_ratio = skip_wall / baseline_wall, skip_cpu / baseline_cpu
        print(f"ratio skip / baseline:                    {wall_ratio:8.3f}  {cpu_ratio:8.3f}")
        print(f"max |difference| of drums/bass/other between the runs: {difference:.3g}")
        for batch_size in args.batch_sizes:
            warmup = mix[:, : WARMUP_SECONDS * SAMPLE_RATE]
            whole_stems(model.separate(warmup, ["drums"], run_options(batch_size=batch_size)))
            wall, cpu, batched = timed_separation(model, mix, three, device, batch_size)
            difference = max((batched[s] - skipped[s]).abs().max().item() for s in three)
            print(
                f"skip, {batch_size:2d} segments per forward pass:  {wall:8.2f}  {cpu:8.2f}   "
                f"speed-up vs one at a time {skip_wall / wall:.2f}x, max |difference| {difference:.2g}"
            )


if __name__ == "__main__":
    main()
