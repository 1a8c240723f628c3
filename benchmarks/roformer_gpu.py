"""BS-RoFormer forward speed on a GPU: ours in several execution variants vs bs-roformer 0.4.1.

One batch of full-size 8 s chunks (random weights in the viperx geometry, a generated song as input) is
run through each variant; the median of `--repeats` timed forwards (CUDA events, after warm-up) is
printed with the throughput against the reference (MSST's way: fp16 autocast, flash attention on
compute capability >= 8), the peak GPU memory, the achieved TFLOP/s (FLOPs counted once with
torch.utils.flop_counter) and the SNR of each output against our fp32 output. A torch.profiler table of
the eager forward says where the time goes.

    python -m benchmarks.roformer_gpu [--batch-size 4] [--extra-batch-sizes 8] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.pipeline import GIB, snr_db
from benchmarks.reference_demix import reference_bs_roformer, use_msst_attention_kernels
from fixtures.songs import song_block
from separation.models.chunking import autocast_context
from separation.models.roformer.bs_roformer import BSRoformer
from separation.models.roformer.checkpoint import load_config
from separation.request import SeparationSettings

VIPERX_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "config_bs_roformer_vocals.yaml"


def median_seconds(forward: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of `repeats` forwards timed with CUDA events (two untimed warm-ups first)."""
    for _ in range(2):
        output = forward()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        output = forward()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times), output


def count_flops(forward: Callable[[], torch.Tensor]) -> int:
    """Matrix and attention FLOPs of one forward (torch's counter: matmuls, SDPA, convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter:
        forward()
    return counter.get_total_flops()


def chunks_of_song(batch_size: int, chunk_samples: int, device: torch.device) -> torch.Tensor:
    """`batch_size` consecutive chunks of the generated song: [batch, 2, chunk_samples] float32."""
    song = song_block(0, batch_size * chunk_samples)  # [samples, 2] float32
    chunks = torch.from_numpy(song.T.copy()).reshape(2, batch_size, chunk_samples).transpose(0, 1)
    return chunks.contiguous().to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--extra-batch-sizes", type=int, nargs="*", default=[8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of ours")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.exit(1, "this benchmark needs a CUDA GPU\n")
    device = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, batch {args.batch_size}")

    torch.manual_seed(0)
    config = load_config(VIPERX_CONFIG)
    chunk_samples = SeparationSettings().chunk_samples  # the request's default chunk (the training chunk)
    ours = BSRoformer(**config["model"]).eval()
    reference = reference_bs_roformer(config["model"]).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    ours, reference = ours.to(device), reference.to(device)
    audio = chunks_of_song(args.batch_size, chunk_samples, device)  # [b, 2, chunk]

    def forward(model: torch.nn.Module, precision: str, batch: torch.Tensor = audio) -> Callable:
        def run() -> torch.Tensor:
            with torch.inference_mode(), autocast_context(device, precision):
                return model(batch).float().reshape(batch.shape[0], -1, *batch.shape[1:])

        return run

    use_msst_attention_kernels(reference, device, use_amp=True)
    flops = count_flops(forward(ours, "fp16"))
    print(f"FLOPs per forward (matmul + attention): {flops / 1e12:.2f} T")
    _, ours_fp32 = median_seconds(forward(ours, "fp32"), 1)

    rows: list[tuple[str, float, float, float]] = []  # (label, seconds, GPU peak GiB, SNR dB)

    def measure(label: str, run: Callable[[], torch.Tensor], chunks: int = args.batch_size) -> float:
        torch.cuda.reset_peak_memory_stats()
        seconds, output = median_seconds(run, args.repeats)
        peak = torch.cuda.max_memory_allocated() / GIB
        snr = snr_db(ours_fp32, output[: ours_fp32.shape[0]]) if chunks == args.batch_size else float("nan")
        per_chunk = seconds / chunks
        rows.append((label, per_chunk, peak, snr))
        print(f"  {label:44s} {per_chunk * 1000:8.1f} ms/chunk  GPU peak {peak:5.2f} GiB  SNR {snr:6.1f} dB")
        return per_chunk

    print("\nper 8 s chunk (median):")
    reference_s = measure("reference fp16 autocast (MSST kernels)", forward(reference, "fp16"))
    measure("ours fp16 autocast", forward(ours, "fp16"))
    for batch_size in args.extra_batch_sizes:
        batch = chunks_of_song(batch_size, chunk_samples, device)
        measure(f"ours fp16 autocast, batch {batch_size}", forward(ours, "fp16", batch), batch_size)

    if args.profile:
        run = forward(ours, "fp16")
        run()
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as profiler:
            run()
            torch.cuda.synchronize()
        table = profiler.key_averages().table(
            sort_by="self_device_time_total", row_limit=30, max_name_column_width=60
        )
        print(table)

    print(
        f"\nsummary: throughput vs the reference ({reference_s * 1000:.1f} ms/chunk), "
        f"TFLOP/s from {flops / args.batch_size / 1e12:.2f} TFLOP per chunk"
    )
    for label, seconds, _, snr in rows:
        tflops = flops / args.batch_size / seconds / 1e12
        print(f"  {label:44s} {reference_s / seconds:5.2f}x  {tflops:6.1f} TFLOP/s  SNR {snr:6.1f} dB")


if __name__ == "__main__":
    main()
