"""End-to-end separation speed and memory, through the code path a prediction takes.

A generated stereo song (default 300 s) is written as a 16-bit WAV and separated by
`Separator.stems_as_written` (what `predict.py` -> `PredictionService.predict` calls) with full-size random
weights (`benchmarks/full_size_weights.py`; weights do not change speed), once per case. A case is a
`stems` mode, or `MODE+N`: the mode with the first N extra stems it does not already return (`guitar+5`).
For each case it prints the wall time of every stage, the CPU time of this process (all its threads), the
real-time factor (wall time / audio time), the host memory high-water mark (the kernel's VmHWM, reset per
stage, and a sampling thread), and on CUDA the peak GPU memory (torch.cuda.max_memory_allocated); the
summary gives each case's wall and CPU time against the first case's.

With `--compare-reference` it also runs the BS-RoFormer stage the way the original design did, on the same
decoded input: bs-roformer 0.4.1 with the same weights, MSST's `demix` (benchmarks/reference_demix.py),
batch 4, fp16 autocast on CUDA. It prints the throughput ratio ours / reference (target >= 2x), and how far
each side's fp16 output is from its own fp32 output (SNR in dB; ours must be no further than the
reference's).

    python -m benchmarks.pipeline [--seconds 300] [--modes vocals_instrumental all_4 guitar+5 ...]
        [--device cuda] [--precision auto] [--batch-size N] [--compare-reference]
        [--weights DIR] [--decoder auto|ffmpeg|soundfile] [--warmup-seconds S] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import soundfile as sf
import torch

import separation.pipeline as pipeline_module
from benchmarks.full_size_weights import DEFAULT_DIR, write_full_size_weights
from benchmarks.reference_demix import reference_bs_roformer, reference_demix, use_msst_attention_kernels
from benchmarks.smoke import add_smoke_option, is_own_plan_folder, parse_with_smoke, tiny_weights
from fixtures.songs import write_long_song
from fixtures.spans import chunked_output
from separation.audio.samplerate import SAMPLE_RATE
from separation.models.chunking import separate_chunked
from separation.pipeline import Separator
from separation.plan import StemPlan
from separation.progress import Reporter
from separation.request import Request

GIB = 1024**3
BYTES_PER_SAMPLE = 4  # float32
WARMUP_SECONDS_REFERENCE = 24  # long enough for the reference's reflect border and several batches


# ---------------------------------------------------------------------------------------------------
# Host memory


def resident_bytes() -> int:
    """This process's resident set size now, in bytes (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    """The kernel's RSS high-water mark (VmHWM) since the process started or the last reset, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_resident() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, /proc/self/clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryMonitor:
    """Peak host RSS of a block of code, overall and per labelled stage.

    Two sources: the kernel's high-water mark, reset at every label change (exact, sees short spikes),
    and a thread sampling the RSS every `interval_seconds` (the fallback where the mark cannot be reset).
    """

    def __init__(self, interval_seconds: float = 0.02):
        self.interval_seconds = interval_seconds
        self.label = "start"
        self.stage_peaks: dict[str, int] = {}
        self.idle_bytes = self.peak_bytes = 0
        self.kernel_mark = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _record(self, label: str, rss: int) -> None:
        self.stage_peaks[label] = max(self.stage_peaks.get(label, 0), rss)
        self.peak_bytes = max(self.peak_bytes, rss)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self._record(self.label, resident_bytes())

    def mark(self, label: str) -> None:
        """Close the current stage (its kernel high-water mark counts for it) and start `label`."""
        if self.kernel_mark:
            self._record(self.label, peak_resident_bytes())
            reset_peak_resident()
        self.label = label

    def __enter__(self) -> MemoryMonitor:
        self.idle_bytes = resident_bytes()
        self.kernel_mark = reset_peak_resident()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.mark("end")
        self._stop.set()
        self._thread.join()


