"""Benchmark audio I/O: encode (write_stem), decode (decode_audio) and resample a generated stereo track.

Prints, per format, seconds of processing per minute of audio and the peak memory the stage allocated in
this process (tracemalloc, which sees numpy arrays; ffmpeg's own memory, in its child process, is not
included). Then it puts the I/O of a typical request (decode the upload, write
two stems) beside a GPU separation time (`--gpu-seconds`, default 42 s: README's T4 estimate for the
BS-RoFormer stage on a 5-minute song; it measured 3.7 s on an H100). These are CPU costs; how much of
them a request waits for after the GPU is done is the `write` stage of `benchmarks/pipeline.py`.

    .venv/bin/python benchmarks/audio_io.py [--minutes 5] [--gpu-seconds 42] [--smoke]

`--smoke`: a 1.2 s track.
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.smoke import add_smoke_option, parse_with_smoke  # noqa: E402
from fixtures.requests import MAX_DURATION_SECONDS, output_settings
from fixtures.signals import resample_whole
from separation.audio.decode import decode_audio  # noqa: E402
from separation.audio.samplerate import SAMPLE_RATE  # noqa: E402
from separation.audio.stem_file import write_stem  # noqa: E402

ENCODINGS = {  # label -> settings for write_stem
    "WAV 16-bit": output_settings(output_format="wav", wav_bit_depth="16"),
    "WAV 24-bit": output_settings(output_format="wav", wav_bit_depth="24"),
    "WAV 32-bit float": output_settings(output_format="wav", wav_bit_depth="32-float"),
    "WAV 24-bit @ 48 kHz": output_settings(output_format="wav", wav_bit_depth="24", sample_rate=48000),
    "FLAC 24-bit": output_settings(output_format="flac", wav_bit_depth="24"),
    "MP3 320k": output_settings(output_format="mp3", mp3_bitrate=320),
}
TRANSCODES = {  # label -> (file name, ffmpeg codec options), made from the 16-bit WAV outside the timing
    "M4A/AAC 256k": ("song.m4a", ("-c:a", "aac", "-b:a", "256k")),
    "Opus 160k (48 kHz)": ("song.opus", ("-c:a", "libopus", "-b:a", "160k")),
    "OGG Vorbis q6": ("song.ogg", ("-c:a", "libvorbis", "-q:a", "6")),
}


def make_song(minutes: float, seed: int = 0) -> np.ndarray:
    """float32 [2, samples] at SAMPLE_RATE: chords, a bass line and noise hits, different per channel."""
    rng = np.random.default_rng(seed)
    samples = round(minutes * 60 * SAMPLE_RATE)
    t = np.arange(samples) / SAMPLE_RATE
    song = np.zeros((2, samples))
    for channel in range(2):
        for freq_hz in rng.uniform(110, 1760, size=6):
            song[channel] += 0.05 * np.sin(2 * np.pi * freq_hz * t + rng.uniform(0, 2 * np.pi))
        song[channel] += 0.15 * np.sin(2 * np.pi * 55 * (1 + (t // 2) % 4 / 4) * t)
    hits = rng.standard_normal((2, samples)) * np.exp(-((t % 0.5) * 30))  # a hit every half second
    song += 0.2 * hits
    return (0.9 * song / np.abs(song).max()).astype(np.float32)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (ffmpeg)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def measure(stage: Callable[[], object]) -> tuple[float, float, float, object]:
    """Run `stage` once; return (wall seconds, CPU seconds, peak MiB allocated meanwhile, result)."""
    tracemalloc.start()
    started, started_cpu = time.perf_counter(), cpu_seconds()
    result = stage()
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - started_cpu
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, cpu, peak_mib, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the generated track")
    parser.add_argument("--gpu-seconds", type=float, default=42.0, help="GPU separation time to compare with")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"minutes": 0.02})

    song = make_song(args.minutes)  # [2, samples]
    minutes = song.shape[1] / SAMPLE_RATE / 60
    rows = []  # (stage, format, wall s/min, CPU s/min, peak MiB)
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        files = {}
        for index, (label, settings) in enumerate(ENCODINGS.items()):
            seconds, cpu, peak_mib, files[label] = measure(
                lambda s=settings, n=f"stem_{index}": write_stem(song, n, work_dir, s)
            )
            rows.append(("encode", label, seconds / minutes, cpu / minutes, peak_mib))
        for label, (file_name, codec_args) in TRANSCODES.items():
            files[label] = work_dir / file_name
            subprocess.run(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    str(files["WAV 16-bit"]),
                    *codec_args,
                    str(files[label]),
                ],
                check=True,
            )
        for label, path in files.items():
            seconds, cpu, peak_mib, _ = measure(
                lambda p=path: decode_audio(p, max_duration_seconds=MAX_DURATION_SECONDS)
            )
            rows.append(("decode", label, seconds / minutes, cpu / minutes, peak_mib))
    song_48k = resample_whole(song, SAMPLE_RATE, 48000)
    for label, stage in {
        "44.1 -> 48 kHz": lambda: resample_whole(song, SAMPLE_RATE, 48000),
        "48 -> 44.1 kHz": lambda: resample_whole(song_48k, 48000, SAMPLE_RATE),
    }.items():
        seconds, cpu, peak_mib, _ = measure(stage)
        rows.append(("resample", label, seconds / minutes, cpu / minutes, peak_mib))

    print(f"\nAudio I/O on a generated {minutes:.1f}-minute stereo track at {SAMPLE_RATE} Hz")
    print(f"(wall time depends on machine load; CPU time = this process + ffmpeg, {os.cpu_count()} cores)")
    print(f"{'stage':<9} {'format':<22} {'wall s/min':>10} {'CPU s/min':>10} {'peak MiB':>9}")
    for stage, label, wall_per_minute, cpu_per_minute, peak_mib in rows:
        print(f"{stage:<9} {label:<22} {wall_per_minute:>10.3f} {cpu_per_minute:>10.3f} {peak_mib:>9.0f}")
    max_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of this process (the song plus every stage): {max_rss_mib:.0f} MiB")

    print(f"\nA request: decode the upload + write 2 stems, vs {args.gpu_seconds:g} s of GPU separation")
    print("(CPU time approximates an unloaded machine; wall time includes this machine's load)")
    print(f"{'upload':<14} {'stems as':<12} {'wall s':>7} {'% of GPU':>9} {'CPU s':>7} {'% of GPU':>9}")
    totals = {(stage, label): (wall * minutes, cpu * minutes) for stage, label, wall, cpu, _ in rows}
    for upload in ("MP3 320k", "WAV 16-bit", "M4A/AAC 256k"):
        for output in ("WAV 24-bit", "FLAC 24-bit", "MP3 320k"):
            wall, cpu = (totals["decode", upload][i] + 2 * totals["encode", output][i] for i in (0, 1))
            print(
                f"{upload:<14} {output:<12} {wall:>7.2f} {100 * wall / args.gpu_seconds:>8.1f}%"
                f" {cpu:>7.2f} {100 * cpu / args.gpu_seconds:>8.1f}%"
            )


if __name__ == "__main__":
    main()
