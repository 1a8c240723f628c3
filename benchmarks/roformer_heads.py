"""What loading and running only the needed heads of MVSep Mega-53 costs on this CPU (random weights).

(a) One forward of the same audio (`--seconds`, fp32): Mega-53's trunk and one mask estimator (dim 256,
    hop 512) against the viperx model (dim 512, hop 441, one head); expected about a third.
(b) Loading a full-size float16 checkpoint of random weights (1.37 GB, written once into `--dir` and
    reused; page cache warm) through `RoformerCheckpoint`: trunk + 1 head against all 53 heads, wall
    seconds and the resident-memory growth (VmRSS, split into anonymous memory and mapped file pages),
    each load in a fresh process. Target: trunk + 1 head <= 15 % of the 53-head RSS.

(c) `--forward-memory tiny|full|gpu`: the memory of one forward pass (batch 1, `--seconds` of audio)
    by number of heads, instead of (a) and (b). `tiny` and `full` measure, each in a fresh process
    (`fixtures.tiny_roformer.forward_peaks`: peak growth of resident memory over the forward, after a
    one-second warm-up), the tiny Mega-53 of `fixtures/tiny_roformer.py` with 1, 5, 20, 53 heads and the
    full-size Mega-53 geometry (random weights, built with 21 heads) with 1, 6, 21 heads, next to
    `roformer_memory.forward_bytes`' estimate. `gpu` computes from the shapes alone (`forward_bytes`, fp16
    autocast, CUDA) Mega-53 at its inference chunk and batch and viperx at 8 s, batch 4, against a T4.

    python -m benchmarks.roformer_heads [--seconds 8] [--repeats 1] [--dir DIR]
    python -m benchmarks.roformer_heads --forward-memory tiny --seconds 20
    python -m benchmarks.roformer_heads --forward-memory full --seconds 8
    python -m benchmarks.roformer_heads --forward-memory gpu

`--smoke`: (a) and (b) with the tiny Mega-53 and viperx geometries of `fixtures/tiny_roformer.py` on one
second, written into a temporary folder; with `--forward-memory tiny`, one second and 1 and 2 heads.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.full_size_weights import DEFAULT_DIR, write_roformer_checkpoint
from benchmarks.smoke import add_smoke_option, parse_with_smoke
from fixtures.tiny_roformer import (
    MEGA53_CHECKPOINT,
    MEGA53_CONFIG,
    VIPERX_CONFIG,
    forward_peaks,
    loaded_heads,
    resident_bytes,
    tiny_config,
    tiny_mega53_config,
    write_tiny_mega53,
)
from separation.models.roformer.bs_roformer import BSRoformer
from separation.models.roformer.checkpoint import RoformerCheckpoint, load_config
from separation.models.roformer.memory import forward_bytes, head_bytes, heads_per_group

GUITAR = 20  # the head the product needs most
MIB = 2**20
GIB = 2**30
T4_BYTES = 16 * 10**9  # a T4's 16 GB (15 GiB)


def measure_load(
    model_config: dict, checkpoint_path: Path, heads: list[int] | None
) -> tuple[float, dict[str, int]]:
    """Wall seconds of one `RoformerCheckpoint` load of a config's `model` section, and the resident memory
    it added (bytes)."""
    before = resident_bytes()
    start = time.perf_counter()
    checkpoint = RoformerCheckpoint(model_config, checkpoint_path, "cpu", heads)
    seconds = time.perf_counter() - start
    after = resident_bytes()
    every_head = list(range(model_config["num_stems"]))
    assert loaded_heads(checkpoint.model) == (heads if heads is not None else every_head)
    return seconds, {name: after[name] - before[name] for name in ("VmRSS", "RssAnon", "RssFile")}


def load_in_fresh_process(
    model_config: dict, checkpoint_path: Path, heads: list[int] | None
) -> tuple[float, dict[str, int]]:
    """`measure_load` in a new interpreter, so one load's memory cannot hide in the other's."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_load, (model_config, checkpoint_path, heads))


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


def print_forward_memory(model_config: dict, samples: int, head_counts: list[int]) -> None:
    """Measured and estimated memory of one forward of `samples` samples per number of heads (CPU, fp32)."""
    runs = [(1, samples, list(range(count))) for count in head_counts]
    peaks = forward_peaks(model_config, runs)
    with torch.device("meta"):
        model = BSRoformer(**model_config)
    print(f"  {heads_per_group(model, 1, samples)} head(s) per group")
    print("  heads   peak RSS growth MiB   estimate MiB   MiB per head more")
    previous = None
    for count, peak in zip(head_counts, peaks, strict=True):
        per_head = "" if previous is None else f"{(peak - previous[1]) / (count - previous[0]) / MIB:10.1f}"
        estimate = forward_bytes(model, 1, samples, count)
        print(f"  {count:5d}   {peak / MIB:19.0f}   {estimate / MIB:12.0f}   {per_head}")
        previous = count, peak