class StageRecorder(Reporter):
    """Collects wall time and this process's CPU time per stage (summed when a stage repeats) and labels
    the memory monitor."""

    def __init__(self, monitor: MemoryMonitor | None = None):
        self.monitor = monitor
        self.stage_seconds: dict[str, float] = {}
        self.stage_cpu_seconds: dict[str, float] = {}
        self.audio_seconds = 0.0
        self._cpu_start = 0.0

    def stage_started(self, stage: str) -> None:
        self._cpu_start = time.process_time()
        if self.monitor is not None:
            self.monitor.mark(stage)

    def decoded(self, audio_seconds: float) -> None:
        self.audio_seconds = audio_seconds

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        cpu = time.process_time() - self._cpu_start
        self.stage_cpu_seconds[stage] = self.stage_cpu_seconds.get(stage, 0.0) + cpu
        if self.monitor is not None:
            self.monitor.mark("between stages")


# ---------------------------------------------------------------------------------------------------
# Input


def read_with_soundfile(path, *, max_duration_seconds: float = 1800.0, **_) -> np.ndarray:
    """Stand-in for `decode_audio` where ffmpeg is missing: a 44.1 kHz stereo file -> float32 [2, samples]."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)  # [samples, channels]
    if rate != SAMPLE_RATE or audio.shape[1] != 2 or len(audio) > max_duration_seconds * rate:
        raise ValueError(f"{path}: the soundfile stand-in reads 44.1 kHz stereo within the length limit only")
    return np.ascontiguousarray(audio.T)


def choose_decoder(name: str) -> Callable:
    """The decode function the pipeline will call: ffmpeg's (the real one) or the soundfile stand-in."""
    has_ffmpeg = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
    if name == "ffmpeg" or (name == "auto" and has_ffmpeg):
        return pipeline_module.decode_audio
    if name == "auto":
        print(
            "NOTE: ffmpeg/ffprobe are not on PATH: decoding with soundfile instead "
            "(the decode time is not representative)"
        )
    return read_with_soundfile


# ---------------------------------------------------------------------------------------------------
# Measurements


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_bytes(device: torch.device) -> tuple[int, int]:
    """(allocated now, peak allocated since the last reset) on a CUDA device; (0, 0) elsewhere."""
    if device.type != "cuda":
        return 0, 0
    return torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)


def reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_seconds(run: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """(seconds, result) of one call of `run`: timed by CUDA events on a CUDA device (the device's time,
    after the work queued before), by the wall clock elsewhere."""
    if device.type != "cuda":
        start = time.perf_counter()
        result = run()
        return time.perf_counter() - start, result
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    result = run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000, result


def load_average() -> str:
    """The 1/5/15-minute load averages (the CPU is shared: figures depend on them)."""
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def print_environment(device: torch.device) -> None:
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(
            f"device {props.name}, {props.total_memory / GIB:.1f} GiB, "
            f"compute capability {props.major}.{props.minor}"
        )
    else:
        print(
            f"device cpu ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, "
            f"{load_average()}"
        )


def warm_page_cache(folder: Path) -> int:
    """Read every file under `folder` once; return the bytes read."""
    total = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    total += len(chunk)
    return total


def prepare_weights(folder: Path) -> Path:
    """A folder with its own stems.yaml is used as it is; any other gets the full-size random models."""
    if is_own_plan_folder(folder):
        print(f"weights: {folder} (its own stem plan)")
        return folder
    print(f"weights: full-size random models in {folder}")
    return write_full_size_weights(folder, log=lambda line: print("  " + line))


def case_request(plan: StemPlan, case: str, audio_seconds: float, **fields) -> Request:
    """The request of a case: `MODE`, or `MODE+N`, the mode with the first N extra stems (the plan's extras
    model's, in its head order) that the mode does not already return; `fields` are further inputs. Its
    length limit lets `audio_seconds` through."""
    mode, _, count = case.partition("+")
    returned = plan.stems_of(mode)
    extra = [name for name in plan.extra_stem_names if name not in returned][: int(count or 0)]
    max_minutes = max(Request().max_minutes, audio_seconds / 60 + 1)
    return Request(stems=mode, extra_stems=",".join(extra), max_minutes=max_minutes, **fields)


def run_mode(
    separator: Separator, song: Path, request: Request, out_dir: Path, decoder: Callable, case: str
) -> dict:
    """Separate `song` once as `request` asks; return the figures (labelled `case`)."""
    device = separator.device
    gc.collect()  # the idle figure should not hold the previous run's garbage
    synchronize(device)
    reset_gpu_peak(device)
    gpu_resident, _ = gpu_bytes(device)
    with MemoryMonitor() as monitor, mock.patch.object(pipeline_module, "decode_audio", decoder):
        recorder = StageRecorder(monitor)
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in separator.stems_as_written(song, out_dir, request, recorder):
            pass
        synchronize(device)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    _, gpu_peak = gpu_bytes(device)
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "mode": case,
        "wall": wall,
        "cpu": cpu,
        "audio": recorder.audio_seconds,
        "stages": recorder.stage_seconds,
        "stage_cpu": recorder.stage_cpu_seconds,
        "monitor": monitor,
        "gpu_resident": gpu_resident,
        "gpu_peak": gpu_peak,
    }


