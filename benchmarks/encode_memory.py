"""Benchmark: memory and CPU time of writing one long stem, streamed (StemStream) against whole.

Each case runs in a fresh Python process, twice:

- streamed: the stem is made block by block (`--block-seconds`, like the chunk engine's final spans) and
  each block goes to a StemStream at once; no one holds the whole stem.
- whole: the stem is made whole first, then resampled whole and encoded in one pass at the gain from its
  whole peak: what the whole-stem writer did before every write streamed (built here from
  soxr over the whole stem and separation.audio.encoders).

Both feed a StemMeter. The figures: peak - baseline RSS of the write (VmHWM after it minus VmRSS just
before, the peak reset through /proc/self/clear_refs; the whole write's baseline already holds the stem),
the stem's size as float32, CPU and wall seconds of the write (CPU: this process and its ffmpeg; making
the blocks is left out), and whether both wrote the same bytes and the same StemFigures.

    .venv/bin/python benchmarks/encode_memory.py [--minutes 10] [--block-seconds 8] [--cases 0 3] [--smoke]

`--cases N ...`: only these cases (numbered from 0 as listed in CASES). `--smoke`: a 1.2 s stem (one
block), the first and the last case.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.smoke import add_smoke_option, parse_with_smoke  # noqa: E402
from fixtures.requests import output_settings
from fixtures.signals import resample_whole
from separation.audio.encoders import BLOCK_FRAMES, open_encoder  # noqa: E402
from separation.audio.samplerate import SAMPLE_RATE  # noqa: E402
from separation.audio.stem_figures import StemMeter, sample_peak  # noqa: E402
from separation.audio.stem_file import RESCALE_PEAK_DBFS, StemStream, stem_file_name  # noqa: E402

CASES = {  # label -> (settings, level: the stem's peak is about this)
    "WAV 24-bit @ 48 kHz, clipping": (output_settings(output_format="wav", sample_rate=48000), 1.4),
    "WAV 24-bit @ 48 kHz, quiet": (output_settings(output_format="wav", sample_rate=48000), 0.8),
    "MP3 320k @ 44.1 kHz, clipping": (output_settings(output_format="mp3", mp3_bitrate=320), 1.4),
    "MP3 320k @ 44.1 kHz, quiet": (output_settings(output_format="mp3", mp3_bitrate=320), 0.8),
}


def song_block(start: int, frames: int, level: float) -> np.ndarray:
    """float32 [2, frames] of a generated song from sample `start` on, peaking near `level`: a tone, a
    bass line and noise hits, different per channel; the same samples however the song is cut."""
    t = (start + np.arange(frames)) / SAMPLE_RATE
    hits = np.exp(-((t % 0.5) * 30))  # a hit every half second
    noise = np.clip(np.random.default_rng(start).standard_normal((2, frames)), -3, 3) / 3
    block = np.stack(
        [
            0.6 * np.sin(2 * np.pi * 220 * t) + 0.25 * np.sin(2 * np.pi * 55 * (1 + (t // 2) % 4 / 4) * t),
            0.6 * np.sin(2 * np.pi * 330 * t) + 0.25 * np.sin(2 * np.pi * 82.5 * t),
        ]
    )
    return (level * (block + 0.15 * noise * hits)).astype(np.float32)


def rss_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, KiB (VmRSS: now, VmHWM: peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (ffmpeg)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def child(label: str, mode: str, minutes: float, block_seconds: float, out_dir: Path) -> dict:
    """Write the case's stem one way; its figures."""
    settings, level = CASES[label]
    frames = round(minutes * 60 * SAMPLE_RATE)
    block_frames = round(block_seconds * SAMPLE_RATE)
    starts = range(0, frames, block_frames)
    meter = StemMeter(settings.sample_rate)
    making_cpu = making_wall = 0.0  # spent making the streamed blocks: left out
    if mode == "whole":
        stem = np.empty((2, frames), np.float32)  # [2, frames]
        for start in starts:
            stem[:, start : start + block_frames] = song_block(
                start, min(block_frames, frames - start), level
            )
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    baseline_kib = rss_kib("VmRSS")
    started_cpu, started = cpu_seconds(), time.perf_counter()
    if mode == "streamed":
        with StemStream("stem", out_dir, settings, frames, meter) as stream:
            for start in starts:
                making, making_started = time.process_time(), time.perf_counter()
                block = song_block(start, min(block_frames, frames - start), level)  # [2, n]
                making_cpu += time.process_time() - making
                making_wall += time.perf_counter() - making_started
                stream.write(block)
            path = stream.close()
    else:
        audio = resample_whole(stem, SAMPLE_RATE, settings.sample_rate)  # [2, samples at the output rate]
        with open_encoder(out_dir / stem_file_name("stem", settings.output_format), settings) as encoder:
            limit, peak = encoder.full_scale, sample_peak(audio)
            gain = 10 ** (RESCALE_PEAK_DBFS / 20) / peak if limit is not None and peak > limit else 1.0
            encoder.write(audio, gain)
            path = encoder.path
        for start in range(0, audio.shape[1], BLOCK_FRAMES):  # as the whole-stem writer fed it
            meter.add(audio[:, start : start + BLOCK_FRAMES])
        meter.gain = gain
    cpu = cpu_seconds() - started_cpu - making_cpu
    return {
        "peak_mib": (rss_kib("VmHWM") - baseline_kib) / 1024,
        "cpu_s": cpu,
        "wall_s": time.perf_counter() - started - making_wall,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "figures": meter.figures(-14.0).as_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the stem")
    parser.add_argument("--block-seconds", type=float, default=8.0, help="streamed block length")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=int, nargs="+", help="case numbers (default: all)")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"minutes": 0.02, "cases": [0, len(CASES) - 1]})
    if args.child:
        print(json.dumps(child(*args.child, args.minutes, args.block_seconds, args.out_dir)))
        return

    stem_mib = 2 * 4 * round(args.minutes * 60 * SAMPLE_RATE) / 2**20
    print(f"\nOne {args.minutes:g}-minute stereo stem; as float32 at 44.1 kHz it is {stem_mib:.0f} MiB")
    print(
        f"(streamed in {args.block_seconds:g} s blocks; CPU = this process + ffmpeg, {os.cpu_count()} cores)"
    )
    header = f"{'case':<31} {'write':<9} {'peak-base MiB':>13} {'% of stem':>9} {'CPU s':>7} {'wall s':>7}"
    print(header)
    labels = list(CASES)
    for label in labels if args.cases is None else [labels[number] for number in args.cases]:
        runs = {}
        for mode in ("streamed", "whole"):
            with tempfile.TemporaryDirectory() as work:
                command = [sys.executable, __file__, "--child", label, mode, "--out-dir", work]
                command += ["--minutes", str(args.minutes), "--block-seconds", str(args.block_seconds)]
                runs[mode] = json.loads(
                    subprocess.run(command, capture_output=True, check=True, text=True).stdout
                )
            run = runs[mode]
            print(
                f"{label:<31} {mode:<9} {run['peak_mib']:>13.1f} {100 * run['peak_mib'] / stem_mib:>8.1f}%"
                f" {run['cpu_s']:>7.2f} {run['wall_s']:>7.2f}"
            )
        same = runs["streamed"]["sha256"] == runs["whole"]["sha256"]
        same_figures = runs["streamed"]["figures"] == runs["whole"]["figures"]
        whole_cpu = runs["whole"]["cpu_s"]
        ratio = runs["streamed"]["cpu_s"] / whole_cpu if whole_cpu else float("nan")  # nan: below the timer
        print(f"{'':<31} streamed/whole CPU {ratio:.2f}; same bytes: {same}; same figures: {same_figures}")


if __name__ == "__main__":
    main()
