"""Running ffmpeg and ffprobe: the quiet command prefix, errors, and one deadline over a tool's runs (a
command run to completion, or a pipe read block by block)."""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AudioError, SeparationError
from .upload import shown_name

FFMPEG_QUIET = ("ffmpeg", "-nostdin", "-hide_banner", "-v", "error")  # errors only, never reads stdin
PIPE_BLOCK_FRAMES = 65536  # frames per block read from a pipe


def missing_tool_error(tool: str) -> SeparationError:
    """The error for an ffmpeg tool that is not on PATH."""
    return SeparationError(
        f"'{tool}' is not installed on this machine; install ffmpeg (it provides ffprobe too)."
    )


def short_reason(stderr: str, path: Path) -> str:
    """The last line of ffmpeg's log, with the file's path replaced by its shown name and without the
    '[demuxer @ 0x...]' prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no details"
    name = shown_name(path)
    reason = re.sub(r"^\[[^\]]+\]\s*", "", lines[-1])
    reason = reason.replace(f"file:{path}", name).replace(str(path), name)
    return reason.removeprefix(f"{name}: ")[:160]


@dataclass(frozen=True)
class Deadline:
    """A wall-clock budget shared by several tool runs (decode_audio: the probe and the decode)."""

    timeout_seconds: float
    at_monotonic: float

    @classmethod
    def start(cls, timeout_seconds: float) -> Deadline:
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


def run_tool(command: list[str], deadline: Deadline) -> subprocess.CompletedProcess:
    """Run an ffmpeg tool to completion within the deadline; AudioError on timeout."""
    remaining_seconds = deadline.remaining_seconds()
    try:
        return subprocess.run(command, capture_output=True, timeout=remaining_seconds, check=False)
    except subprocess.TimeoutExpired:
        raise deadline.expired() from None
    except FileNotFoundError:
        raise missing_tool_error(command[0]) from None


class FfmpegPipe:
    """An ffmpeg process whose stdout is read as raw float32 blocks, killed at the deadline or on exit."""

    def __init__(self, command: list[str], deadline: Deadline):
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

    def __enter__(self) -> FfmpegPipe:
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
        while data := self._process.stdout.read(PIPE_BLOCK_FRAMES * frame_bytes):
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
