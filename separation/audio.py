"""Audio in and out: decode any upload to stereo 44.1 kHz float, write stems as WAV, FLAC or MP3.

Decoding (`decode_audio`) treats every file as hostile:

* ffprobe and ffmpeg run with `-protocol_whitelist file` and `-format_whitelist` limited to
  `ACCEPTED_DEMUXERS`, plain audio/video containers that never open another file or URL. Playlists (hls),
  concat lists, DASH manifests, image sequences and the like are refused when the file is opened, before
  their demuxer reads a single entry. The mov demuxer's external data references (`enable_drefs`) stay at
  ffmpeg's default, off.
* Length is bounded twice: the duration the container states is checked before decoding, and the decode
  itself stops one second past the limit (`-t`), so a header that understates the length cannot slip by.
* One deadline covers probe and decode; ffmpeg is killed when it passes.
* ffmpeg decodes the first audio stream to float32 at its own rate; soxr (quality 'VHQ') resamples it to
  `SAMPLE_RATE` while it streams in, so memory never holds the audio at the source rate.

Channels: mono is copied to both channels at the same level. Stereo is kept as is. More than two channels
are downmixed by ffmpeg's `-ac 2` with its standard matrix (5.1: L = FL + 0.707 FC + 0.707 SL/BL,
R = FR + 0.707 FC + 0.707 SR/BR, LFE dropped). The matrix is not normalised, so a loud surround mix may
exceed 1.0; the float pipeline keeps those values.

Encoding (`write_stem`) writes `<out_dir>/<stem_name>.<ext>`. Integer formats and MP3 never wrap around:
a stem whose peak exceeds the format's full scale is either scaled down to a peak of -0.1 dBFS (clip policy
"rescale", logged) or hard-clipped ("clamp"). 32-bit float WAV keeps every value as it is. `StemStream`
writes the same file while the stem is still being computed, block by block at 44.1 kHz; only a stem that
needs "rescale" is written a second time, whole, when it is complete.
"""

import contextlib
import functools
import json
import logging
import math
import re
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from separation.errors import AudioError, SeparationError, SettingsError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 44100  # the models' rate
OUTPUT_FORMATS = ("wav", "mp3", "flac")
WAV_BIT_DEPTHS = ("16", "24", "32-float")  # strings (they are Cog choices)
MP3_BITRATES = (128, 192, 256, 320)
OUTPUT_SAMPLE_RATES = (44100, 48000)
CLIP_POLICIES = ("rescale", "clamp")

# ffmpeg demuxers an upload may use: audio and audio/video containers that read only the file they are given.
ACCEPTED_DEMUXERS = (
    "aac", "ac3", "aiff", "amr", "ape", "asf", "avi", "caf", "dts", "eac3", "flac",
    "matroska", "mov", "mp3", "mpeg", "mpegts", "ogg", "w64", "wav", "wv",
)  # fmt: skip

SOXR_QUALITY = "VHQ"
DECODE_OVERRUN_SECONDS = 1.0  # the decode runs this far past the length limit to prove it was exceeded
TRUNCATION_TOLERANCE_SECONDS = 0.5  # decoded audio may fall this much short of the stated length
RESCALE_PEAK_DBFS = -0.1  # the peak of a stem that "rescale" scales down
FFMPEG_QUIET = ("ffmpeg", "-nostdin", "-hide_banner", "-v", "error")  # errors only, never reads stdin
_DECODE_BLOCK_FRAMES = 65536
_WRITE_BLOCK_FRAMES = 1 << 20  # about 24 s at 44.1 kHz: 8 MiB of float32 stereo
_MAX_WAV_CHUNKS = 1000