def print_gpu_memory() -> None:
    """GPU memory of one forward from the shapes (fp16 autocast), and the weights, against a T4."""
    cases = [
        (MEGA53_CONFIG, [1, 6, 21, 53]),  # at its inference chunk and batch
        (VIPERX_CONFIG, [1]),
    ]
    print("  (forward: activations and output; weights: float32 + autocast's float16 copies)")
    for config_path, head_counts in cases:
        config = load_config(config_path)
        with torch.device("meta"):
            model = BSRoformer(**config["model"])
        if config_path == MEGA53_CONFIG:
            batch, samples = config["inference"]["batch_size"], config["inference"]["chunk_samples"]
        else:
            batch, samples = 4, 8 * 44100
        trunk = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("mask_"))
        head = sum(p.numel() for p in model.mask_estimators[0].parameters())
        group = heads_per_group(model, batch, samples)
        group_mib = group * head_bytes(model, batch, samples) / MIB
        print(
            f"  {config_path.name}: batch {batch} x {samples} samples, "
            f"{group} head(s) per group ({group_mib:.0f} MiB)"
        )
        for count in head_counts:
            forward = forward_bytes(model, batch, samples, count, torch.float16, "cuda")
            weights = (trunk + count * head) * (4 + 2)
            print(
                f"    {count:2d} heads: forward {forward / GIB:5.2f} GiB + weights {weights / GIB:5.2f} GiB"
                f" = {(forward + weights) / T4_BYTES:5.1%} of a T4"
            )


def print_load_and_speed(
    mega53_config: dict, checkpoint_path: Path, viperx_config: dict, samples: int, repeats: int
) -> None:
    """(b) the loads of the Mega-53 checkpoint (of `mega53_config`'s model section), then (a) the
    forwards against a random model of `viperx_config`'s."""
    print(f"checkpoint {checkpoint_path.stat().st_size / 1e9:.2f} GB, float16")
    checkpoint_path.read_bytes()  # page cache warm
    figures = {
        "trunk + 1 head": load_in_fresh_process(mega53_config, checkpoint_path, [GUITAR]),
        "all 53 heads": load_in_fresh_process(mega53_config, checkpoint_path, None),
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

    audio = 0.1 * torch.randn(1, 2, samples, generator=torch.Generator().manual_seed(0))
    mega53 = RoformerCheckpoint(mega53_config, checkpoint_path, "cpu", heads=[GUITAR]).model
    mega53_s = seconds_per_forward(mega53, audio, repeats, heads=[GUITAR])
    del mega53
    torch.manual_seed(0)
    viperx_s = seconds_per_forward(BSRoformer(**viperx_config).eval(), audio, repeats)
    print(f"(a) one forward of {samples} samples ({samples / 44100:g} s), fp32")
    viperx_label = f"viperx (dim {viperx_config['dim']}, hop {viperx_config['stft_hop_length']})"
    mega53_label = f"Mega-53 trunk + 1 head ({mega53_config['dim']}, {mega53_config['stft_hop_length']})"
    print(f"  {viperx_label:36s}{viperx_s:7.2f} s")
    print(f"  {mega53_label:36s}{mega53_s:7.2f} s   ratio {mega53_s / viperx_s:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per forward (8 s = viperx chunk)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"checkpoint folder, default {DEFAULT_DIR}"
    )
    parser.add_argument("--forward-memory", choices=["tiny", "full", "gpu"], help="(c) instead of (a), (b)")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"seconds": 1.0})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    samples = round(args.seconds * 44100)
    if args.forward_memory == "tiny":
        print(f"(c) one forward of {args.seconds:g} s, tiny Mega-53 (53 heads)")
        head_counts = [1, 2] if args.smoke else [1, 5, 20, 53]
        print_forward_memory(tiny_mega53_config(53)["model"], samples, head_counts)
    elif args.forward_memory == "full":
        print(f"(c) one forward of {args.seconds:g} s, full-size Mega-53 geometry built with 21 heads")
        model_config = load_config(MEGA53_CONFIG)["model"] | {"num_stems": 21}
        print_forward_memory(model_config, samples, [1, 6, 21])
    elif args.forward_memory == "gpu":
        print("(c) GPU memory of one forward from the shapes, fp16 autocast")
        print_gpu_memory()
    elif args.smoke:
        with tempfile.TemporaryDirectory(prefix="roformer-heads-") as folder:
            _, checkpoint_path = write_tiny_mega53(Path(folder))
            print("tiny Mega-53 and viperx geometries (fixtures/tiny_roformer.py)")
            configs = tiny_mega53_config()["model"], tiny_config()["model"]
            print_load_and_speed(configs[0], checkpoint_path, configs[1], samples, args.repeats)
    else:
        args.dir.mkdir(parents=True, exist_ok=True)
        mega53_config, viperx_config = (load_config(path)["model"] for path in (MEGA53_CONFIG, VIPERX_CONFIG))
        checkpoint_path = random_checkpoint(args.dir)
        print_load_and_speed(mega53_config, checkpoint_path, viperx_config, samples, args.repeats)


if __name__ == "__main__":
    main()
