"""RMSNorm on CUDA: the model's way under fp16 autocast vs one fused kernel, at the real shape.

Under autocast F.normalize computes and writes float32, the gains multiply that, and the next Linear
casts it back to fp16; the profile of a batch of four 8 s chunks (H100, run 2) put about a quarter
of the forward's GPU time in these passes. F.rms_norm outside autocast would read fp16 and write fp16
once. This prints, for the fp16 residual stream of a batch of four chunks: each way's time per norm
(norm and the cast the next Linear needs), the fused kernel's output dtype with float32 gains (some
kernels refuse mixed dtypes: then with gains cast to fp16), and each way's error against float32
arithmetic, in units of fp16 rounding, so that the change can be judged before the model adopts it.

    python -m benchmarks.rms_norm_gpu [--tokens 198648] [--dim 512] [--repeats 20] [--device cuda] [--smoke]

It is written for CUDA; `--device cpu` does the same on the CPU (CPU autocast, wall clock), which only
checks the script. `--smoke`: that, on 4096 tokens, one timed repetition.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.pipeline import device_seconds
from benchmarks.smoke import add_smoke_option, parse_with_smoke


def milliseconds(run: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    """Mean time of `repeats` calls after three warm-ups (CUDA events on CUDA), in ms."""
    for _ in range(3):
        run()

    def calls() -> None:
        for _ in range(repeats):
            run()

    return device_seconds(calls, device)[0] * 1000 / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4 * 62 * 801, help="batch 4 x 62 bands x 801 frames")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda", help="default cuda; cpu only checks the script")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"device": "cpu", "tokens": 4096, "repeats": 1})
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(1, "this benchmark needs a CUDA GPU (--device cpu only checks the script)\n")
    x = torch.randn(args.tokens, args.dim, device=device).half()  # [tokens, dim] fp16 residual stream
    gamma = torch.rand(args.dim, device=device) + 0.5  # float32 gains, as loaded
    eps = 1e-24 / args.dim  # F.normalize's 1e-12 floor on the norm, on the mean square
    exact = x.float() / x.float().norm(dim=-1, keepdim=True) * args.dim**0.5 * gamma  # float32

    def model_way() -> torch.Tensor:
        """What the model's RMSNorm does, plus the Linear's cast."""
        with torch.autocast(device.type, dtype=torch.float16):
            return (F.normalize(x, dim=-1).mul_(gamma * args.dim**0.5)).half()

    def fused(gains: torch.Tensor) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.autocast(device.type, enabled=False):
                return F.rms_norm(x, (args.dim,), gains, eps)

        return run

    ulp = (exact.abs() * 2.0**-10).clamp_min(2.0**-24)  # fp16 spacing at each value
    ways = {"model (normalize, float32 under autocast)": model_way}
    try:
        out = fused(gamma)()
        ways[f"F.rms_norm, float32 gains -> {out.dtype}"] = fused(gamma)
    except RuntimeError as error:
        print(f"F.rms_norm refuses float32 gains with fp16 input: {str(error).splitlines()[0]}")
    ways["F.rms_norm, gains cast to fp16"] = fused(gamma.half())
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, x [{args.tokens}, {args.dim}] fp16")
    for label, run in ways.items():
        error = ((run().float() - exact).abs() / ulp).flatten()
        print(
            f"  {label:44s} {milliseconds(run, device, args.repeats):7.3f} ms   error vs float32: "
            f"mean {error.mean():.3f}, max {error.max():.2f} fp16 ulps"
        )


if __name__ == "__main__":
    main()
