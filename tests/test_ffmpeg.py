"""Running ffmpeg tools under one deadline: a stuck tool is stopped and named as a timeout."""

from __future__ import annotations

import pytest

from separation.audio.ffmpeg import Deadline, FfmpegPipe, run_tool
from separation.errors import AudioError


def test_a_stalled_decoder_is_killed_at_the_deadline():
    with pytest.raises(AudioError, match="longer than 0.2 s"):
        with FfmpegPipe(["sleep", "30"], Deadline.start(0.2)) as pipe:  # stands in for a stuck ffmpeg
            list(pipe.blocks(2))


def test_a_stalled_probe_is_stopped_at_the_deadline():
    with pytest.raises(AudioError, match="longer than 0.2 s"):
        run_tool(["sleep", "30"], Deadline.start(0.2))  # stands in for a stuck ffprobe
