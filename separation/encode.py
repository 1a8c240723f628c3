"""Encoding: stems as WAV, FLAC or MP3 files, whole (`write_stem`) or block by block (`StemStream`).

`write_stem` writes `<out_dir>/<stem_name>.<ext>`. Integer formats and MP3 never wrap around: a stem whose
peak exceeds the format's full scale is scaled down to a peak of -0.1 dBFS (logged). 32-bit float WAV keeps
every value as it is. `StemStream` writes the same file while the stem is still being computed, block by
block at the models' rate; only a stem that needs that rescale is written a second time, whole, when it is
complete.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import SeparationError, SettingsError
from .ffmpeg import FFMPEG_QUIET, missing_tool_error, short_reason
from .samplerate import SAMPLE_RATE, resample
from .settings import OutputSettings
from .stem_report import StemMeter, sample_peak

logger = logging.getLogger(__name__)

RESCALE_PEAK_DBFS = -0.1  # the peak of a stem that is scaled down to avoid clipping
_WRITE_BLOCK_FRAMES = 1 << 20  # about 24 s at 44.1 kHz: 8 MiB of float32 stereo


def write_stem(
    stem, stem_name: str, out_dir: Path, settings: OutputSettings, meter: StemMeter | None = None
) -> Path:
    """Write one stem to `out_dir/<stem_name>.<ext>` and return that path.

    `stem`: float32 [2, samples] at SAMPLE_RATE (numpy, or anything np.asarray accepts, e.g. a CPU tensor).
    It is resampled to `settings.sample_rate` with soxr VHQ; a stem that peaks above the format's full scale
    is scaled down to RESCALE_PEAK_DBFS (every format except 32-bit float WAV). Samples are converted and
    written in blocks of `_WRITE_BLOCK_FRAMES`, so encoding holds no second copy of a long stem. A write
    that fails leaves no file behind. A `meter` is given the samples at the output rate and the gain.
    """
    audio = _checked_stem(stem, stem_name)  # [2, samples]
    path = _stem_path(stem_name, out_dir, settings)
    audio = resample(audio, SAMPLE_RATE, settings.sample_rate)
    gain = _encode_whole(audio, stem_name, path, settings)
    if meter is not None:
        for start in range(0, audio.shape[1], _WRITE_BLOCK_FRAMES):  # no track-sized filtered copy
            meter.add(audio[:, start : start + _WRITE_BLOCK_FRAMES])
        meter.gain = gain
    return path


def _encode_whole(audio: np.ndarray, stem_name: str, path: Path, settings: OutputSettings) -> float:
    """Encode float32 [2, samples] at the output rate to `path`, scaled down if it would clip; the gain."""
    full_scale = _full_scale(settings)
    gain = 1.0 if full_scale is None else _peak_gain(audio, full_scale, stem_name)
    with _open_encoder(path, settings) as encoder:
        encoder.write(audio, gain)
    return gain


class StemStream:
    """A stem file written block by block while the stem is still being computed, at SAMPLE_RATE only.

    `write(block)` takes the stem's float32 [2, n] blocks at SAMPLE_RATE in order and encodes them at gain
    1, tracking the peak; `close(whole_stem)` finishes the file once all `frames` frames were written: it is
    then the file write_stem writes for the same samples. Where the peak exceeded the format's full scale,
    close asks for the whole stem (`whole_stem()`, float32 [2, frames]) and rewrites the file as write_stem
    does, scaled down. A `meter` is given every block and the gain. Other output rates are not streamed
    (the constructor raises SettingsError): write_stem resamples the whole stem.

    Leaving a `with` block without close(), or abort(), stops the encoder and removes the partial file.
    """

    def __init__(
        self,
        stem_name: str,
        out_dir: Path,
        settings: OutputSettings,
        frames: int,
        meter: StemMeter | None = None,
    ):
        if settings.sample_rate != SAMPLE_RATE:
            raise SettingsError(
                f"stems are streamed at {SAMPLE_RATE} Hz only, not {settings.sample_rate} Hz; "
                "write the whole stem with write_stem"
            )
        self.stem_name, self.settings, self.frames, self.meter = stem_name, settings, frames, meter
        self.path = _stem_path(stem_name, out_dir, settings)
        self._encoder = _open_encoder(self.path, settings)
        self._peak = 0.0  # of the samples written so far, before clipping
        self._frames_written = 0
        self._open = True

    def __enter__(self) -> StemStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()

    def write(self, block) -> None:
        """Encode the stem's next float32 [2, n] block; ValueError for a bad shape or non-finite samples."""
        audio = _checked_stem(block, self.stem_name)
        self._peak = max(self._peak, sample_peak(audio))
        self._encoder.write(audio, 1.0)
        self._frames_written += audio.shape[1]
        if self.meter is not None:
            self.meter.add(audio)

    def close(self, whole_stem: Callable[[], np.ndarray]) -> Path:
        """Finish the file; `whole_stem()` is called only when the stem must be rescaled. Returns the path."""
        if self._frames_written != self.frames:
            self.abort()
            raise ValueError(
                f"stem {self.stem_name!r}: {self._frames_written} frames were streamed, not {self.frames}"
            )
        self._open = False
        self._encoder.finish()
        full_scale = self._encoder.full_scale
        if full_scale is not None and self._peak > full_scale:
            gain = _encode_whole(
                _checked_stem(whole_stem(), self.stem_name), self.stem_name, self.path, self.settings
            )
            if self.meter is not None:  # it has measured the samples already
                self.meter.gain = gain
        return self.path

    def abort(self) -> None:
        """Stop the encoder and remove the partial file; a no-op once close() has begun (close cleans up
        after itself, and a finished file is not partial)."""
        if self._open:
            self._open = False
            self._encoder.abort()


