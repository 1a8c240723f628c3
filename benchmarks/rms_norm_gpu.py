"""RMSNorm on CUDA: the model's way under fp16 autocast vs one fused kernel, at the real shape.

Under autocast F.normalize computes and writes float32, the gains multiply that, and the next Linear
casts it back to fp16; the profile of a batch of four 8 s chunks (H100, run 2) put about a quarter
of the forward's GPU time in these passes. F.rms_norm outside autocast would read fp16 and write fp16
once. This prints, for the fp16 residual stream of a batch of four chunks: each way's time per norm
(norm and the cast the next Linear needs), the fused kernel's output dtype with float32 gains (some
kernels refuse mixed dtypes: then with gains cast to fp16), and each way's error against float32
arithmetic, in units of fp16 rounding, so that the change can be judged before the model adopts it.

    python -m benchmarks.rms_norm_gpu [--tokens 198648] [--dim 512]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F


def milliseconds(run: Callable[[], torch.Tensor], repeats: int = 20) -> float:
    """Mean CUDA-event time of `repeats` calls after three warm-ups."""
    for _ in range(3):
        run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=4 * 62 * 801, help="batch 4 x 62 bands x 801 frames")
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.exit(1, "this benchmark needs a CUDA GPU\n")
    x = torch.randn(args.tokens, args.dim, device="cuda").half()  # [tokens, dim] fp16 residual stream
    gamma = torch.rand(args.dim, device="cuda") + 0.5  # float32 gains, as loaded
    eps = 1e-24 / args.dim  # F.normalize's 1e-12 floor on the norm, on the mean square
    exact = x.float() / x.float().norm(dim=-1, keepdim=True) * args.dim**0.5 * gamma  # float32

    def model_way() -> torch.Tensor:
        """What the model's RMSNorm does, plus the Linear's cast."""
        with torch.autocast("cuda", dtype=torch.float16):
            return (F.normalize(x, dim=-1).mul_(gamma * args.dim**0.5)).half()

    def fused(gains: torch.Tensor) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.autocast("cuda", enabled=False):
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
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, x [{args.tokens}, {args.dim}] fp16")
    for label, run in ways.items():
        error = ((run().float() - exact).abs() / ulp).flatten()
        print(
            f"  {label:44s} {milliseconds(run):7.3f} ms   error vs float32: "
            f"mean {error.mean():.3f}, max {error.max():.2f} fp16 ulps"
        )


if __name__ == "__main__":
    main()
