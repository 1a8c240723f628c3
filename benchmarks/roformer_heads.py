"""What loading and running only the needed heads of MVSep Mega-53 costs on this CPU (random weights).

(a) One forward of the same audio (`--seconds`, fp32): Mega-53's trunk and one mask estimator (dim 256,
    hop 512) against the viperx model (dim 512, hop 441, one head); expected about a third.
(b) Loading a full-size float16 checkpoint of random weights (1.37 GB, written once into `--dir` and
    reused; page cache warm) through `RoformerCheckpoint`: trunk + 1 head against all 53 heads, wall
    seconds and the resident-memory growth (VmRSS, split into anonymous memory and mapped file pages),
    each load in a fresh process. Target: trunk + 1 head <= 15 % of the 53-head RSS.

    python -m benchmarks.roformer_heads [--seconds 8] [--repeats 1] [--dir DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import torch

from benchmarks.full_size_weights import DEFAULT_DIR, write_roformer_checkpoint
from fixtures.tiny_roformer import MEGA53_CHECKPOINT, MEGA53_CONFIG, VIPERX_CONFIG
from separation.roformer import BSRoformer
from separation.roformer_checkpoint import RoformerCheckpoint, load_config

GUITAR = 20  # the head the product needs most
MIB = 2**20


def memory_bytes() -> dict[str, int]:
    """This process's resident memory now, in bytes: VmRSS, RssAnon and RssFile of /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                fields[name] = int(value.split()[0]) * 1024  # reported in kB
    return fields


def measure_load(checkpoint_path: Path, heads: list[int] | None) -> tuple[float, dict[str, int]]:
    """Wall seconds of one `RoformerCheckpoint` load, and the resident memory it added (bytes)."""
    before = memory_bytes()
    start = time.perf_counter()
    checkpoint = RoformerCheckpoint(MEGA53_CONFIG, checkpoint_path, "cpu", heads)
    seconds = time.perf_counter() - start
    after = memory_bytes()
    assert checkpoint.loaded_heads == (heads if heads is not None else list(range(53)))
    return seconds, {name: after[name] - before[name] for name in after}


def load_in_fresh_process(checkpoint_path: Path, heads: list[int] | None) -> tuple[float, dict[str, int]]:
    """`measure_load` in a new interpreter, so one load's memory cannot hide in the other's."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_load, (checkpoint_path, heads))


def random_checkpoint(folder: Path) -> Path:
    """The full-size float16 Mega-53 checkpoint of random weights in `folder`, written if absent."""
    path = folder / MEGA53_CHECKPOINT
    if path.is_file():
        print(f"kept    {path}")
        return path
    start = time.perf_counter()
    write_roformer_checkpoint(path, MEGA53_CONFIG, dtype=torch.float16)
    print(f"wrote   {path} ({time.perf_counter() - start:.0f} s)")
    return path


def seconds_per_forward(model: BSRoformer, audio: torch.Tensor, repeats: int, **kwargs) -> float:
    """Best wall time of `repeats` fp32 forwards, after a warm-up on one second."""
    with torch.inference_mode():
        model(audio[..., :44100], **kwargs)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model(audio, **kwargs)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per forward (8 s = viperx chunk)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"checkpoint folder, default {DEFAULT_DIR}"
    )
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    checkpoint_path = random_checkpoint(args.dir)
    print(f"checkpoint {checkpoint_path.stat().st_size / 1e9:.2f} GB, float16")
    checkpoint_path.read_bytes()  # page cache warm
    figures = {
        "trunk + 1 head": load_in_fresh_process(checkpoint_path, [GUITAR]),
        "all 53 heads": load_in_fresh_process(checkpoint_path, None),
    }
    print("(b) load, fresh process each:  seconds   RSS MiB  (anonymous  file pages)")
    for label, (seconds, grown) in figures.items():
        print(
            f"  {label:28s} {seconds:7.2f}  {grown['VmRSS'] / MIB:8.0f}  "
            f"({grown['RssAnon'] / MIB:9.0f}  {grown['RssFile'] / MIB:10.0f})"
        )
    (one_s, one), (all_s, every) = figures.values()
    print(
        f"  trunk + 1 head / all 53: RSS {one['VmRSS'] / every['VmRSS']:.1%} (target <= 15 %), "
        f"time {one_s / all_s:.1%}"
    )

    samples = round(args.seconds * 44100)
    audio = 0.1 * torch.randn(1, 2, samples, generator=torch.Generator().manual_seed(0))
    mega53 = RoformerCheckpoint(MEGA53_CONFIG, checkpoint_path, "cpu", heads=[GUITAR]).model
    mega53_s = seconds_per_forward(mega53, audio, args.repeats, heads=[GUITAR])
    del mega53
    torch.manual_seed(0)
    viperx_s = seconds_per_forward(
        BSRoformer(**load_config(VIPERX_CONFIG)["model"]).eval(), audio, args.repeats
    )
    print(f"(a) one forward of {samples} samples ({args.seconds:g} s), fp32")
    print(f"  viperx (dim 512, hop 441)           {viperx_s:7.2f} s")
    print(f"  Mega-53 trunk + 1 head (256, 512)   {mega53_s:7.2f} s   ratio {mega53_s / viperx_s:.3f}")


if __name__ == "__main__":
    main()
