"""BS-RoFormer forward speed on a GPU: ours in several execution variants vs bs-roformer 0.4.1.

One batch of full-size 8 s chunks (random weights in the viperx geometry, a generated song as input) is
run through each variant; the median of `--repeats` timed forwards (CUDA events, after warm-up) is
printed with the throughput against the reference (MSST's way: fp16 autocast, flash attention on
compute capability >= 8), the peak GPU memory, the achieved TFLOP/s (FLOPs counted once with
torch.utils.flop_counter) and the SNR of each output against our fp32 output. A torch.profiler table of
the eager forward says where the time goes.

    python -m benchmarks.roformer_gpu [--batch-size 4] [--extra-batch-sizes 8] [--repeats 5] [--profile]
        [--device cuda] [--smoke]

It is written for CUDA; `--device cpu` runs the same comparisons on the CPU (timed by the wall clock, fp16
autocast of the CPU), which only checks the script. `--smoke`: that, with the tiny viperx-geometry model
of `fixtures/tiny_roformer.py`, one-second chunks and one timed repetition.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.pipeline import GIB, device_seconds, gpu_bytes, reset_gpu_peak, snr_db, synchronize
from benchmarks.reference_demix import reference_bs_roformer, use_msst_attention_kernels
from benchmarks.smoke import add_smoke_option, parse_with_smoke
from fixtures.songs import SAMPLE_RATE, song_block
from fixtures.tiny_roformer import VIPERX_CONFIG, tiny_config
from separation.models.chunking import autocast_context
from separation.models.roformer.bs_roformer import BSRoformer
from separation.models.roformer.checkpoint import load_config
from separation.request import Request


def median_seconds(
    forward: Callable[[], torch.Tensor], repeats: int, device: torch.device
) -> tuple[float, torch.Tensor]:
    """Median seconds of `repeats` forwards (CUDA events on CUDA; two untimed warm-ups first)."""
    for _ in range(2):
        output = forward()
    times = []
    for _ in range(repeats):
        seconds, output = device_seconds(forward, device)
        times.append(seconds)
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
    parser.add_argument("--device", default="cuda", help="default cuda; cpu only checks the script")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"device": "cpu", "extra_batch_sizes": [2], "repeats": 1})
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(1, "this benchmark needs a CUDA GPU (--device cpu only checks the script)\n")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, batch {args.batch_size}")

    torch.manual_seed(0)
    config = tiny_config() if args.smoke else load_config(VIPERX_CONFIG)
    # the request's default chunk (the training chunk); one second in a smoke run
    chunk_samples = SAMPLE_RATE if args.smoke else Request().run_options.chunk_samples
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
    print(f"FLOPs per forward (matmul + attention): {flops / 1e12:.4g} T")
    _, ours_fp32 = median_seconds(forward(ours, "fp32"), 1, device)

    rows: list[tuple[str, float, float, float]] = []  # (label, seconds, GPU peak GiB, SNR dB)

    def measure(label: str, run: Callable[[], torch.Tensor], chunks: int = args.batch_size) -> float:
        reset_gpu_peak(device)
        seconds, output = median_seconds(run, args.repeats, device)
        peak = gpu_bytes(device)[1] / GIB
        snr = snr_db(ours_fp32, output[: ours_fp32.shape[0]]) if chunks == args.batch_size else float("nan")
        per_chunk = seconds / chunks
        rows.append((label, per_chunk, peak, snr))
        print(f"  {label:44s} {per_chunk * 1000:8.1f} ms/chunk  GPU peak {peak:5.2f} GiB  SNR {snr:6.1f} dB")
        return per_chunk

    print(f"\nper {chunk_samples / SAMPLE_RATE:g} s chunk (median):")
    reference_s = measure("reference fp16 autocast (MSST kernels)", forward(reference, "fp16"))
    measure("ours fp16 autocast", forward(ours, "fp16"))
    for batch_size in args.extra_batch_sizes:
        batch = chunks_of_song(batch_size, chunk_samples, device)
        measure(f"ours fp16 autocast, batch {batch_size}", forward(ours, "fp16", batch), batch_size)

    if args.profile:
        run = forward(ours, "fp16")
        run()
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profiler:
            run()
            synchronize(device)
        sort_by = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(profiler.key_averages().table(sort_by=sort_by, row_limit=30, max_name_column_width=60))

    print(
        f"\nsummary: throughput vs the reference ({reference_s * 1000:.1f} ms/chunk), "
        f"TFLOP/s from {flops / args.batch_size / 1e12:.4g} TFLOP per chunk"
    )
    for label, seconds, _, snr in rows:
        tflops = flops / args.batch_size / seconds / 1e12
        print(f"  {label:44s} {reference_s / seconds:5.2f}x  {tflops:6.1f} TFLOP/s  SNR {snr:6.1f} dB")


if __name__ == "__main__":
    main()
