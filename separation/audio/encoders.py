"""WAV, FLAC and MP3 encoders: float32 stereo at the output rate in, one file out, block by block.

`open_encoder(path, settings)` starts the file; `Encoder.write(audio, gain)` appends [2, samples] times a
gain, clipped at the format's full scale (`full_scale`), converted `BLOCK_FRAMES` at a time; `finish()`
completes the file, `abort()` removes it. How the samples are cut into write() calls never shows in the
file: libsndfile and ffmpeg's raw-PCM demuxer buffer them in sizes of their own.
"""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import SeparationError
from .ffmpeg import FFMPEG_QUIET, missing_tool_error, short_reason

BLOCK_FRAMES = 1 << 20  # about 24 s at 44.1 kHz: 8 MiB of float32 stereo
OUTPUT_FORMATS = ("wav", "mp3", "flac")
WAV_BIT_DEPTHS = ("16", "24", "32-float")  # strings: the choices of one input, "32-float" among them
MP3_BITRATES = (128, 192, 256, 320)  # kbit/s
OUTPUT_SAMPLE_RATES = (44100, 48000)  # Hz


@dataclass(frozen=True)
class OutputSettings:
    """How stems are written: a request's output inputs (`Request.output`, checked there). FLAC has no
    float samples, so wav_bit_depth "32-float" gives 24-bit FLAC."""

    output_format: str  # one of OUTPUT_FORMATS
    sample_rate: int  # Hz, one of OUTPUT_SAMPLE_RATES
    wav_bit_depth: str  # one of WAV_BIT_DEPTHS
    mp3_bitrate: int  # kbit/s, constant bit rate, one of MP3_BITRATES


def _pcm_bits(settings: OutputSettings) -> int | None:
    """Bits per integer sample of a WAV or FLAC file; None for float WAV and for MP3."""
    if settings.output_format == "mp3" or (
        settings.output_format == "wav" and settings.wav_bit_depth == "32-float"
    ):
        return None
    return 16 if settings.wav_bit_depth == "16" else 24


def full_scale(settings: OutputSettings) -> float | None:
    """The largest sample value a stem file holds: the largest integer sample for WAV and FLAC, 1.0 for
    MP3 (LAME's float input), None (no limit) for 32-bit float WAV."""
    bits = _pcm_bits(settings)
    if bits is not None:
        return (2 ** (bits - 1) - 1) / 2 ** (bits - 1)
    return 1.0 if settings.output_format == "mp3" else None


def _float_blocks(audio: np.ndarray, gain: float, limit: float | None) -> Iterator[np.ndarray]:
    """Interleaved float32 [frames, 2] blocks of `audio` [2, samples] times `gain`, clipped to +-limit
    (no clipping where `limit` is None)."""
    for start in range(0, audio.shape[1], BLOCK_FRAMES):
        block = audio[:, start : start + BLOCK_FRAMES].T * np.float32(gain)  # [frames, 2], a copy
        if limit is not None:
            np.clip(block, -limit, limit, out=block)
        yield np.ascontiguousarray(block)


def _to_pcm(block: np.ndarray, bits: int) -> np.ndarray:
    """float32 [frames, 2] within [-1, 1) -> integer [frames, 2] for soundfile.

    16 bits: int16. 24 bits: int32 holding the sample in its top 24 bits, which is what libsndfile writes
    for PCM_24. Rounds to nearest without dither, so a float sample survives a 24-bit round trip within
    half a step.
    """
    scale = float(2 ** (bits - 1))
    samples = np.rint(block * np.float32(scale))
    np.clip(samples, -scale, scale - 1, out=samples)
    if bits == 16:
        return samples.astype(np.int16)
    return samples.astype(np.int32) << 8


