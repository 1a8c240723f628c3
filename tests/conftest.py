"""Shared fixtures: a tiny weights folder (real file formats) and generated songs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from fixtures.songs import write_song
from fixtures.tiny_weights import write_tiny_weights


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))


@pytest.fixture
def song(tmp_path) -> Path:
    return write_song(tmp_path / "song.wav", seconds=2.0)


@pytest.fixture
def downloaded(song, tmp_path, monkeypatch) -> Path:
    """The song where the runtime puts a URL input: `tmp<random><name>` in the temporary folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "runtime-tmp"))
    (tmp_path / "runtime-tmp").mkdir()
    with tempfile.NamedTemporaryFile(suffix="song.wav", delete=False) as copy:
        copy.write(song.read_bytes())
    return Path(copy.name)
