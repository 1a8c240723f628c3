"""The Cog model's service: uploads only, one output folder per prediction, the stems report as the last
file, memory given back."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

import separation.serving as serving_module
from separation.errors import AudioError
from separation.request import Request
from separation.serving import PredictionService

REQUEST = Request(output_format="mp3", chunk_size=4.0, overlap=1.0, mp3_bitrate=192)


@pytest.fixture(scope="module")
def service(tiny_weights_dir) -> PredictionService:
    return PredictionService(tiny_weights_dir, "cpu")


def test_service_keeps_only_the_latest_outputs(service, downloaded):
    metrics = {}
    record = lambda k, v, mode="replace": metrics.update({k: v})  # noqa: E731
    first = list(service.predict(downloaded, REQUEST, record_metric=record))
    assert [f.name for f in first] == ["vocals.mp3", "instrumental.mp3", "stems.json"]
    assert metrics["audio_seconds"] == 2.0 and "stage_seconds.bs_roformer_vocals" in metrics
    second = list(service.predict(downloaded, REQUEST))
    assert all(f.exists() for f in second) and not first[0].parent.exists()


def test_the_last_file_is_the_stems_report_with_what_the_metrics_say(service, downloaded):
    """The same figures, model and terms per stem as the `stems` metric, keyed by stem name."""
    metrics = {}
    record = lambda k, v, mode="replace": metrics.update({k: v})  # noqa: E731
    *stems, report = service.predict(downloaded, REQUEST, record_metric=record)
    assert report.name == "stems.json" and [stem.name for stem in stems] == ["vocals.mp3", "instrumental.mp3"]
    content = json.loads(report.read_text())
    assert content == metrics["stems"]
    assert (
        content["vocals"]["file"] == "vocals.mp3" and content["instrumental"]["model"] == "bs_roformer_vocals"
    )
    assert {entry["terms"] for entry in content.values()} == {"none-stated"}
    assert set(content["vocals"]) == {
        "file", "model", "terms", "peak_dbfs", "loudness_lufs", "active_fraction", "present"
    }  # fmt: skip


@pytest.mark.parametrize("where", ["elsewhere", "unprefixed", "symlink"])
def test_service_reads_only_what_the_runtime_downloaded(service, downloaded, song, where):
    if where == "elsewhere":
        path = song  # a file of the server's own disk
    elif where == "unprefixed":
        path = downloaded.with_name("song.wav")
        path.write_bytes(song.read_bytes())
    else:
        path = downloaded.with_name("tmplink.wav")
        path.symlink_to(song)
    with pytest.raises(AudioError, match="must be an upload or a URL"):
        list(service.predict(path, REQUEST))


def test_every_prediction_gives_freed_memory_back(service, downloaded, monkeypatch):
    """After a prediction, succeeded or failed, the service returns what malloc holds free to the system."""
    trims = []
    monkeypatch.setattr(serving_module, "release_free_memory", lambda: trims.append(True))
    list(service.predict(downloaded, REQUEST))
    assert trims == [True]
    downloaded.write_bytes(b"not audio")
    with pytest.raises(AudioError):
        list(service.predict(downloaded, REQUEST))
    assert trims == [True, True]


def test_a_failed_prediction_with_nothing_handed_over_leaves_no_folder(service, downloaded):
    list(service.predict(downloaded, REQUEST))
    assert len(list(Path(tempfile.gettempdir()).glob("stems-*"))) == 1
    downloaded.write_bytes(b"not audio at all")
    with pytest.raises(AudioError):
        list(service.predict(downloaded, REQUEST))
    assert not list(Path(tempfile.gettempdir()).glob("stems-*"))  # the earlier one went too, at its start
