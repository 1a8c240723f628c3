"""BS-RoFormer speed on this machine: our module vs bs-roformer 0.4.1, same weights, same input.

Prints seconds per forward of one chunk for ours (fp32, bf16 autocast) and the reference (fp32),
the ratio ours / reference, the bf16 speed-up and SNR against fp32, and the time to load a
full-size random-weight checkpoint through `RoformerCheckpoint` (page cache warm).

With `--profile`, one more forward of each runs under torch.profiler and the CPU time is split into
matrix products, attention, activation functions and the rest. The first three are arithmetic both
implementations must do; ours' share of them over the reference's total is the lowest ratio that any
rewrite of the rest (copies, norms, rotary, layout changes) could reach.

    python benchmarks/roformer_speed.py [--seconds 8] [--repeats 1] [--skip-bf16] [--profile] [--smoke]

`--smoke`: the tiny viperx-geometry model of `fixtures/tiny_roformer.py` (same STFT and bands, narrow and
shallow) on one second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pipeline import snr_db  # noqa: E402
from benchmarks.reference_demix import reference_bs_roformer  # noqa: E402
from benchmarks.smoke import add_smoke_option, parse_with_smoke  # noqa: E402
from fixtures.tiny_roformer import VIPERX_CONFIG, tiny_config  # noqa: E402
from separation.models.chunking import autocast_context  # noqa: E402
from separation.models.roformer.bs_roformer import BSRoformer  # noqa: E402
from separation.models.roformer.checkpoint import RoformerCheckpoint, load_config  # noqa: E402


def seconds_per_forward(model, audio, precision: str, repeats: int) -> tuple[float, torch.Tensor]:
    """Best wall time of `repeats` forwards, and the output."""
    best = float("inf")
    with torch.inference_mode(), autocast_context(torch.device("cpu"), precision):
        for _ in range(repeats):
            start = time.perf_counter()
            out = model(audio)
            best = min(best, time.perf_counter() - start)
    return best, out.float().reshape(audio.shape)


OP_KINDS = {  # profiler op name -> kind of work
    "aten::addmm": "matrix products",
    "aten::addmm_": "matrix products",
    "aten::mm": "matrix products",
    "aten::bmm": "matrix products",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::gelu": "activations",
    "aten::gelu_": "activations",
    "aten::tanh": "activations",
    "aten::sigmoid": "activations",
    "aten::glu": "activations",
}


def seconds_by_kind(model, audio) -> dict[str, float]:
    """Self CPU seconds of one fp32 forward, summed by OP_KINDS (everything else is "other")."""
    with torch.inference_mode(), torch.profiler.profile() as profiler:
        model(audio)
    totals: dict[str, float] = {}
    for event in profiler.key_averages():
        kind = OP_KINDS.get(event.key, "other")
        totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total / 1e6
    return totals


def print_profile(ours, reference, audio) -> None:
    """Where each forward's time goes, and the ratio floor set by the arithmetic both must do."""
    ours_kinds, ref_kinds = seconds_by_kind(ours, audio), seconds_by_kind(reference, audio)
    print("profiled fp32 forward, self CPU seconds:        ours  reference")
    for kind in ("matrix products", "attention", "activations", "other"):
        print(f"  {kind:44s} {ours_kinds.get(kind, 0):6.2f} {ref_kinds.get(kind, 0):9.2f}")
    required = sum(ours_kinds.get(kind, 0) for kind in ("matrix products", "attention", "activations"))
    floor = required / sum(ref_kinds.values())
    print(f"  ratio floor (ours' required arithmetic / reference total): {floor:.3f}")


def load_seconds(model: torch.nn.Module, model_config: dict) -> float:
    """Seconds to load `model`'s weights, saved as a checkpoint, through RoformerCheckpoint (page cache
    warm)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model_bs_roformer_ep_317_sdr_12.9755.ckpt"
        torch.save(model.state_dict(), path)
        path.read_bytes()  # page cache warm
        start = time.perf_counter()
        RoformerCheckpoint(model_config, path, "cpu")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="chunk length (8 s = the viperx chunk)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--profile", action="store_true", help="split the time by kind of work")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"seconds": 1.0})

    torch.manual_seed(0)
    config = (tiny_config() if args.smoke else load_config(VIPERX_CONFIG))["model"]
    ours = BSRoformer(**config).eval()
    reference = reference_bs_roformer(config).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    samples = int(args.seconds * 44100) // 441 * 441  # whole hops: the reference trims to them
    audio = 0.1 * torch.randn(1, 2, samples)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {samples} samples")

    with torch.inference_mode():  # warm-up on a short input: kernel selection, allocator
        ours(audio[..., :44100])
        reference(audio[..., :44100])

    ours_s, ours_out = seconds_per_forward(ours, audio, "fp32", args.repeats)
    ref_s, ref_out = seconds_per_forward(reference, audio, "fp32", args.repeats)
    print(f"reference fp32  {ref_s:8.2f} s")
    print(f"ours fp32       {ours_s:8.2f} s   ratio ours/reference {ours_s / ref_s:.3f} (target <= 0.8)")
    print(f"max |ours - reference| {(ours_out - ref_out).abs().max().item():.2e}")
    if args.profile:
        print_profile(ours, reference, audio)
    if not args.skip_bf16:
        bf16_s, bf16_out = seconds_per_forward(ours, audio, "bf16", args.repeats)
        print(
            f"ours bf16       {bf16_s:8.2f} s   speed-up vs fp32 {ours_s / bf16_s:.2f}x (target >= 1.5), "
            f"SNR vs fp32 {snr_db(ours_out, bf16_out):.1f} dB"
        )
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    load_s = load_seconds(ours, config)
    print(f"checkpoint load ({params:.1f}M params, page cache warm) {load_s:.2f} s (target <= 3)")


if __name__ == "__main__":
    main()
