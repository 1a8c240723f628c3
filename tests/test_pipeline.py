"""The pipeline with the tiny real models: setup, every mode's files, weights checks, batch sizes, the
guitar mode and extra stems computing only their heads, lazy models."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fixtures.requests import MAX_DURATION_SECONDS
from fixtures.songs import write_song
from fixtures.spans import chunked_output
from fixtures.tiny_roformer import loaded_heads
from separation.audio.decode import decode_audio
from separation.audio.stem_file import StemStream
from separation.errors import SettingsError, WeightsError
from separation.models.chunking import separate_chunked
from separation.models.roformer.checkpoint import RoformerCheckpoint
from separation.pipeline import Separator
from separation.plan import StemPlan
from separation.progress import Reporter
from separation.request import Request
from separation.stem_writer import Origin
from separation.weights.manifest import MANIFEST_PATH, load_manifest

EXPECTED_ORDER = {
    "vocals_instrumental": ["vocals", "instrumental"],
    "all_4": ["vocals", "instrumental", "drums", "bass", "other"],
    "all_6": ["vocals", "instrumental", "drums", "bass", "guitar", "piano", "other"],
}


class RecordingReporter(Reporter):
    def __init__(self):
        self.events = []

    def stage_started(self, stage):
        self.events.append(("start", stage))

    def decoded(self, audio_seconds):
        self.events.append(("decoded", round(audio_seconds, 3)))

    def progress(self, stage, done, total):
        self.events.append(("progress", stage, done, total))

    def stage_finished(self, stage, seconds):
        self.events.append(("finish", stage))


@pytest.fixture(scope="module")
def separator(tiny_weights_dir, device) -> Separator:
    return Separator(tiny_weights_dir, device)


def separate_file(separator: Separator, song: Path, out_dir: Path, request: Request, reporter=None):
    return list(separator.stems_as_written(song, out_dir, request, reporter))


def test_setup_loads_setup_models_only(tiny_weights_dir, device):
    assert Separator(tiny_weights_dir, device).loaded_models == ["bs_roformer_vocals", "htdemucs_ft"]


@pytest.mark.slow
def test_vocals_instrumental_files_and_instrumental_is_mix_minus_vocals(separator, song, tmp_path):
    reporter = RecordingReporter()
    settings = Request(output_format="wav", wav_bit_depth="32-float")
    files = [stem.path for stem in separate_file(separator, song, tmp_path / "out", settings, reporter)]
    assert [f.name for f in files] == ["vocals.wav", "instrumental.wav"]
    mix, _ = sf.read(song, dtype="float32")
    vocals, rate = sf.read(files[0], dtype="float32")
    instrumental, _ = sf.read(files[1], dtype="float32")
    assert rate == 44100 and vocals.shape == mix.shape == instrumental.shape
    assert np.abs(vocals).max() > 1e-4
    np.testing.assert_allclose(vocals + instrumental, mix, atol=1e-6)
    stages = [e[1] for e in reporter.events if e[0] == "start"]
    assert stages == ["decode", "bs_roformer_vocals", "write"]
    assert ("decoded", 2.0) in reporter.events
    progress = [e for e in reporter.events if e[0] == "progress"]
    assert progress[0][2] == 0 and progress[-1][2] == progress[-1][3]  # from the start to the end


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all_4", "all_6"])
def test_multi_stem_modes_write_every_stem_in_order(separator, song, tmp_path, mode):
    settings = Request(stems=mode, output_format="flac", sample_rate=48000)
    files = [stem.path for stem in separate_file(separator, song, tmp_path / mode, settings)]
    assert [f.name for f in files] == [f"{stem}.flac" for stem in EXPECTED_ORDER[mode]]
    for f in files:
        info = sf.info(f)
        assert info.samplerate == 48000 and info.channels == 2
        assert abs(info.frames - 2 * 48000) <= 1
    if mode == "all_6":
        assert "htdemucs_6s" in separator.loaded_models  # loaded on first use, then kept


@pytest.mark.slow
@pytest.mark.parametrize(("requested", "roformer_batch", "demucs_batch"), [(None, 4, 8), (2, 2, 2)])
def test_models_use_their_configured_batch_size_unless_the_request_sets_one(
    tiny_weights_dir, tmp_path, requested, roformer_batch, demucs_batch
):
    """The RoFormer's default is its config's inference.batch_size, Demucs' the plan's batch_size."""
    separator = Separator(tiny_weights_dir, "cpu")
    batches = {"roformer": [], "demucs": []}
    record = lambda key: lambda module, args: batches[key].append(args[0].shape[0])  # noqa: E731
    separator.model("bs_roformer_vocals").checkpoint.model.register_forward_pre_hook(record("roformer"))
    for sub_model in separator.model("htdemucs_ft").bag.models:
        sub_model.register_forward_pre_hook(record("demucs"))
    settings = Request(stems="all_4", batch_size=requested, chunk_size=4.0, overlap=1.0)
    long_song = write_song(tmp_path / "long.wav", seconds=16.0)  # six 4 s chunks, many Demucs segments
    separate_file(separator, long_song, tmp_path / "out", settings)
    assert max(batches["roformer"]) == roformer_batch and max(batches["demucs"]) == demucs_batch


def test_missing_weights_are_named_before_anything_loads(tmp_path):
    """The project's manifest applies to a folder without its own: every file of every model is named,
    lazy models included, in one line with the fetch command once."""
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(WeightsError) as error:
        Separator(empty, "cpu")
    message = str(error.value)
    for name in load_manifest(MANIFEST_PATH):
        assert f"{empty / name.target}: missing" in message
    assert message.count("python -m separation.weights fetch") == 1 and "\n" not in message


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_weights_fail_setup_naming_the_file(tiny_weights_dir, tmp_path, damage):
    """Bytes written into the middle of a checkpoint keep it loadable: its sha256 gives it away at setup."""
    weights = shutil.copytree(tiny_weights_dir, tmp_path / "weights")
    checkpoint = weights / StemPlan.for_weights(weights).models["bs_roformer_mega53"].checkpoint  # lazy
    data = bytearray(checkpoint.read_bytes())
    if damage == "flipped":
        data[len(data) // 2 : len(data) // 2 + 1000] = os.urandom(1000)
    else:
        del data[-1000:]
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(WeightsError) as error:
        Separator(weights, "cpu")
    expected = "sha256 is" if damage == "flipped" else f"size is {len(data)} bytes"
    assert f"{checkpoint}: {expected}" in str(error.value) and "weights fetch" in str(error.value)


@pytest.mark.slow
def test_guitar_mode_computes_head_20_only_and_returns_the_song_without_the_guitar(
    tiny_weights_dir, song, tmp_path
):
    separator = Separator(tiny_weights_dir, "cpu")
    assert "bs_roformer_mega53" not in separator.loaded_models  # lazy
    request = Request(stems="guitar", output_format="wav", wav_bit_depth="32-float")
    written = separate_file(separator, song, tmp_path, request)
    assert [stem.path.name for stem in written] == [
        "vocals.wav",
        "instrumental.wav",
        "guitar.wav",
        "no_guitar.wav",
    ]
    mega53 = separator.model("bs_roformer_mega53")
    assert loaded_heads(mega53.checkpoint.model) == [20] and mega53.spec.stem_names()[20] == "guitar"

    mix = decode_audio(song, max_duration_seconds=MAX_DURATION_SECONDS)
    guitar, no_guitar = (sf.read(stem.path, dtype="float32")[0].T for stem in written[2:])
    np.testing.assert_allclose(guitar + no_guitar, mix, atol=1e-6)
    # head 20 of the file, at the config's 20 s chunks and half overlap (not the request's 8 s)
    reference = RoformerCheckpoint(
        mega53.spec.settings["model"], tiny_weights_dir / mega53.spec.checkpoint, heads=[20]
    )
    chunk, overlap = mega53.spec.chunking_samples(request.run_options)
    assert (chunk, overlap) == (882_000, 441_000)
    model = lambda audio: reference.model(audio, heads=[20])  # noqa: E731
    events = separate_chunked(model, torch.from_numpy(mix), "cpu", chunk, overlap, 1, "fp32")
    expected = chunked_output(events)[0]
    np.testing.assert_allclose(guitar, expected.numpy(), atol=1e-6)


@pytest.mark.slow
def test_guitar_only_runs_mega53_alone_and_gives_the_guitar_modes_files(tiny_weights_dir, song, tmp_path):
    """No vocals model runs for it; its guitar and no_guitar are the guitar mode's, byte for byte."""
    separator = Separator(tiny_weights_dir, "cpu")
    reporter = RecordingReporter()
    alone = separate_file(separator, song, tmp_path / "alone", Request(stems="guitar_only"), reporter)
    assert [stem.name for stem in alone] == ["guitar", "no_guitar"]
    assert [e[1] for e in reporter.events if e[0] == "start"] == ["decode", "bs_roformer_mega53", "write"]
    with_vocals = {
        stem.name: stem for stem in separate_file(separator, song, tmp_path / "all", Request(stems="guitar"))
    }
    for stem in alone:
        assert stem.path.read_bytes() == with_vocals[stem.name].path.read_bytes()
        assert stem.origin == Origin("bs_roformer_mega53", "mit-reported")
    assert with_vocals["instrumental"].origin == Origin("bs_roformer_vocals", "none-stated")


