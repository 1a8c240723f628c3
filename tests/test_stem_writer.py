"""The stem writer, through the pipeline with stand-in models (fixtures/scaled_mix.py): spans streamed into
files equal to the whole stems written at once, complements, failures midway, stems kept once handed out,
figures, and the model held back by a slow encoder."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from fixtures.processes import ffmpeg_children
from fixtures.requests import MAX_DURATION_SECONDS, output_settings
from fixtures.scaled_mix import StandInFailure, register, write_scaled_mix_weights
from fixtures.songs import write_song
from separation.audio.decode import decode_audio
from separation.audio.stem_figures import StemFigures, measure_mix
from separation.audio.stem_file import RESCALE_PEAK_DBFS, StemStream, write_stem
from separation.errors import SettingsError, WeightsError
from separation.pipeline import Separator
from separation.request import Request
from separation.stem_writer import MAX_QUEUED_SPANS, Origin

PLAN = {
    "complements": {"instrumental": "vocals"},
    "modes": {
        "vocals_instrumental": {"models": {"voice": ["vocals"]}, "complements": ["instrumental"]},
        "all_4": {
            "models": {"voice": ["vocals"], "band": ["drums", "bass", "other"]},
            "complements": ["instrumental"],
        },
    },
    "output_order": ["vocals", "instrumental", "drums", "bass", "other"],
}


def stand_in_separator(folder: Path, monkeypatch, device, vocals_gain=0.6, voice=(), band=()) -> Separator:
    """`voice` gives vocals = gain x mix in 0.25 s spans; `band` gives drums, bass, other in one span; the
    dicts `voice` and `band` add to their entries (e.g. fail_after_spans). The Separator is made for
    `device` (the stand-ins compute on the CPU whatever it is)."""
    register(monkeypatch)
    models = {
        "voice": {"gains": {"vocals": vocals_gain}, "span_samples": 11025, **dict(voice)},
        "band": {"gains": {"drums": 0.1, "bass": 0.2, "other": 0.3}, "span_samples": 10**9, **dict(band)},
    }
    return Separator(write_scaled_mix_weights(folder, models, PLAN), device)


def request(output=None, **fields) -> Request:
    """A Request with these fields and, where given, the fields of an OutputSettings."""
    return Request(**fields, **(dataclasses.asdict(output) if output else {}))


def written(separator: Separator, song: Path, out_dir: Path, **fields) -> list[Path]:
    return [stem.path for stem in separator.stems_as_written(song, out_dir, request(**fields))]


def wait_until_held_back(thread: threading.Thread, timeout_seconds: float = 60) -> None:
    """Wait until `thread` (the one running the model) waits for a place in a stem's full queue: its stack
    shows the stem file's `write_span` waiting in the semaphore's `acquire`."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        frame, names = sys._current_frames().get(thread.ident), []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        if "write_span" in names and "acquire" in names[: names.index("write_span")]:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"the model was not held back within {timeout_seconds} s")


OUTPUTS = {
    "wav16": output_settings(output_format="wav", wav_bit_depth="16"),
    "wav24-48k": output_settings(output_format="wav", wav_bit_depth="24", sample_rate=48000),
    "flac16-48k": output_settings(output_format="flac", wav_bit_depth="16", sample_rate=48000),
    "mp3": output_settings(output_format="mp3", mp3_bitrate=128),
}
FAST_OUTPUTS = ("wav24-48k", "mp3")  # the fast loop's: a resampled PCM file and the ffmpeg encoder


# (32-bit float WAV is left out: libsndfile stamps its PEAK chunk with the time of writing)
@pytest.mark.parametrize(
    "output",
    [pytest.param(o, id=k, marks=() if k in FAST_OUTPUTS else pytest.mark.slow) for k, o in OUTPUTS.items()],
)
def test_streamed_stems_are_the_files_written_whole(song, tmp_path, monkeypatch, output, device):
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device)
    files = written(separator, song, tmp_path / "out", stems="all_4", output=output)
    mix = decode_audio(song, max_duration_seconds=MAX_DURATION_SECONDS)
    expected = {
        "vocals": 0.6 * mix,
        "instrumental": mix - np.float32(0.6) * mix,
        "drums": np.float32(0.1) * mix,
        "bass": np.float32(0.2) * mix,
        "other": np.float32(0.3) * mix,
    }
    assert [f.name for f in files] == [f"{stem}.{output.output_format}" for stem in expected]
    for file, (stem, audio) in zip(files, expected.items(), strict=True):
        reference = write_stem(audio, stem, tmp_path / "expected", output)
        assert file.read_bytes() == reference.read_bytes(), stem


def test_a_clipping_instrumental_is_rescaled_as_a_whole_write_rescales_it(tmp_path, monkeypatch, device):
    song = write_song(tmp_path / "loud.wav", seconds=2.0)
    sf.write(song, 2 * sf.read(song, dtype="float32")[0], 44100, subtype="FLOAT")  # peaks near 1
    # the instrumental is 1.25x the mix
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device, vocals_gain=-0.25)
    output = output_settings(output_format="wav", wav_bit_depth="24")
    vocals, instrumental = written(separator, song, tmp_path / "out", output=output)
    mix = decode_audio(song, max_duration_seconds=MAX_DURATION_SECONDS)
    reference = write_stem(mix - np.float32(-0.25) * mix, "instrumental", tmp_path / "expected", output)
    assert instrumental.read_bytes() == reference.read_bytes()
    peak = np.abs(sf.read(instrumental, dtype="float32")[0]).max()
    assert 20 * np.log10(peak) == pytest.approx(RESCALE_PEAK_DBFS, abs=1e-3)