def print_mode(result: dict, input_bytes: int) -> None:
    monitor: MemoryMonitor = result["monitor"]
    rtf = result["wall"] / result["audio"]
    print(
        f"{result['mode']}: {result['audio']:.1f} s of audio in {result['wall']:.2f} s: "
        f"real-time factor {rtf:.3f} ({1 / rtf:.3g}x real time); CPU time {result['cpu']:.2f} s"
    )
    print("  stages: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result["stages"].items()))
    cpu_stages = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result["stage_cpu"].items())
    print(f"  CPU time per stage: {cpu_stages}")
    growth = monitor.peak_bytes - monitor.idle_bytes
    print(
        f"  host RSS: idle {monitor.idle_bytes / GIB:.2f} GiB, peak {monitor.peak_bytes / GIB:.2f} GiB "
        f"(+{growth / GIB:.2f} GiB = {growth / input_bytes:.1f}x the input's float32 size; "
        f"{'kernel mark + sampling' if monitor.kernel_mark else 'sampling only'})"
    )
    stages = {k: v for k, v in monitor.stage_peaks.items() if k not in ("start", "end", "between stages")}
    print("  host RSS peak per stage: " + ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in stages.items()))
    if result["gpu_peak"]:
        working = result["gpu_peak"] - result["gpu_resident"]
        print(
            f"  GPU memory: models {result['gpu_resident'] / GIB:.2f} GiB, peak allocated "
            f"{result['gpu_peak'] / GIB:.2f} GiB (+{working / GIB:.2f} GiB working memory)"
        )


# ---------------------------------------------------------------------------------------------------
# Reference comparison


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """10 log10(|reference|^2 / |estimate - reference|^2), in float64; inf when they are equal."""
    reference, estimate = reference.double(), estimate.double()
    noise = (estimate - reference).pow(2).sum().item()
    return float("inf") if noise == 0 else 10 * np.log10(reference.pow(2).sum().item() / noise)


def timed(device: torch.device, run: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor, int]:
    """(wall seconds, output, peak GPU bytes) of one run, device work included."""
    synchronize(device)
    reset_gpu_peak(device)
    start = time.perf_counter()
    output = run()
    synchronize(device)
    return time.perf_counter() - start, output, gpu_bytes(device)[1]


def resolved_precision(precision: str, device: torch.device) -> str:
    """`auto` as separate_chunked resolves it: fp16 on CUDA, fp32 elsewhere."""
    if precision != "auto":
        return precision
    return "fp16" if device.type == "cuda" else "fp32"


