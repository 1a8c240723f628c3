"""Shared fixtures: a tiny weights folder (real file formats) and generated songs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.tiny_weights import write_tiny_weights


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


def write_song(path: Path, seconds: float, sample_rate: int = 44100, seed: int = 0) -> Path:
    """A stereo test song: a different tone per channel plus noise, float WAV."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), sample_rate, subtype="FLOAT")
    return path


@pytest.fixture
def song(tmp_path) -> Path:
    return write_song(tmp_path / "song.wav", seconds=2.0)