@pytest.mark.parametrize("output_format", ["wav", "mp3"])
def test_a_model_failing_midway_leaves_no_files_and_no_encoders(
    song, tmp_path, monkeypatch, output_format, device
):
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device, voice={"fail_after_spans": 3})
    with pytest.raises(StandInFailure):
        written(separator, song, tmp_path / "out", output=output_settings(output_format=output_format))
    assert not list((tmp_path / "out").iterdir()) and not ffmpeg_children()


@pytest.mark.parametrize("output_format", ["wav", "mp3"])
def test_non_finite_output_stops_at_once_naming_the_model(song, tmp_path, monkeypatch, output_format, device):
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device, vocals_gain=float("nan"))
    with pytest.raises(WeightsError, match="voice produced NaN or infinite samples") as error:
        written(separator, song, tmp_path / "out", output=output_settings(output_format=output_format))
    assert "python -m separation.weights verify" in str(error.value)
    assert separator.model("voice").spans == 1  # the first span stopped it
    assert not list((tmp_path / "out").iterdir()) and not ffmpeg_children()


def test_stems_handed_out_stay_when_a_later_model_fails(song, tmp_path, monkeypatch, device):
    """The vocals and instrumental are yielded before the next model runs; its failing leaves them, and
    nothing of its own stems."""
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device, band={"fail_after_spans": 0})
    handed_out = []
    with pytest.raises(StandInFailure):
        for stem in separator.stems_as_written(
            song, tmp_path / "out", request(stems="all_4", output_format="mp3")
        ):
            handed_out.append(stem.path.name)
    assert handed_out == ["vocals.mp3", "instrumental.mp3"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["instrumental.mp3", "vocals.mp3"]
    assert not ffmpeg_children()


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_every_stem_comes_with_its_figures(song, tmp_path, monkeypatch, sample_rate, device):
    """Silent vocals are reported as silence, not present; the instrumental is then the mix itself."""
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device, vocals_gain=0.0)
    output = output_settings(output_format="wav", wav_bit_depth="32-float", sample_rate=sample_rate)
    vocals, instrumental = separator.stems_as_written(song, tmp_path, request(output))
    assert vocals.figures == StemFigures(
        peak_dbfs=None, loudness_lufs=None, active_fraction=0.0, present=False
    )
    mix = decode_audio(song, max_duration_seconds=MAX_DURATION_SECONDS)
    assert instrumental.figures.loudness_lufs == pytest.approx(measure_mix(mix, 44100), abs=0.05)
    assert instrumental.figures.peak_dbfs == pytest.approx(20 * np.log10(np.abs(mix).max()), abs=0.05)
    assert instrumental.figures.active_fraction == 1.0 and instrumental.figures.present
    # a complement comes from its source's model; the tiny manifest carries the project's labels
    assert vocals.origin == instrumental.origin == Origin("voice", "none-stated")


def test_a_slow_encoder_holds_the_model_back(song, tmp_path, monkeypatch, device):
    """While a stem's writer is stuck, the model gets at most MAX_QUEUED_SPANS spans ahead of it: spans do
    not pile up in memory."""
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device)
    release, real_write = threading.Event(), StemStream.write

    def stuck_write(stream, block):
        release.wait(timeout=30)
        real_write(stream, block)

    monkeypatch.setattr(StemStream, "write", stuck_write)
    run = threading.Thread(target=lambda: written(separator, song, tmp_path / "out"))
    run.start()
    wait_until_held_back(run)
    spans_while_stuck = separator.model("voice").spans
    release.set()
    run.join(timeout=60)
    assert spans_while_stuck == MAX_QUEUED_SPANS + 1  # queued ones, and the next waiting for a place
    assert separator.model("voice").spans == 8
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["instrumental.wav", "vocals.wav"]


def test_a_request_whose_spools_do_not_fit_the_disk_is_refused_before_any_model_runs(
    song, tmp_path, monkeypatch, device
):
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**12, used=0, free=1000))
    with pytest.raises(SettingsError, match=r"2 stems of this song need 0\.0 GB .* 0\.0 GB are free"):
        written(separator, song, tmp_path / "out", output=output_settings(output_format="flac"))
    assert separator.model("voice").spans == 0 and not list((tmp_path / "out").glob("*"))
    float_wav = output_settings(output_format="wav", wav_bit_depth="32-float")  # no spool: files only
    assert len(written(separator, song, tmp_path / "out", output=float_wav)) == 2


def test_a_write_failing_while_the_queue_is_full_stops_the_model(song, tmp_path, monkeypatch, device):
    """The model waits for a place in a full queue when a write fails: the queued spans are skipped, the
    model stops at its next span with the write's error, and no file or encoder is left."""
    separator = stand_in_separator(tmp_path / "weights", monkeypatch, device)
    release, real_write = threading.Event(), StemStream.write

    def slow_then_failing_write(stream, block):
        release.wait(timeout=30)
        if stream.stem_name == "vocals":
            raise OSError("disk full")
        real_write(stream, block)

    monkeypatch.setattr(StemStream, "write", slow_then_failing_write)
    errors = []

    def separate() -> None:
        try:
            written(separator, song, tmp_path / "out")
        except OSError as error:
            errors.append(error)

    run = threading.Thread(target=separate)
    run.start()
    wait_until_held_back(run)  # the queue is full and the model waits
    release.set()
    run.join(timeout=60)
    assert not run.is_alive() and [str(error) for error in errors] == ["disk full"]
    assert not list((tmp_path / "out").glob("*.wav")) and not ffmpeg_children()
