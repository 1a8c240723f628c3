"""Encoding: a stem becomes a WAV, FLAC or MP3 file block by block (`StemStream`), or whole (`write_stem`).

A stem arrives as float32 [2, n] blocks at SAMPLE_RATE, in order, while it is still being computed. Each
block is resampled to the output rate (soxr VHQ as a stream: sample for sample what resampling the whole
stem gives), measured (`StemMeter`) and encoded at once, at gain 1 (separation.encoders). Nothing
stem-sized is held in memory: the block in hand, soxr's state and the encoders' blocks of BLOCK_FRAMES.

Integer formats and MP3 never wrap around: a stem whose peak exceeds the format's full scale is scaled down
to a peak of RESCALE_PEAK_DBFS (logged). Whether that is needed is known only once the whole stem has been
seen, so in those formats a stream also spools its samples, float32 at the output rate, to an anonymous
file in the system temporary directory: 8 bytes per stereo frame at the output rate (a 10-minute stem:
212 MB at 44.1 kHz, 230 MB at 48 kHz), on local disk, gone when the stream closes or aborts (the system
removes it should the process die). The first sample beyond full scale stops the encoding at gain 1 (that
file would be thrown away); at close the stem is encoded from its spool, block by block, at its final
gain. 32-bit float WAV keeps every value as it is and spools nothing.

However a stem is cut into blocks, its file is byte for byte the one written by resampling the whole stem,
taking the gain from the whole stem's peak and encoding it in one go (tests/test_encode.py).
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SettingsError
from .encoders import BLOCK_FRAMES, OutputSettings, full_scale, open_encoder
from .samplerate import SAMPLE_RATE, StreamResampler
from .stem_figures import StemMeter, sample_peak

logger = logging.getLogger(__name__)

RESCALE_PEAK_DBFS = -0.1  # the peak of a stem that is scaled down to avoid clipping
_SPOOL_FRAME_BYTES = 8  # a stereo frame of float32


def write_stem(
    stem, stem_name: str, out_dir: Path, settings: OutputSettings, meter: StemMeter | None = None
) -> Path:
    """Write a whole stem to `out_dir/<stem_name>.<ext>` and return that path: a StemStream given the stem
    as its one block, float32 [2, samples] at SAMPLE_RATE (numpy, or anything np.asarray accepts, e.g. a
    CPU tensor). A write that fails leaves no file behind."""
    audio = np.asarray(stem, dtype=np.float32)  # [2, samples]
    with StemStream(stem_name, out_dir, settings, audio.shape[-1], meter) as stream:
        stream.write(audio)
        return stream.close()


class StemStream:
    """A stem file written block by block while the stem is still being computed, at any output rate.

    `write(block)` takes the stem's float32 [2, n] blocks at SAMPLE_RATE in order, of any sizes (a block
    longer than BLOCK_FRAMES is taken BLOCK_FRAMES at a time); `close()` finishes the file once all
    `frames` frames (at SAMPLE_RATE) were written, rescaling it from the spool where its peak exceeded the
    format's full scale, and returns its path. A `meter` is given the samples at the output rate as they
    go to the encoder, and at close the gain the stem was scaled by.

    Leaving a `with` block without close(), or abort(), stops the encoder and removes the partial file and
    the spool.
    """

    def __init__(
        self,
        stem_name: str,
        out_dir: Path,
        settings: OutputSettings,
        frames: int,
        meter: StemMeter | None = None,
    ):
        self.stem_name, self.settings, self.frames, self.meter = stem_name, settings, frames, meter
        self.path = _stem_path(stem_name, out_dir, settings)
        self._resampler = None
        if settings.sample_rate != SAMPLE_RATE:
            self._resampler = StreamResampler(SAMPLE_RATE, settings.sample_rate, channels=2)
        # the file at gain 1; None once the stem went beyond full scale: it is then written at close
        self._encoder = open_encoder(self.path, settings)
        self._full_scale = self._encoder.full_scale
        # float32 [frames, 2] at the output rate, unscaled: what a rescale encodes again
        self._spool = None
        if self._full_scale is not None:
            try:
                self._spool = tempfile.TemporaryFile(prefix=f"spool-{stem_name}-")
            except BaseException:
                self._encoder.abort()
                raise
        self._peak = 0.0  # of the samples at the output rate so far, before scaling and clipping
        self._frames_written = 0  # at SAMPLE_RATE
        self._open = True

    def __enter__(self) -> StemStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()

    def write(self, block) -> None:
        """Encode the stem's next float32 [2, n] block at SAMPLE_RATE (finite samples: the pipeline checks
        each model's output); ValueError for a bad shape (then nothing of the block is written)."""
        audio = _checked_stem(block, self.stem_name)  # [2, n]
        self._frames_written += audio.shape[1]
        for start in range(0, audio.shape[1], BLOCK_FRAMES):
            piece = audio[:, start : start + BLOCK_FRAMES]  # [2, <= BLOCK_FRAMES] at SAMPLE_RATE
            self._encode(piece if self._resampler is None else self._resampler.resample(piece))

    def close(self) -> Path:
        """Finish the file; rescale it from the spool if it would clip. Returns the path. ValueError (and no
        file) unless exactly `frames` frames were written."""
        if self._frames_written != self.frames:
            self.abort()
            raise ValueError(
                f"stem {self.stem_name!r}: {self._frames_written} frames were streamed, not {self.frames}"
            )
        try:
            if self._resampler is not None:
                self._encode(self._resampler.flush())  # the filter's delay
            if self._encoder is not None:
                self._encoder.finish()
            else:
                self._rescale()
        except BaseException:
            self.abort()
            raise
        self._open = False
        if self._spool is not None:
            self._spool.close()
        return self.path

    def abort(self) -> None:
        """Stop the encoder, remove the partial file and the spool; a no-op once close() has succeeded (a
        finished file is not partial)."""
        if self._open:
            self._open = False
            if self._encoder is not None:
                self._encoder.abort()
            if self._spool is not None:
                self._spool.close()

    def _encode(self, audio: np.ndarray) -> None:
        """Encode float32 [2, m] at the output rate at gain 1 while the stem fits full scale; spool and
        measure it."""
        self._peak = max(self._peak, sample_peak(audio))
        if self._encoder is not None and self._full_scale is not None and self._peak > self._full_scale:
            self._encoder.abort()  # this stem is rescaled: the file is written from the spool at close
            self._encoder = None
        if self._encoder is not None:
            self._encoder.write(audio, 1.0)
        if self._spool is not None:
            self._spool.write(np.ascontiguousarray(audio.T))  # [m, 2]
        if self.meter is not None:
            self.meter.add(audio)

    def _rescale(self) -> None:
        """Write the file from the spool, scaled to a peak of RESCALE_PEAK_DBFS (logged)."""
        gain = 10 ** (RESCALE_PEAK_DBFS / 20) / self._peak
        logger.info(
            "Stem '%s' peaks at %+.2f dBFS; scaled by %.2f dB to avoid clipping",
            self.stem_name,
            20 * math.log10(self._peak),
            20 * math.log10(gain),
        )
        self._spool.seek(0)
        with open_encoder(self.path, self.settings) as encoder:
            while data := self._spool.read(BLOCK_FRAMES * _SPOOL_FRAME_BYTES):
                frames = np.frombuffer(data, dtype=np.float32).reshape(-1, 2)  # [frames, 2]
                encoder.write(frames.T, gain)
        if self.meter is not None:
            self.meter.gain = gain