class Encoder:
    """A stem file being written: float32 [2, samples] in, samples clipped at `full_scale` (if any).

    As a context manager it finishes the file on success and aborts (no file left) on an exception.
    """

    def __init__(self, path: Path, settings: OutputSettings):
        self.path = path
        self.full_scale = full_scale(settings)

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def write(self, audio: np.ndarray, gain: float) -> None:
        """Append float32 [2, samples] times `gain`, clipped at full scale (if any), block by block."""
        for frames in _float_blocks(audio, gain, self.full_scale):
            self._write_frames(frames)

    def _write_frames(self, frames: np.ndarray) -> None:
        """Append interleaved float32 [frames, 2] samples."""
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the file."""
        raise NotImplementedError

    def abort(self) -> None:
        """Stop writing and remove the file."""
        raise NotImplementedError


def open_encoder(path: Path, settings: OutputSettings) -> Encoder:
    """Start `path` in the format of `settings`, at its sample rate; an existing file is replaced."""
    return (
        _Mp3Encoder(path, settings) if settings.output_format == "mp3" else _SoundFileEncoder(path, settings)
    )


class _SoundFileEncoder(Encoder):
    """WAV (16 or 24-bit integer, 32-bit float) or FLAC (16 or 24-bit) through libsndfile."""

    def __init__(self, path: Path, settings: OutputSettings):
        super().__init__(path, settings)
        self._bits = _pcm_bits(settings)
        subtype = "FLOAT" if self._bits is None else f"PCM_{self._bits}"
        container = settings.output_format.upper()
        self._file = sf.SoundFile(path, "w", settings.sample_rate, 2, subtype=subtype, format=container)

    def _write_frames(self, frames: np.ndarray) -> None:
        self._file.write(frames if self._bits is None else _to_pcm(frames, self._bits))

    def finish(self) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class _Mp3Encoder(Encoder):
    """A constant-bit-rate MP3 from ffmpeg's libmp3lame, fed float32 samples through its stdin.

    ffmpeg rather than the `lameenc` package: lameenc takes only 16-bit integer input, so the stem would be
    quantised once before the lossy encoder, while libmp3lame gets the float samples; and ffmpeg writes the
    LAME/Xing header with encoder delay and padding, so decoders return exactly the original samples' span.
    ffmpeg is already required for decoding.
    """

    def __init__(self, path: Path, settings: OutputSettings):
        super().__init__(path, settings)
        _require_ffmpeg_encoder("libmp3lame")
        command = [
            *FFMPEG_QUIET,
            "-f",
            "f32le",
            "-ar",
            str(settings.sample_rate),
            "-ac",
            "2",
            "-i",
            "pipe:0",
            "-c:a",
            "libmp3lame",
            "-b:a",
            f"{settings.mp3_bitrate}k",
            "-f",
            "mp3",
            "-y",
            f"file:{path.absolute()}",
        ]
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg can never block on its own log
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=self._log)
        except OSError:
            self._log.close()
            raise

    def _write_frames(self, frames: np.ndarray) -> None:
        try:
            self._process.stdin.write(frames.tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped early; finish() reports its exit status and log

    def finish(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        returncode = self._process.wait()
        self._log.seek(0)
        reason = self._log.read().decode(errors="replace")
        self._log.close()
        if returncode != 0:
            self.path.unlink(missing_ok=True)
            raise SeparationError(f"Writing {self.path.name} failed: {short_reason(reason, self.path)}")

    def abort(self) -> None:
        self._process.kill()
        with contextlib.suppress(OSError):  # flushing into the killed process's pipe
            self._process.stdin.close()
        self._process.wait()
        self._log.close()
        self.path.unlink(missing_ok=True)


@functools.cache
def _require_ffmpeg_encoder(encoder: str) -> None:
    """SeparationError unless this machine's ffmpeg lists `encoder`."""
    try:
        listing = subprocess.run(
            ["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True
        ).stdout
    except FileNotFoundError:
        raise missing_tool_error("ffmpeg") from None
    if not re.search(rf"^\s*A\S*\s+{encoder}\s", listing, flags=re.MULTILINE):
        raise SeparationError(
            f"This machine's ffmpeg has no '{encoder}' encoder; install an ffmpeg built with it "
            "(Debian's ffmpeg package has it)."
        )