def default_timeout_seconds(max_duration_seconds: float) -> float:
    """Deadline for probe + decode: 60 s plus a quarter of the longest allowed audio (510 s for 30 min).

    Decoders run at hundreds of times real time, so only a broken or hostile file comes near this.
    """
    return 60.0 + 0.25 * max_duration_seconds


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float32 audio [channels, samples] from `from_rate` to `to_rate` Hz with soxr VHQ.

    Returns float32 [channels, round(samples * to_rate / from_rate)].
    """
    if from_rate == to_rate:
        return audio
    resampled = soxr.resample(audio.T, from_rate, to_rate, quality=SOXR_QUALITY)  # [samples, channels]
    return np.ascontiguousarray(resampled.T, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True)
class _ProbedStream:
    """What ffprobe says about the file and the audio stream that will be decoded."""

    format_name: str  # ffmpeg's demuxer name list, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    stream_index: int
    codec_name: str
    sample_rate: int
    channels: int
    stream_seconds: float | None  # the audio stream's own stated length; None where unknown or a guess
    container_seconds: float | None  # the whole file's stated length; None where unknown or a guess


def decode_audio(
    path: str | PathLike,
    *,
    max_duration_seconds: float = 1800.0,
    timeout_seconds: float | None = None,
) -> np.ndarray:
    """Decode an audio or video file to float32 [2, samples] at `SAMPLE_RATE`.

    `max_duration_seconds` bounds the audio length; `timeout_seconds` (default
    `default_timeout_seconds(max_duration_seconds)`) bounds the wall time of probe + decode.
    Raises AudioError with a message for the person who uploaded the file.
    """
    path = _checked_input_file(path)
    if timeout_seconds is None:
        timeout_seconds = default_timeout_seconds(max_duration_seconds)
    deadline = _Deadline.start(timeout_seconds)
    stream = _probe(path, deadline)
    _check_stated_length(stream, max_duration_seconds)
    if stream.format_name == "wav":
        _check_wav_header(path)
    audio, source_frames = _decode_stream(path, stream, max_duration_seconds, deadline)
    _check_decoded_length(path, stream, source_frames, max_duration_seconds)
    logger.info(
        "Decoded %s: %s, %s, %d Hz, %d channel(s), %s",
        path.name,
        stream.format_name,
        stream.codec_name,
        stream.sample_rate,
        stream.channels,
        _format_seconds(source_frames / stream.sample_rate),
    )
    return audio


def _checked_input_file(path: str | PathLike) -> Path:
    """Absolute path of an existing, non-empty regular file, else AudioError."""
    path = Path(path).absolute()
    if not path.exists():
        raise AudioError(f"The audio file '{path.name}' was not found.")
    if not path.is_file():
        raise AudioError(f"'{path.name}' is not a regular file; upload an audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"The audio file '{path.name}' is empty (0 bytes).")
    return path


def _input_args(path: Path) -> list[str]:
    """Options that open `path` as the only input: local file protocol and `ACCEPTED_DEMUXERS` only."""
    return [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        ",".join(ACCEPTED_DEMUXERS),
        "-i",
        f"file:{path}",
    ]


@dataclass(frozen=True)
class _Deadline:
    """The wall-clock budget of one decode_audio call (probe + decode)."""

    timeout_seconds: float
    at_monotonic: float

    @classmethod
    def start(cls, timeout_seconds: float) -> "_Deadline":
        return cls(timeout_seconds, time.monotonic() + timeout_seconds)

    def remaining_seconds(self) -> float:
        """Seconds left; raises the timeout AudioError when none are."""
        remaining_seconds = self.at_monotonic - time.monotonic()
        if remaining_seconds <= 0:
            raise self.expired()
        return remaining_seconds

    def expired(self) -> AudioError:
        return AudioError(
            f"Decoding the audio took longer than {self.timeout_seconds:g} s and was stopped; "
            "the file may be damaged. Try converting it to WAV or FLAC first."
        )


def _run_tool(command: list[str], deadline: _Deadline) -> subprocess.CompletedProcess:
    """Run an ffmpeg tool to completion within the deadline; AudioError on timeout."""
    remaining_seconds = deadline.remaining_seconds()
    try:
        return subprocess.run(command, capture_output=True, timeout=remaining_seconds, check=False)
    except subprocess.TimeoutExpired:
        raise deadline.expired() from None
    except FileNotFoundError:
        raise _missing_tool_error(command[0]) from None


def _missing_tool_error(tool: str) -> SeparationError:
    return SeparationError(
        f"'{tool}' is not installed on this machine; install ffmpeg (it provides ffprobe too)."
    )


def _probe(path: Path, deadline: _Deadline) -> _ProbedStream:
    """Ask ffprobe for the container format and the first audio stream; AudioError where unusable."""
    result = _run_tool(
        [
            "ffprobe",
            "-v",
            "warning",
            "-of",
            "json",
            "-show_entries",
            "format=format_name,duration:stream=index,codec_type,codec_name,codec_tag,sample_rate,channels,duration",
            *_input_args(path),
        ],
        deadline,
    )
    stderr = result.stderr.decode(errors="replace")
    if result.returncode != 0:
        refused = re.search(r"\[([\w,]+) @ 0x[0-9a-f]+\] Format not on whitelist", stderr)
        if refused:
            raise AudioError(
                f"'{path.name}' is a '{refused.group(1)}' file, which is not accepted: upload an audio file "
                "(WAV, FLAC, MP3, OGG, Opus, M4A/AAC, AIFF) or a video with an audio track. Playlists and "
                "lists of other files are never followed."
            )
        raise AudioError(
            f"'{path.name}' is not a supported audio or video file, or it is damaged "
            f"({_short_reason(stderr, path)})."
        )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AudioError(f"'{path.name}' could not be inspected; it may be damaged.") from None
    audio_streams = [s for s in report.get("streams", []) if s.get("codec_type") == "audio"]
    if not audio_streams:
        raise AudioError(f"'{path.name}' contains no audio track.")
    stream = audio_streams[0]
    if "codec_name" not in stream:
        raise AudioError(
            f"The audio in '{path.name}' uses an unknown codec (tag {stream.get('codec_tag', '?')}) "
            "that cannot be decoded; convert it to WAV, FLAC or MP3."
        )
    sample_rate, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
    if sample_rate <= 0 or channels <= 0:
        raise AudioError(
            f"The audio stream in '{path.name}' states no valid sample rate or channel count; "
            "the file is damaged."
        )
    # A length derived from file size and bit rate (missing or oversized header fields) is only a guess.
    guessed = "Estimating duration from bitrate" in stderr
    return _ProbedStream(
        format_name=report["format"]["format_name"],
        stream_index=int(stream["index"]),
        codec_name=stream["codec_name"],
        sample_rate=sample_rate,
        channels=channels,
        stream_seconds=None if guessed else _seconds_or_none(stream.get("duration")),
        container_seconds=None if guessed else _seconds_or_none(report["format"].get("duration")),
    )


def _seconds_or_none(value: str | None) -> float | None:
    """ffprobe duration text -> seconds; None for a missing, non-numeric or non-finite value."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _short_reason(stderr: str, path: Path) -> str:
    """The last line of ffmpeg's log, without the file path or the '[demuxer @ 0x...]' prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no details"
    reason = re.sub(r"^\[[^\]]+\]\s*", "", lines[-1])
    reason = reason.replace(f"file:{path}", path.name).replace(str(path), path.name)
    return reason.removeprefix(f"{path.name}: ")[:160]


def _check_stated_length(stream: _ProbedStream, max_duration_seconds: float) -> None:
    """Reject a file whose container states a length above the limit, before decoding it."""
    stated_seconds = stream.stream_seconds if stream.stream_seconds is not None else stream.container_seconds
    if stated_seconds is not None and stated_seconds > max_duration_seconds:
        raise AudioError(
            f"The audio is {_format_seconds(stated_seconds)} long; the limit is "
            f"{_format_seconds(max_duration_seconds)}. Trim it or split it into parts."
        )


def _check_wav_header(path: Path) -> None:
    """Reject a RIFF/WAVE file whose header contradicts itself or promises more data than the file holds.

    ffmpeg quietly decodes such files (a wrong channel count scrambles the samples; a truncated upload
    yields part of the song), so the fmt and data chunks are checked here.
    """
    file_bytes = path.stat().st_size
    with path.open("rb") as file:
        riff_header = file.read(12)
        if riff_header[:4] != b"RIFF" or riff_header[8:12] != b"WAVE":
            return  # RF64/BW64: sizes live elsewhere; ffmpeg's own checks apply
        fmt = None
        for _ in range(_MAX_WAV_CHUNKS):
            header = file.read(8)
            if len(header) < 8:
                return
            chunk_id, chunk_bytes = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk_id == b"fmt " and chunk_bytes >= 16:
                fmt_bytes = file.read(min(chunk_bytes, 40))
                if len(fmt_bytes) < 16:
                    return
                fmt = _wav_format_fields(fmt_bytes)
                file.seek(chunk_bytes - len(fmt_bytes) + (chunk_bytes & 1), 1)
            elif chunk_id == b"data":
                _check_wav_chunks(path, fmt, chunk_bytes, file_bytes - file.tell())
                return
            else:
                file.seek(chunk_bytes + (chunk_bytes & 1), 1)


def _wav_format_fields(fmt_bytes: bytes) -> tuple[int, int, int, int, int]:
    """(format tag, channels, byte rate, block align, bits per sample) of a fmt chunk.

    For WAVE_FORMAT_EXTENSIBLE the tag is the one inside its SubFormat GUID (1 = PCM, 3 = float).
    """
    format_tag, channels, _, byte_rate, block_align, bits_per_sample = struct.unpack(
        "<HHIIHH", fmt_bytes[:16]
    )
    if format_tag == 0xFFFE and len(fmt_bytes) >= 26:
        format_tag = struct.unpack("<H", fmt_bytes[24:26])[0]
    return format_tag, channels, byte_rate, block_align, bits_per_sample


def _check_wav_chunks(
    path: Path, fmt: tuple[int, int, int, int, int] | None, data_bytes: int, bytes_left: int
) -> None:
    """Compare the fmt chunk with itself and the data chunk's declared size with the bytes present."""
    if fmt is None:
        return
    format_tag, channels, byte_rate, block_align, bits_per_sample = fmt
    if format_tag in (1, 3) and block_align != channels * ((bits_per_sample + 7) // 8):
        raise AudioError(
            f"The WAV header of '{path.name}' is inconsistent: it declares {channels} channel(s) of "
            f"{bits_per_sample}-bit samples but {block_align}-byte sample frames. The file is damaged."
        )
    streaming_placeholders = (0, 0xFFFFFFFF)  # writers that could not seek back leave these
    if data_bytes in streaming_placeholders or data_bytes <= bytes_left:
        return
    missing_seconds = (data_bytes - bytes_left) / byte_rate if byte_rate else math.inf
    if missing_seconds > TRUNCATION_TOLERANCE_SECONDS:
        declared = (
            f"{_format_seconds(data_bytes / byte_rate)} of audio" if byte_rate else f"{data_bytes} bytes"
        )
        raise AudioError(
            f"The WAV file '{path.name}' is truncated: its header declares {declared}, but the data "
            f"ends {_format_seconds(missing_seconds)} early. Upload the complete file."
        )


def _decode_stream(
    path: Path, stream: _ProbedStream, max_duration_seconds: float, deadline: _Deadline
) -> tuple[np.ndarray, int]:
    """Decode the probed stream with ffmpeg and resample it as it arrives.

    Returns (float32 [2, samples] at SAMPLE_RATE, number of frames decoded at the source rate).
    """
    decoded_channels = min(stream.channels, 2)  # >2: ffmpeg's standard downmix; mono is widened below
    command = [
        *FFMPEG_QUIET,
        *_input_args(path),
        "-map",
        f"0:{stream.stream_index}",
        "-ac",
        str(decoded_channels),
        "-ar",
        str(stream.sample_rate),  # holds the rate steady should the stream change it midway
        "-t",
        f"{max_duration_seconds + DECODE_OVERRUN_SECONDS:.3f}",
        "-c:a",
        "pcm_f32le",
        "-f",
        "f32le",
        "pipe:1",
    ]
    resampler = None
    if stream.sample_rate != SAMPLE_RATE:
        resampler = soxr.ResampleStream(
            stream.sample_rate, SAMPLE_RATE, decoded_channels, dtype="float32", quality=SOXR_QUALITY
        )
    blocks = []  # float32 [frames, decoded_channels] at SAMPLE_RATE
    source_frames = 0
    with _FfmpegPipe(command, deadline) as pipe:
        for block in pipe.blocks(decoded_channels):  # [frames, decoded_channels] at the source rate
            if not np.isfinite(block).all():
                raise AudioError(
                    f"'{path.name}' contains NaN or infinite sample values; it is damaged or was "
                    "written incorrectly."
                )
            source_frames += len(block)
            blocks.append(block if resampler is None else resampler.resample_chunk(block))
        if resampler is not None:
            blocks.append(resampler.resample_chunk(np.zeros((0, decoded_channels), np.float32), last=True))
        if pipe.returncode != 0:
            reason = _short_reason(pipe.stderr(), path)
            if "Decoder" in reason and "not found" in reason:
                raise AudioError(
                    f"The audio codec of '{path.name}' ({stream.codec_name}) cannot be decoded here; "
                    "convert it to WAV, FLAC or MP3."
                )
            raise AudioError(f"'{path.name}' could not be decoded; the file is damaged ({reason}).")
    return _stereo_from_blocks(blocks), source_frames


def _stereo_from_blocks(blocks: list[np.ndarray]) -> np.ndarray:
    """Join [frames, 1 or 2] blocks into one float32 [2, samples] array; mono goes to both channels."""
    total_frames = sum(len(block) for block in blocks)
    audio = np.empty((2, total_frames), dtype=np.float32)
    start = 0
    for block in blocks:
        audio[:, start : start + len(block)] = block.T  # [1 or 2, frames] broadcast to [2, frames]
        start += len(block)
    return audio


class _FfmpegPipe:
    """An ffmpeg process whose stdout is read as raw float32 blocks, killed at the deadline or on exit."""

    def __init__(self, command: list[str], deadline: _Deadline):
        remaining_seconds = deadline.remaining_seconds()
        self._deadline = deadline
        self._stderr_file = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg never blocks on its log
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr_file
            )
        except FileNotFoundError:
            self._stderr_file.close()
            raise _missing_tool_error("ffmpeg") from None
        self._timed_out = threading.Event()
        self._timer = threading.Timer(remaining_seconds, self._kill_at_deadline)
        self._timer.start()

    def _kill_at_deadline(self) -> None:
        self._timed_out.set()
        self._process.kill()

    def __enter__(self) -> "_FfmpegPipe":
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        if self._process.poll() is None:
            self._process.kill()
        self._process.stdout.close()
        self._process.wait()
        self._stderr_file.close()

    def blocks(self, channels: int) -> Iterator[np.ndarray]:
        """Yield float32 [frames, channels] blocks until ffmpeg ends; AudioError if the deadline passes."""
        frame_bytes = 4 * channels
        while data := self._process.stdout.read(_DECODE_BLOCK_FRAMES * frame_bytes):
            whole_bytes = len(data) - len(data) % frame_bytes  # a killed process may stop mid-frame
            yield np.frombuffer(data[:whole_bytes], dtype=np.float32).reshape(-1, channels)
        self._process.wait()
        if self._timed_out.is_set():
            raise self._deadline.expired()

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def stderr(self) -> str:
        """ffmpeg's log so far."""
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode(errors="replace")