def check_spool_space(stems: int, frames: int, settings: OutputSettings) -> None:
    """SettingsError unless the system's temporary folder has room for the spools of `stems` stems of
    `frames` frames at SAMPLE_RATE in this output format (none for 32-bit float WAV)."""
    if full_scale(settings) is None:
        return
    output_frames = math.ceil(frames * settings.sample_rate / SAMPLE_RATE)
    needed_bytes = stems * output_frames * _SPOOL_FRAME_BYTES
    free_bytes = shutil.disk_usage(tempfile.gettempdir()).free
    if needed_bytes > free_bytes:
        raise SettingsError(
            f"{stems} stems of this song need {needed_bytes / 1e9:.1f} GB of temporary disk while they are "
            f"written ({_SPOOL_FRAME_BYTES} bytes per stereo frame each); {free_bytes / 1e9:.1f} GB are "
            "free. Ask for fewer stems, choose wav_bit_depth=32-float (no spool), or send a shorter song."
        )


def stem_file_name(stem_name: str, file_format: str) -> str:
    """`<stem_name>.<format>`: the name of every stem file; ValueError unless the stem name is a safe file
    name."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", stem_name):
        raise ValueError(
            f"stem name {stem_name!r} must be letters, digits, '_' or '-' (it becomes a file name)"
        )
    return f"{stem_name}.{file_format}"


def _stem_path(stem_name: str, out_dir: Path, settings: OutputSettings) -> Path:
    """`out_dir/<stem_name>.<ext>`, creating out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / stem_file_name(stem_name, settings.output_format)


def _checked_stem(stem, stem_name: str) -> np.ndarray:
    """float32 [2, samples] view of `stem`; ValueError for a bad shape."""
    audio = np.asarray(stem, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] != 2:
        raise ValueError(f"stem {stem_name!r} must be [2, samples], got shape {list(audio.shape)}")
    return audio