def _stem_path(stem_name: str, out_dir: Path, settings: OutputSettings) -> Path:
    """`out_dir/<stem_name>.<ext>`, creating out_dir; ValueError unless the name is a safe file name."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", stem_name):
        raise ValueError(
            f"stem name {stem_name!r} must be letters, digits, '_' or '-' (it becomes a file name)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{stem_name}.{settings.extension}"


def _checked_stem(stem, stem_name: str) -> np.ndarray:
    """float32 [2, samples] view of `stem`; ValueError for a bad shape or non-finite samples."""
    audio = np.asarray(stem, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] != 2:
        raise ValueError(f"stem {stem_name!r} must be [2, samples], got shape {list(audio.shape)}")
    if not np.isfinite(audio).all():
        raise ValueError(f"stem {stem_name!r} contains NaN or infinite samples")
    return audio


def _pcm_bits(settings: OutputSettings) -> int | None:
    """Bits per integer sample of a WAV or FLAC file; None for float WAV and for MP3."""
    if settings.format == "mp3" or (settings.format == "wav" and settings.wav_bit_depth == "32-float"):
        return None
    return 16 if settings.wav_bit_depth == "16" else 24


def _full_scale(settings: OutputSettings) -> float | None:
    """The largest sample value a stem file holds: the largest integer sample for WAV and FLAC, 1.0 for
    MP3 (LAME's float input), None (no limit) for 32-bit float WAV."""
    bits = _pcm_bits(settings)
    if bits is not None:
        return (2 ** (bits - 1) - 1) / 2 ** (bits - 1)
    return 1.0 if settings.format == "mp3" else None


def _peak_gain(audio: np.ndarray, full_scale: float, stem_name: str) -> float:
    """1, or the gain that brings the peak of float32 [2, samples] to RESCALE_PEAK_DBFS where it exceeds
    +-full_scale (logged)."""
    peak = sample_peak(audio)
    if peak <= full_scale:
        return 1.0
    gain = 10 ** (RESCALE_PEAK_DBFS / 20) / peak
    logger.info(
        "Stem '%s' peaks at %+.2f dBFS; scaled by %.2f dB to avoid clipping",
        stem_name,
        20 * math.log10(peak),
        20 * math.log10(gain),
    )
    return gain


def _float_blocks(audio: np.ndarray, gain: float, full_scale: float | None) -> Iterator[np.ndarray]:
    """Interleaved float32 [frames, 2] blocks of `audio` [2, samples] times `gain`, clipped to +-full_scale
    (no clipping where `full_scale` is None)."""
    for start in range(0, audio.shape[1], _WRITE_BLOCK_FRAMES):
        block = audio[:, start : start + _WRITE_BLOCK_FRAMES].T * np.float32(gain)  # [frames, 2], a copy
        if full_scale is not None:
            np.clip(block, -full_scale, full_scale, out=block)
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


class _Encoder:
    """A stem file being written: float32 [2, samples] in, samples clipped at `full_scale` (if any).

    As a context manager it finishes the file on success and aborts (no file left) on an exception.
    """

    def __init__(self, path: Path, settings: OutputSettings):
        self.path = path
        self.full_scale = _full_scale(settings)

    def __enter__(self) -> _Encoder:
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


def _open_encoder(path: Path, settings: OutputSettings) -> _Encoder:
    return _Mp3Encoder(path, settings) if settings.format == "mp3" else _SoundFileEncoder(path, settings)


class _SoundFileEncoder(_Encoder):
    """WAV (16 or 24-bit integer, 32-bit float) or FLAC (16 or 24-bit) through libsndfile."""

    def __init__(self, path: Path, settings: OutputSettings):
        super().__init__(path, settings)
        self._bits = _pcm_bits(settings)
        subtype = "FLOAT" if self._bits is None else f"PCM_{self._bits}"
        container = settings.format.upper()
        self._file = sf.SoundFile(path, "w", settings.sample_rate, 2, subtype=subtype, format=container)

    def _write_frames(self, frames: np.ndarray) -> None:
        self._file.write(frames if self._bits is None else _to_pcm(frames, self._bits))

    def finish(self) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class _Mp3Encoder(_Encoder):
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
