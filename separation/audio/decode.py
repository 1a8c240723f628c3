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
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import AudioError, format_seconds
from .ffmpeg import FFMPEG_QUIET, Deadline, FfmpegPipe, run_tool, short_reason
from .samplerate import SAMPLE_RATE, StreamResampler
from .upload import shown_name
from .wav_header import check_wav_header

logger = logging.getLogger(__name__)

# ffmpeg demuxers an upload may use: audio and audio/video containers that read only the file they are given.
ACCEPTED_DEMUXERS = (
    "aac", "ac3", "aiff", "amr", "ape", "asf", "avi", "caf", "dts", "eac3", "flac",
    "matroska", "mov", "mp3", "mpeg", "mpegts", "ogg", "w64", "wav", "wv",
)  # fmt: skip

DECODE_OVERRUN_SECONDS = 1.0  # the decode runs this far past the length limit to prove it was exceeded
TRUNCATION_TOLERANCE_SECONDS = 0.5  # decoded audio may fall this much short of the stated length


def decode_timeout_seconds(max_duration_seconds: float) -> float:
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


def decode_audio(path: str | PathLike, *, max_duration_seconds: float) -> np.ndarray:
    """Decode an audio or video file to float32 [2, samples] at `SAMPLE_RATE`.

    `max_duration_seconds` bounds the audio length, and with it the wall time of probe + decode
    (`decode_timeout_seconds`). Raises AudioError with a message for the person who uploaded the file,
    naming the file as they named it (`shown_name`).
    """
    path = _checked_input_file(path)
    name = shown_name(path)
    deadline = Deadline.start(decode_timeout_seconds(max_duration_seconds))
    stream = _probe(path, name, deadline)
    _check_stated_length(stream, max_duration_seconds)
    if stream.format_name == "wav":
        check_wav_header(path, name, TRUNCATION_TOLERANCE_SECONDS)
    audio, source_frames = _decode_stream(path, name, stream, max_duration_seconds, deadline)
    _check_decoded_length(name, stream, source_frames, max_duration_seconds)
    logger.info(
        "Decoded %s: %s, %s, %d Hz, %d channel(s), %s",
        name,
        stream.format_name,
        stream.codec_name,
        stream.sample_rate,
        stream.channels,
        format_seconds(source_frames / stream.sample_rate),
    )
    return audio


def _checked_input_file(path: str | PathLike) -> Path:
    """Absolute path of an existing, non-empty regular file, else AudioError."""
    path = Path(path).absolute()
    if not path.exists():
        raise AudioError(f"The audio file '{shown_name(path)}' was not found.")
    if not path.is_file():
        raise AudioError(f"'{shown_name(path)}' is not a regular file; upload an audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"The audio file '{shown_name(path)}' is empty (0 bytes).")
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


def _probe(path: Path, name: str, deadline: Deadline) -> _ProbedStream:
    """Ask ffprobe for the container format and the first audio stream; AudioError where unusable."""
    result = run_tool(
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
                f"'{name}' is a '{refused.group(1)}' file, which is not accepted: upload an audio file "
                "(WAV, FLAC, MP3, OGG, Opus, M4A/AAC, AIFF) or a video with an audio track. Playlists and "
                "lists of other files are never followed."
            )
        raise AudioError(
            f"'{name}' is not a supported audio or video file, or it is damaged "
            f"({short_reason(stderr, path)})."
        )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AudioError(f"'{name}' could not be inspected; it may be damaged.") from None
    audio_streams = [s for s in report.get("streams", []) if s.get("codec_type") == "audio"]
    if not audio_streams:
        raise AudioError(f"'{name}' contains no audio track.")
    stream = audio_streams[0]
    if "codec_name" not in stream:
        raise AudioError(
            f"The audio in '{name}' uses an unknown codec (tag {stream.get('codec_tag', '?')}) "
            "that cannot be decoded; convert it to WAV, FLAC or MP3."
        )
    sample_rate, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
    if sample_rate <= 0 or channels <= 0:
        raise AudioError(
            f"The audio stream in '{name}' states no valid sample rate or channel count; the file is damaged."
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
            f"The audio is {format_seconds(stated_seconds)} long; the limit is "
            f"{format_seconds(max_duration_seconds)}. Trim it or split it into parts."
        )


def _decode_stream(
    path: Path, name: str, stream: _ProbedStream, max_duration_seconds: float, deadline: Deadline
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
        resampler = StreamResampler(stream.sample_rate, SAMPLE_RATE, decoded_channels)
    blocks = []  # float32 [frames, decoded_channels] at SAMPLE_RATE
    source_frames = 0
    with FfmpegPipe(command, deadline) as pipe:
        for block in pipe.blocks(decoded_channels):  # [frames, decoded_channels] at the source rate
            if not np.isfinite(block).all():
                raise AudioError(
                    f"'{name}' contains NaN or infinite sample values; it is damaged or was "
                    "written incorrectly."
                )
            source_frames += len(block)
            blocks.append(block if resampler is None else resampler.resample(block.T).T)
        if resampler is not None:
            blocks.append(resampler.flush().T)
        if pipe.returncode != 0:
            reason = short_reason(pipe.stderr(), path)
            if "Decoder" in reason and "not found" in reason:
                raise AudioError(
                    f"The audio codec of '{name}' ({stream.codec_name}) cannot be decoded here; "
                    "convert it to WAV, FLAC or MP3."
                )
            raise AudioError(f"'{name}' could not be decoded; the file is damaged ({reason}).")
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


def _check_decoded_length(
    name: str, stream: _ProbedStream, source_frames: int, max_duration_seconds: float
) -> None:
    """AudioError for no samples, audio past the limit, or far less audio than the stream states."""
    if source_frames == 0:
        raise AudioError(f"'{name}' contains no audio samples.")
    decoded_seconds = source_frames / stream.sample_rate
    if decoded_seconds > max_duration_seconds:
        raise AudioError(
            f"The audio is longer than the {format_seconds(max_duration_seconds)} limit (decoding passed "
            f"{format_seconds(decoded_seconds)}, although the file states a shorter length). "
            "Trim it or split it into parts."
        )
    # Only the stream's own length counts here: a video track may well outlast the audio.
    if stream.stream_seconds is not None and decoded_seconds < stream.stream_seconds - max(
        TRUNCATION_TOLERANCE_SECONDS, 0.01 * stream.stream_seconds
    ):
        raise AudioError(
            f"'{name}' is truncated or damaged: it states {format_seconds(stream.stream_seconds)} of "
            f"audio, but only {format_seconds(decoded_seconds)} could be decoded. Upload the complete file."
        )