def test_an_unknown_device_is_one_line(tiny_weights_dir):
    with pytest.raises(SettingsError, match="unknown device 'warp-drive'; use cpu or cuda"):
        Separator(tiny_weights_dir, "warp-drive")


@pytest.mark.slow
def test_extra_stems_come_after_the_mode_in_the_order_given(tiny_weights_dir, song, tmp_path):
    separator = Separator(tiny_weights_dir, "cpu")
    settings = Request(stems="vocals_instrumental", extra_stems="piano, electric-guitar,kick")
    written = separate_file(separator, song, tmp_path, settings)
    assert [stem.name for stem in written] == ["vocals", "instrumental", "piano", "electric-guitar", "kick"]
    assert all(stem.path == tmp_path / f"{stem.name}.wav" and stem.path.is_file() for stem in written)
    names = separator.model("bs_roformer_mega53").spec.stem_names()
    assert loaded_heads(separator.model("bs_roformer_mega53").checkpoint.model) == sorted(
        names.index(name) for name in ("piano", "electric-guitar", "kick")
    )


@pytest.mark.slow
def test_a_write_failing_while_demucs_runs_leaves_demucs_usable(
    tiny_weights_dir, song, tmp_path, monkeypatch, device
):
    """The failed request's Demucs run is closed at once (it holds a lock and the seeded `random` while it
    runs): the next request is served, not blocked behind it."""
    separator = Separator(tiny_weights_dir, device)
    real_write = StemStream.write

    def failing_write(stream, block):
        if stream.stem_name == "drums":
            raise OSError("disk full")
        real_write(stream, block)

    settings = Request(stems="all_4", chunk_size=4.0, overlap=1.0)
    monkeypatch.setattr(StemStream, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        separate_file(separator, song, tmp_path / "failed", settings)
    monkeypatch.setattr(StemStream, "write", real_write)
    second = threading.Thread(target=separate_file, args=(separator, song, tmp_path / "next", settings))
    second.start()
    second.join(timeout=120)
    assert not second.is_alive() and len(list((tmp_path / "next").iterdir())) == 5