def compare_reference(
    separator: Separator, mix: torch.Tensor, request: Request, extra_batch_sizes: list[int]
) -> None:
    """Time our BS-RoFormer stage against MSST demix + bs-roformer 0.4.1 on `mix` ([2, samples]).

    The stage is the vocals model's (the one model of the vocals_instrumental mode), at the request's chunk,
    overlap, batch size and precision. Ours is also timed at each of `extra_batch_sizes` (same precision),
    against the same reference time.
    """
    device = separator.device
    options = request.run_options
    (name,) = separator.plan.mode("vocals_instrumental").models
    spec = separator.plan.models[name]
    ours, ours_batch_size = separator.model(name).checkpoint.model, spec.batch_size(options)
    reference = reference_bs_roformer(spec.settings["model"])
    reference.load_state_dict(ours.state_dict(), strict=True)
    reference = reference.to(device).eval()
    low = resolved_precision(options.precision, device)
    audio_seconds = mix.shape[-1] / SAMPLE_RATE

    def run_ours(precision: str, audio: torch.Tensor, batch_size: int = ours_batch_size) -> torch.Tensor:
        return chunked_output(
            separate_chunked(
                ours, audio, device, options.chunk_samples, options.overlap_samples, batch_size, precision
            )
        )

    def run_reference(use_amp: bool, audio: torch.Tensor) -> torch.Tensor:
        use_msst_attention_kernels(reference, device, use_amp)
        return reference_demix(reference, audio, device, use_amp=use_amp)

    reference_low = (
        "reference fp16 autocast (batch 4)" if device.type == "cuda" else "reference (no autocast on CPU)"
    )
    runs = {
        f"ours {low} (batch {ours_batch_size})": lambda audio: run_ours(low, audio),
        "ours fp32": lambda audio: run_ours("fp32", audio),
        reference_low: lambda audio: run_reference(True, audio),
        "reference fp32": lambda audio: run_reference(False, audio),
    }
    if device.type == "cuda":  # kernel selection and allocator growth stay out of the timings
        for run in runs.values():
            run(mix[:, : WARMUP_SECONDS_REFERENCE * SAMPLE_RATE])
    results = {}
    print(f"\nBS-RoFormer stage vs the reference, {audio_seconds:.1f} s of audio, {load_average()}")
    for label, run in runs.items():
        seconds, output, gpu_peak = timed(device, lambda run=run: run(mix))
        results[label] = (seconds, output)
        gpu = f", GPU peak {gpu_peak / GIB:.2f} GiB" if gpu_peak else ""
        print(f"  {label:36s} {seconds:8.2f} s  ({audio_seconds / seconds:6.1f}x real time{gpu})")
    (ours_s, ours_low), (_, ours_fp32), (ref_s, ref_low), (_, ref_fp32) = results.values()
    print(f"  throughput ours / reference: {ref_s / ours_s:.2f}x (target >= 2)")
    ours_snr, ref_snr = snr_db(ours_fp32, ours_low), snr_db(ref_fp32, ref_low)
    print(f"  SNR ours {low} vs ours fp32:           {ours_snr:7.1f} dB")
    print(f"  SNR reference fp16 vs reference fp32: {ref_snr:7.1f} dB")
    verdict = "yes" if ours_snr >= ref_snr else "NO"
    print(f"  ours no further from fp32 than the reference: {verdict}")
    print(
        "  SNR ours fp32 vs reference fp32 (same model, different windows): "
        f"{snr_db(ref_fp32, ours_fp32):.1f} dB"
    )
    for batch_size in extra_batch_sizes:
        if device.type == "cuda":
            run_ours(low, mix[:, : WARMUP_SECONDS_REFERENCE * SAMPLE_RATE], batch_size)
        seconds, _, gpu_peak = timed(device, lambda b=batch_size: run_ours(low, mix, b))
        gpu = f", GPU peak {gpu_peak / GIB:.2f} GiB" if gpu_peak else ""
        print(
            f"  ours {low} batch {batch_size:<3d} {seconds:8.2f} s: {ref_s / seconds:.2f}x the reference{gpu}"
        )


# ---------------------------------------------------------------------------------------------------


