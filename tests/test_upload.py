"""Uploads as the runtime hands them over: only its downloads are read, and messages name them as their
sender did."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from separation.audio.upload import shown_name
from separation.errors import AudioError
from separation.request import Request
from separation.serving import PredictionService


@pytest.fixture(scope="module")
def service(tiny_weights_dir) -> PredictionService:
    return PredictionService(tiny_weights_dir, "cpu")


@pytest.fixture
def runtime_tmp(tmp_path, monkeypatch) -> Path:
    """The runtime's temporary folder, where it puts every URL input as `tmp<8 characters><name>`."""
    folder = tmp_path / "runtime-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_runtime_prefix_comes_off_only_in_its_folder(runtime_tmp, tmp_path):
    assert shown_name(runtime_tmp / "tmpc_c70ahhsong.wav") == "song.wav"
    assert shown_name(runtime_tmp / "tmpvcmy6iudconcat_remote.wav") == "concat_remote.wav"
    assert shown_name(runtime_tmp / "tmpabcd1234") == "tmpabcd1234"  # nothing after the prefix
    assert shown_name(tmp_path / "tmpabcd1234song.wav") == "tmpabcd1234song.wav"  # someone's own file
    assert shown_name(runtime_tmp / "song.wav") == "song.wav"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", ["The audio file 'song.mp3' is empty"]),
        (b"this is not music\n" * 50, ["'song.mp3' is not a supported audio"]),
        (b"ffconcat version 1.0\nfile 'beside.wav'\n", ["'song.mp3' is a 'concat' file"]),
    ],
    ids=["empty", "not-audio", "concat"],
)
def test_errors_name_the_upload_as_its_sender_named_it(service, runtime_tmp, content, words):
    upload = runtime_tmp / "tmpabcd1234song.mp3"
    upload.write_bytes(content)
    with pytest.raises(AudioError) as error:
        list(service.predict(upload, Request()))
    message = str(error.value)
    assert all(word in message for word in words) and "tmpabcd1234" not in message, message
