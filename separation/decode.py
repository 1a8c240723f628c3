"""Decoding: any upload to stereo float32 at the models' rate. `decode_audio` treats every file as hostile:

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
"""

from __future__ import annotations

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
import soxr

from .errors import AudioError
from .ffmpeg import FFMPEG_QUIET, missing_tool_error, short_reason
from .samplerate import SAMPLE_RATE, SOXR_QUALITY

logger = logging.getLogger(__name__)

# ffmpeg demuxers an upload may use: audio and audio/video containers that read only the file they are given.
ACCEPTED_DEMUXERS = (
    "aac", "ac3", "aiff", "amr", "ape", "asf", "avi", "caf", "dts", "eac3", "flac",
    "matroska", "mov", "mp3", "mpeg", "mpegts", "ogg", "w64", "wav", "wv",
)  # fmt: skip

DECODE_OVERRUN_SECONDS = 1.0  # the decode runs this far past the length limit to prove it was exceeded
TRUNCATION_TOLERANCE_SECONDS = 0.5  # decoded audio may fall this much short of the stated length
_DECODE_BLOCK_FRAMES = 65536
_MAX_WAV_CHUNKS = 1000


def default_timeout_seconds(max_duration_seconds: float) -> float:
    """Deadline for probe + decode: 60 s plus a quarter of the longest allowed audio (510 s for 30 min).

    Decoders run at hundreds of times real time, so only a broken or hostile file comes near this.
    """
    return 60.0 + 0.25 * max_duration_seconds


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
    def start(cls, timeout_seconds: float) -> _Deadline:
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
        raise missing_tool_error(command[0]) from None


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
            f"({short_reason(stderr, path)})."
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
            reason = short_reason(pipe.stderr(), path)
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
            raise missing_tool_error("ffmpeg") from None
        self._timed_out = threading.Event()
        self._timer = threading.Timer(remaining_seconds, self._kill_at_deadline)
        self._timer.start()

    def _kill_at_deadline(self) -> None:
        self._timed_out.set()
        self._process.kill()

    def __enter__(self) -> _FfmpegPipe:
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
