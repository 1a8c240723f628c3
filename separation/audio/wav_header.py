"""RIFF/WAVE header checks: a header that contradicts itself or promises more audio than the file holds.

ffmpeg decodes such files without a word (a wrong channel count scrambles the samples; a truncated upload
yields part of the song), so `decode_audio` checks a WAV upload's fmt and data chunks here first.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

from ..errors import AudioError, format_seconds

_MAX_WAV_CHUNKS = 1000  # chunks read before the data chunk; more is no WAV anyone wrote


def check_wav_header(path: Path, name: str, tolerance_seconds: float) -> None:
    """AudioError for a RIFF/WAVE file whose fmt chunk contradicts itself, or whose data chunk declares
    more than `tolerance_seconds` of audio beyond the bytes present. `name` is the file's name in messages."""
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
                _check_wav_chunks(name, fmt, chunk_bytes, file_bytes - file.tell(), tolerance_seconds)
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
    name: str,
    fmt: tuple[int, int, int, int, int] | None,
    data_bytes: int,
    bytes_left: int,
    tolerance_seconds: float,
) -> None:
    """Compare the fmt chunk with itself and the data chunk's declared size with the bytes present."""
    if fmt is None:
        return
    format_tag, channels, byte_rate, block_align, bits_per_sample = fmt
    if format_tag in (1, 3) and block_align != channels * ((bits_per_sample + 7) // 8):
        raise AudioError(
            f"The WAV header of '{name}' is inconsistent: it declares {channels} channel(s) of "
            f"{bits_per_sample}-bit samples but {block_align}-byte sample frames. The file is damaged."
        )
    streaming_placeholders = (0, 0xFFFFFFFF)  # writers that could not seek back leave these
    if data_bytes in streaming_placeholders or data_bytes <= bytes_left:
        return
    missing_seconds = (data_bytes - bytes_left) / byte_rate if byte_rate else math.inf
    if missing_seconds > tolerance_seconds:
        declared = (
            f"{format_seconds(data_bytes / byte_rate)} of audio" if byte_rate else f"{data_bytes} bytes"
        )
        raise AudioError(
            f"The WAV file '{name}' is truncated: its header declares {declared}, but the data "
            f"ends {format_seconds(missing_seconds)} early. Upload the complete file."
        )