def _check_decoded_length(
    path: Path, stream: _ProbedStream, source_frames: int, max_duration_seconds: float
) -> None:
    """AudioError for no samples, audio past the limit, or far less audio than the stream states."""
    if source_frames == 0:
        raise AudioError(f"'{path.name}' contains no audio samples.")
    decoded_seconds = source_frames / stream.sample_rate
    if decoded_seconds > max_duration_seconds:
        raise AudioError(
            f"The audio is longer than the {_format_seconds(max_duration_seconds)} limit (decoding passed "
            f"{_format_seconds(decoded_seconds)}, although the file states a shorter length). "
            "Trim it or split it into parts."
        )
    # Only the stream's own length counts here: a video track may well outlast the audio.
    if stream.stream_seconds is not None and decoded_seconds < stream.stream_seconds - max(
        TRUNCATION_TOLERANCE_SECONDS, 0.01 * stream.stream_seconds
    ):
        raise AudioError(
            f"'{path.name}' is truncated or damaged: it states {_format_seconds(stream.stream_seconds)} of "
            f"audio, but only {_format_seconds(decoded_seconds)} could be decoded. Upload the complete file."
        )


def _format_seconds(seconds: float) -> str:
    """'2.5 s' below a minute, else 'M:SS' or 'H:MM:SS'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# ---------------------------------------------------------------------------------------------------------
# Encoding


@dataclass(frozen=True)
class OutputSettings:
    """How stems are written. FLAC has no float samples, so wav_bit_depth "32-float" gives 24-bit FLAC."""

    format: str = "wav"
    sample_rate: int = 44100
    wav_bit_depth: str = "24"
    mp3_bitrate: int = 320  # kbit/s, constant bit rate
    clip_policy: str = "rescale"

    def __post_init__(self):
        allowed = {
            "format": OUTPUT_FORMATS,
            "sample_rate": OUTPUT_SAMPLE_RATES,
            "wav_bit_depth": WAV_BIT_DEPTHS,
            "mp3_bitrate": MP3_BITRATES,
            "clip_policy": CLIP_POLICIES,
        }
        for field_name, choices in allowed.items():
            value = getattr(self, field_name)
            if type(value) is not type(choices[0]) or value not in choices:
                raise SettingsError(
                    f"Output setting {field_name}={value!r} is not supported; choose one of: "
                    + ", ".join(str(choice) for choice in choices)
                )

    @property
    def extension(self) -> str:
        """File extension without the dot: "wav", "flac" or "mp3"."""
        return self.format


def write_stem(stem, stem_name: str, out_dir: Path, settings: OutputSettings) -> Path:
    """Write one stem to `out_dir/<stem_name>.<ext>` and return that path.

    `stem`: float32 [2, samples] at SAMPLE_RATE (numpy, or anything np.asarray accepts, e.g. a CPU tensor).
    It is resampled to `settings.sample_rate` with soxr VHQ, then peaks above full scale are handled by
    `settings.clip_policy` for every format except 32-bit float WAV. Samples are converted and written in
    blocks of `_WRITE_BLOCK_FRAMES`, so encoding holds no second copy of a long stem. A write that fails
    leaves no file behind.
    """
    audio = _checked_stem(stem, stem_name)  # [2, samples]
    path = _stem_path(stem_name, out_dir, settings)
    audio = resample(audio, SAMPLE_RATE, settings.sample_rate)
    full_scale = _full_scale(settings)
    gain = 1.0 if full_scale is None else _peak_gain(audio, full_scale, stem_name, settings.clip_policy)
    with _open_encoder(path, settings) as encoder:
        encoder.write(audio, gain)
    return path


class StemStream:
    """A stem file written block by block while the stem is still being computed, at SAMPLE_RATE only.

    `write(block)` takes the stem's float32 [2, n] blocks at SAMPLE_RATE in order and encodes them at gain
    1 (integer formats and MP3 clipped at full scale, as write_stem's "clamp"), tracking the peak.
    `close(stem)` takes the whole stem [2, samples] (the blocks joined) and finishes the file: it is then
    the file write_stem(stem, ...) writes. Where the peak exceeded full scale under clip policy
    "rescale", close rewrites it with write_stem, which scales the whole stem down first. Other output
    rates are not streamed (the constructor raises SettingsError): write_stem resamples the whole stem.

    Leaving a `with` block without close(), or abort(), stops the encoder and removes the partial file.
    """

    def __init__(self, stem_name: str, out_dir: Path, settings: OutputSettings):
        if settings.sample_rate != SAMPLE_RATE:
            raise SettingsError(
                f"stems are streamed at {SAMPLE_RATE} Hz only, not {settings.sample_rate} Hz; "
                "write the whole stem with write_stem"
            )
        self.stem_name, self.settings = stem_name, settings
        self.path = _stem_path(stem_name, out_dir, settings)
        self._encoder = _open_encoder(self.path, settings)
        self._peak = 0.0  # of the samples written so far, before clipping
        self._frames = 0
        self._open = True

    def __enter__(self) -> "StemStream":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._open:
            self.abort()

    def write(self, block) -> None:
        """Encode the stem's next float32 [2, n] block; ValueError for a bad shape or non-finite samples."""
        audio = _checked_stem(block, self.stem_name)
        self._peak = max(self._peak, _peak(audio))
        self._encoder.write(audio, 1.0)
        self._frames += audio.shape[1]

    def close(self, stem) -> Path:
        """Finish the file given the whole stem, float32 [2, samples] (what was written); return its path."""
        audio = np.asarray(stem, dtype=np.float32)
        if audio.shape != (2, self._frames):
            self.abort()
            raise ValueError(
                f"stem {self.stem_name!r} of shape {list(audio.shape)} is not the {self._frames} frames "
                "streamed"
            )
        self._open = False
        self._encoder.finish()
        full_scale = self._encoder.full_scale
        if full_scale is not None and self._peak > full_scale and self.settings.clip_policy == "rescale":
            return write_stem(audio, self.stem_name, self.path.parent, self.settings)
        return self.path

    def abort(self) -> None:
        """Stop the encoder and remove the partial file."""
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


def _peak(audio: np.ndarray) -> float:
    """max |sample| of float32 [2, samples], without an |audio| copy."""
    return max(float(audio.max(initial=0.0)), -float(audio.min(initial=0.0)))


def _peak_gain(audio: np.ndarray, full_scale: float, stem_name: str, clip_policy: str) -> float:
    """The gain that keeps float32 [2, samples] within +-full_scale under "rescale"; 1 otherwise.

    "rescale" brings a clipping stem's peak to RESCALE_PEAK_DBFS (logged); "clamp" keeps the gain at 1
    and `_float_blocks` clips.
    """
    peak = _peak(audio)
    if peak <= full_scale or clip_policy == "clamp":
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

    def __enter__(self) -> "_Encoder":
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
            raise SeparationError(f"Writing {self.path.name} failed: {_short_reason(reason, self.path)}")

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
        raise _missing_tool_error("ffmpeg") from None
    if not re.search(rf"^\s*A\S*\s+{encoder}\s", listing, flags=re.MULTILINE):
        raise SeparationError(
            f"This machine's ffmpeg has no '{encoder}' encoder; install an ffmpeg built with it "
            "(Debian's ffmpeg package has it)."
        )
