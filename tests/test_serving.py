"""The Cog-facing service: uploads only, one output folder per prediction, memory given back."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

import separation.serving as serving_module
from fixtures.requests import service_options
from separation.errors import AudioError
from separation.serving import SeparationService

SERVICE_OPTIONS = service_options(output_format="mp3", chunk_size=4.0, overlap=1.0, mp3_bitrate=192)


def test_service_keeps_only_the_latest_outputs(tiny_weights_dir, downloaded):
    service = SeparationService(tiny_weights_dir, "cpu")
    metrics = {}
    record = lambda k, v, mode="replace": metrics.update({k: v})  # noqa: E731
    first = list(service.predict(downloaded, **SERVICE_OPTIONS, record_metric=record))
    assert [f.name for f in first] == ["vocals.mp3", "instrumental.mp3"]
    assert metrics["audio_seconds"] == 2.0 and "stage_seconds.bs_roformer_vocals" in metrics
    second = list(service.predict(downloaded, **SERVICE_OPTIONS))
    assert all(f.exists() for f in second) and not first[0].parent.exists()


@pytest.mark.parametrize("where", ["elsewhere", "unprefixed", "symlink"])
def test_service_reads_only_what_the_runtime_downloaded(tiny_weights_dir, downloaded, song, where):
    if where == "elsewhere":
        path = song  # a file of the server's own disk
    elif where == "unprefixed":
        path = downloaded.with_name("song.wav")
        path.write_bytes(song.read_bytes())
    else:
        path = downloaded.with_name("tmplink.wav")
        path.symlink_to(song)
    service = SeparationService(tiny_weights_dir, "cpu")
    with pytest.raises(AudioError, match="must be an upload or a URL"):
        list(service.predict(path, **SERVICE_OPTIONS))


def test_every_prediction_gives_freed_memory_back(tiny_weights_dir, downloaded, monkeypatch):
    """After a prediction, succeeded or failed, the service returns what malloc holds free to the system."""
    trims = []
    monkeypatch.setattr(serving_module, "release_free_memory", lambda: trims.append(True))
    service = SeparationService(tiny_weights_dir, "cpu")
    list(service.predict(downloaded, **SERVICE_OPTIONS))
    assert trims == [True]
    downloaded.write_bytes(b"not audio")
    with pytest.raises(AudioError):
        list(service.predict(downloaded, **SERVICE_OPTIONS))
    assert trims == [True, True]


def test_a_failed_prediction_with_nothing_handed_over_leaves_no_folder(tiny_weights_dir, downloaded):
    service = SeparationService(tiny_weights_dir, "cpu")
    list(service.predict(downloaded, **SERVICE_OPTIONS))
    assert len(list(Path(tempfile.gettempdir()).glob("stems-*"))) == 1
    downloaded.write_bytes(b"not audio at all")
    with pytest.raises(AudioError):
        list(service.predict(downloaded, **SERVICE_OPTIONS))
    assert not list(Path(tempfile.gettempdir()).glob("stems-*"))  # the earlier one went too, at its start
