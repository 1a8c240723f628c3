"""What decoding and encoding share about running ffmpeg: the quiet command prefix and its errors."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import SeparationError

FFMPEG_QUIET = ("ffmpeg", "-nostdin", "-hide_banner", "-v", "error")  # errors only, never reads stdin


def missing_tool_error(tool: str) -> SeparationError:
    """The error for an ffmpeg tool that is not on PATH."""
    return SeparationError(
        f"'{tool}' is not installed on this machine; install ffmpeg (it provides ffprobe too)."
    )


def short_reason(stderr: str, path: Path) -> str:
    """The last line of ffmpeg's log, without the file path or the '[demuxer @ 0x...]' prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no details"
    reason = re.sub(r"^\[[^\]]+\]\s*", "", lines[-1])
    reason = reason.replace(f"file:{path}", path.name).replace(str(path), path.name)
    return reason.removeprefix(f"{path.name}: ")[:160]