CASES = ("vocals_instrumental", "all_4", "all_6")  # the default cases
SMOKE_DEFAULTS = {
    "seconds": 1.0,
    "modes": ["vocals_instrumental", "all_4", "all_6", "guitar", "guitar_only", "guitar+5"],
    "device": "cpu",
    "weights": None,  # tiny models in a temporary folder
    "compare_reference": True,
    "extra_batch_sizes": [2],
    "chunk_size": 4.0,  # the least BS-RoFormer work the request allows
    "overlap": 1.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=300.0, help="length of the generated song (default 300)"
    )
    parser.add_argument(
        "--modes", nargs="+", default=list(CASES), help="stems modes, or MODE+N: with N extra stems"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="chunks or segments per forward pass (default: per model)",
    )
    parser.add_argument("--output-format", default="wav", choices=["wav", "flac", "mp3"])
    parser.add_argument(
        "--chunk-size", type=float, default=Request().chunk_size, help="the request's chunk_size (s)"
    )
    parser.add_argument("--overlap", type=float, default=Request().overlap, help="the request's overlap (s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_DIR, help=f"default {DEFAULT_DIR}")
    parser.add_argument("--decoder", default="auto", choices=["auto", "ffmpeg", "soundfile"])
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="separate this much once per case first (default: 10 on CUDA, 0 on CPU)",
    )
    parser.add_argument("--compare-reference", action="store_true")
    parser.add_argument(
        "--extra-batch-sizes",
        type=int,
        nargs="*",
        default=[],
        help="with --compare-reference: also time our BS-RoFormer stage at these batch sizes",
    )
    add_smoke_option(parser)
    return parse_with_smoke(parser, SMOKE_DEFAULTS, argv)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    print_environment(device)
    with contextlib.ExitStack() as stack:
        if args.smoke:
            weights_dir = stack.enter_context(tiny_weights(args.weights))
            print(f"weights: tiny random models in {weights_dir}")
        else:
            weights_dir = prepare_weights(args.weights)
        run_cases(args, device, weights_dir)


def run_cases(args: argparse.Namespace, device: torch.device, weights_dir: Path) -> None:
    """Setup, then each case on the generated song, the summary and the reference comparison."""
    decoder = choose_decoder(args.decoder)
    warmup_seconds = (
        args.warmup_seconds if args.warmup_seconds is not None else (10.0 if device.type == "cuda" else 0.0)
    )

    print(f"page cache: read {warm_page_cache(weights_dir) / 1e6:.0f} MB of weights")
    start = time.perf_counter()
    separator = Separator(weights_dir, device)
    synchronize(device)
    print(f"setup (Separator construction, page cache warm): {time.perf_counter() - start:.2f} s")
    fields = {
        "batch_size": args.batch_size,
        "precision": args.precision,
        "chunk_size": args.chunk_size,
        "overlap": args.overlap,
    }
    requests = {
        case: case_request(separator.plan, case, args.seconds, output_format=args.output_format, **fields)
        for case in args.modes
    }
    used = {name for request in requests.values() for name in separator.plan.resolve(request).uses}
    for name in sorted(used & set(separator.plan.models_loaded_at("lazy"))):
        start = time.perf_counter()
        separator.model(name)
        synchronize(device)
        print(f"lazy load of {name}: {time.perf_counter() - start:.2f} s (paid by its first request)")

    with tempfile.TemporaryDirectory(prefix="pipeline-benchmark-") as folder:
        scratch = Path(folder)
        song = write_long_song(scratch / "song.wav", args.seconds)
        warmup_song = (
            write_long_song(scratch / "warmup.wav", warmup_seconds, seed=1) if warmup_seconds else None
        )
        input_bytes = round(args.seconds * SAMPLE_RATE) * 2 * BYTES_PER_SAMPLE
        print(f"input: {args.seconds:g} s generated stereo song, {input_bytes / 1e6:.0f} MB as float32")
        results = []
        for case, request in requests.items():
            if warmup_song is not None:
                run_mode(separator, warmup_song, request, scratch / "out", decoder, case)
            extra = f" + {request.extra_stems}" if request.extra_stems else ""
            print(f"\n[{case}] stems={request.stems}{extra}, {load_average()}")
            results.append(run_mode(separator, song, request, scratch / "out", decoder, case))
            print_mode(results[-1], input_bytes)

        first = results[0]
        print(f"\nsummary (wall and CPU time of each case, and against the first, {first['mode']}):")
        for result in results:
            print(
                f"  {result['mode']:22s} {result['wall']:9.2f} s   RTF {result['wall'] / result['audio']:.3f}"
                f"   CPU {result['cpu']:9.2f} s   wall x{result['wall'] / first['wall']:.3f}"
                f"   CPU x{result['cpu'] / first['cpu']:.3f}"
            )
        if args.compare_reference:
            mix = torch.from_numpy(decoder(song, max_duration_seconds=args.seconds + 1))
            request = Request(**fields)
            compare_reference(separator, mix, request, args.extra_batch_sizes)


if __name__ == "__main__":
    main()
