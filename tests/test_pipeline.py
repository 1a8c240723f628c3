"""The pipeline: stem plan, settings, model loading and a whole separation with tiny models."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import separation.models as models_module
import separation.serving as serving_module
from fixtures.processes import ffmpeg_children
from fixtures.songs import write_song
from fixtures.tiny_roformer import loaded_heads
from separation.chunking import separate_chunked
from separation.decode import decode_audio
from separation.demucs_apply import DemucsSeparator
from separation.encode import RESCALE_PEAK_DBFS, StemStream, write_stem
from separation.errors import AudioError, SettingsError, WeightsError
from separation.manifest import MANIFEST_PATH, load_manifest
from separation.pipeline import Separator
from separation.plan import StemPlan
from separation.progress import LogReporter, Reporter
from separation.roformer_checkpoint import RoformerCheckpoint
from separation.serving import SeparationService
from separation.settings import OutputSettings, SeparationSettings
from separation.stem_report import StemReport, measure_mix

REPO = Path(__file__).resolve().parents[1]
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
def separator(tiny_weights_dir) -> Separator:
    return Separator(tiny_weights_dir, "cpu")


@pytest.mark.parametrize(("chunk", "overlap"), [(4.0, 4.0), (4.0, 5.0), (8.0, 8.0)])
def test_overlap_must_be_below_chunk(chunk, overlap):
    with pytest.raises(SettingsError, match=r"overlap .* must be below chunk"):
        SeparationSettings(chunk_seconds=chunk, overlap_seconds=overlap)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, True])
def test_bad_batch_size_is_a_clear_error(batch_size):
    with pytest.raises(SettingsError, match="batch size must be an integer >= 1"):
        SeparationSettings(batch_size=batch_size)


@pytest.mark.slow
@pytest.mark.parametrize(("requested", "roformer_batch", "demucs_batch"), [(None, 4, 8), (2, 2, 2)])
def test_models_use_their_configured_batch_size_unless_the_request_sets_one(
    separator, song, tmp_path, monkeypatch, requested, roformer_batch, demucs_batch
):
    """The RoFormer's default is its config's inference.batch_size, Demucs' the plan's batch_size."""
    used = {}
    real_chunked, real_demucs = models_module.separate_chunked, DemucsSeparator.separate

    def chunked(model, mix, device, chunk, overlap, batch_size, *args, **kwargs):
        used["roformer"] = batch_size
        return real_chunked(model, mix, device, chunk, overlap, batch_size, *args, **kwargs)

    def demucs(self, name, mix, wanted, progress, batch_size):
        used["demucs"] = batch_size
        return real_demucs(self, name, mix, wanted, progress, batch_size)

    monkeypatch.setattr(models_module, "separate_chunked", chunked)
    monkeypatch.setattr(DemucsSeparator, "separate", demucs)
    separator.separate_file(song, tmp_path, SeparationSettings(stems="all_4", batch_size=requested))
    assert used == {"roformer": roformer_batch, "demucs": demucs_batch}


def test_setup_loads_setup_models_only(tiny_weights_dir):
    assert Separator(tiny_weights_dir, "cpu").loaded_models == ["bs_roformer_vocals", "htdemucs_ft"]


@pytest.mark.slow
def test_vocals_instrumental_files_and_instrumental_is_mix_minus_vocals(separator, song, tmp_path):
    reporter = RecordingReporter()
    settings = SeparationSettings(output=OutputSettings(format="wav", wav_bit_depth="32-float"))
    files = [stem.path for stem in separator.separate_file(song, tmp_path / "out", settings, reporter)]
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
    assert progress and progress[-1][2] == progress[-1][3]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all_4", "all_6"])
def test_multi_stem_modes_write_every_stem_in_order(separator, song, tmp_path, mode):
    settings = SeparationSettings(stems=mode, output=OutputSettings(format="flac", sample_rate=48000))
    files = [stem.path for stem in separator.separate_file(song, tmp_path / mode, settings)]
    assert [f.name for f in files] == [f"{stem}.flac" for stem in EXPECTED_ORDER[mode]]
    for f in files:
        info = sf.info(f)
        assert info.samplerate == 48000 and info.channels == 2
        assert abs(info.frames - 2 * 48000) <= 1
    if mode == "all_6":
        assert "htdemucs_6s" in separator.loaded_models  # loaded on first use, then kept


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


@pytest.mark.parametrize("output_format", ["wav", "mp3"])
def test_non_finite_output_stops_at_once_naming_the_model(
    separator, song, tmp_path, monkeypatch, output_format
):
    model = FailsOnCall(fail_on=0)  # never fails by itself
    model.gain = float("nan")
    monkeypatch.setattr(separator.model("bs_roformer_vocals"), "model", model)
    settings = SeparationSettings(**STREAMING, output=OutputSettings(format=output_format))
    with pytest.raises(WeightsError, match="bs_roformer_vocals produced NaN or infinite samples") as error:
        separator.separate_file(song, tmp_path / "out", settings)
    assert "python -m separation.weights verify" in str(error.value)
    assert model.calls == 2  # the first batch's span stopped it (the second was already under way) of 6
    assert not list((tmp_path / "out").iterdir()) and not ffmpeg_children()


def test_log_reporter_prints_eta_and_records_metrics():
    lines, metrics, now = [], [], [0.0]
    reporter = LogReporter(
        record_metric=lambda key, value, mode="replace": metrics.append((key, value, mode)),
        log=lines.append,
        interval_seconds=2.0,
        clock=lambda: now[0],
    )
    reporter.stage_started("bs_roformer_vocals")
    for done in range(1, 5):
        now[0] += 1.5
        reporter.progress("bs_roformer_vocals", done, 4)
    reporter.stage_finished("bs_roformer_vocals", 6.0)
    assert lines == [
        "[bs_roformer_vocals] started",
        "[bs_roformer_vocals] 50% (2/4), ETA 3 s",
        "[bs_roformer_vocals] 100% (4/4), ETA 0 s",
        "[bs_roformer_vocals] done in 6.00 s",
    ]
    assert metrics == [("stage_seconds.bs_roformer_vocals", 6.0, "incr")]


SERVICE_OPTIONS = dict(
    stems="vocals_instrumental",
    extra_stems="",
    output_format="mp3",
    chunk_size=4.0,
    overlap=1.0,
    sample_rate=44100,
    wav_bit_depth="24",
    mp3_bitrate=192,
)


@pytest.fixture
def downloaded(song, tmp_path, monkeypatch) -> Path:
    """The song where the runtime puts a URL input: `tmp<random><name>` in the temporary folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "runtime-tmp"))
    (tmp_path / "runtime-tmp").mkdir()
    with tempfile.NamedTemporaryFile(suffix="song.wav", delete=False) as copy:
        copy.write(song.read_bytes())
    return Path(copy.name)


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


def run_cli(*args: str) -> subprocess.CompletedProcess:
    fast = ["--chunk-size", "4", "--overlap", "1"]
    return subprocess.run(
        [sys.executable, "-m", "separation", *args, *fast],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_separates_several_inputs_with_the_same_file_names(tiny_weights_dir, song, tmp_path):
    other = tmp_path / "other song.wav"
    other.write_bytes(song.read_bytes())
    out = tmp_path / "separated"
    result = run_cli(
        str(song), str(other), "--weights", str(tiny_weights_dir), "--out", str(out), "--format", "flac"
    )
    assert result.returncode == 0, result.stderr
    for name in ("song", "other song"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["instrumental.flac", "vocals.flac"]


@pytest.mark.slow
def test_cli_reports_a_bad_input_in_one_line_and_goes_on(tiny_weights_dir, song, tmp_path):
    bogus = tmp_path / "notes.mp3"
    bogus.write_text("not audio")
    out = tmp_path / "separated"
    result = run_cli(str(bogus), str(song), "--weights", str(tiny_weights_dir), "--out", str(out))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "notes.mp3" in errors[0]
    assert (out / "song" / "vocals.wav").exists()


def test_cli_without_weights_stops_with_one_line(tmp_path, song):
    result = run_cli(str(song), "--weights", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "model_bs_roformer_ep_317_sdr_12.9755.ckpt: missing" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------------
# Writing the BS-RoFormer's stems while it runs

STREAMING = dict(chunk_seconds=0.5, overlap_seconds=0.1, batch_size=1)  # several blocks from a 2 s song


class Gain(torch.nn.Module):
    """A stand-in vocals model: [b, c, t] -> [b, 1, c, t], the input times `gain`."""

    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain

    def forward(self, x, heads=(0,)):
        return self.gain * x[:, None].expand(-1, len(heads), -1, -1)


class FailsOnCall(Gain):
    """Raises on its `fail_on`-th forward call."""

    def __init__(self, fail_on: int):
        super().__init__(0.5)
        self.calls, self.fail_on = 0, fail_on

    def forward(self, x, heads=(0,)):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("the model failed midway")
        return super().forward(x, heads)


@pytest.fixture
def chunk_spy(monkeypatch) -> dict:
    """Records what separate_chunked returned and how many final blocks it handed out."""
    seen = {"returned": [], "final_blocks": 0}
    real_chunked = models_module.separate_chunked

    def chunked(*args, on_final=None, **kwargs):
        def counting(first_sample, block):
            seen["final_blocks"] += 1
            on_final(first_sample, block)

        result = real_chunked(*args, on_final=counting if on_final else None, **kwargs)
        seen["returned"].append(result)
        return result

    monkeypatch.setattr(models_module, "separate_chunked", chunked)
    return seen


@pytest.fixture
def stream_writes(monkeypatch) -> list[str]:
    """The stem of every StemStream.write call, in call order."""
    stems, real_write = [], StemStream.write

    def write(self, block):
        stems.append(self.stem_name)
        real_write(self, block)

    monkeypatch.setattr(StemStream, "write", write)
    return stems


def expected_files(song: Path, vocals: torch.Tensor, out_dir: Path, output: OutputSettings) -> list[Path]:
    """write_stem's files for these vocals and mix - vocals."""
    mix = decode_audio(song)
    return [
        write_stem(vocals.numpy(), "vocals", out_dir, output),
        write_stem(mix - vocals.numpy(), "instrumental", out_dir, output),
    ]


@pytest.mark.parametrize(
    "output",
    [OutputSettings(format="wav", wav_bit_depth="16"), OutputSettings(format="mp3", mp3_bitrate=128)],
    ids=["wav", "mp3"],
)
def test_streamed_stems_are_the_files_written_after_the_model(
    separator, song, tmp_path, monkeypatch, chunk_spy, stream_writes, output
):
    monkeypatch.setattr(separator.model("bs_roformer_vocals"), "model", Gain(0.6))  # fast
    settings = SeparationSettings(**STREAMING, output=output)
    files = [stem.path for stem in separator.separate_file(song, tmp_path / "out", settings)]
    assert chunk_spy["final_blocks"] > 2
    assert stream_writes.count("vocals") == chunk_spy["final_blocks"]  # every final span, as it came
    assert stream_writes.count("instrumental") == chunk_spy["final_blocks"]
    [vocals] = chunk_spy["returned"]
    expected = expected_files(song, vocals[0], tmp_path / "expected", output)
    assert [f.name for f in files] == [f.name for f in expected]
    assert all(f.read_bytes() == e.read_bytes() for f, e in zip(files, expected, strict=True))


def test_other_output_rates_write_after_the_model(
    separator, song, tmp_path, monkeypatch, chunk_spy, stream_writes
):
    monkeypatch.setattr(separator.model("bs_roformer_vocals"), "model", Gain(0.6))
    output = OutputSettings(format="wav", sample_rate=48000)
    files = [
        stem.path
        for stem in separator.separate_file(
            song, tmp_path / "out", SeparationSettings(**STREAMING, output=output)
        )
    ]
    assert not stream_writes  # nothing is streamed: each stem is resampled whole
    [vocals] = chunk_spy["returned"]
    expected = expected_files(song, vocals[0], tmp_path / "expected", output)
    assert all(f.read_bytes() == e.read_bytes() for f, e in zip(files, expected, strict=True))
    assert sf.info(files[0]).samplerate == 48000


@pytest.mark.parametrize("output_format", ["wav", "mp3"])
def test_a_model_failing_midway_leaves_no_files_and_no_encoders(
    separator, song, tmp_path, monkeypatch, chunk_spy, output_format
):
    monkeypatch.setattr(separator.model("bs_roformer_vocals"), "model", FailsOnCall(fail_on=4))
    settings = SeparationSettings(**STREAMING, output=OutputSettings(format=output_format))
    with pytest.raises(RuntimeError, match="failed midway"):
        separator.separate_file(song, tmp_path / "out", settings)
    assert chunk_spy["final_blocks"] >= 2  # the streams had been written to
    assert not list((tmp_path / "out").iterdir()) and not ffmpeg_children()


def test_a_clipping_instrumental_is_rescaled_as_write_stem_rescales_it(
    separator, tmp_path, monkeypatch, chunk_spy
):
    song = write_song(tmp_path / "loud.wav", seconds=2.0)
    mix = sf.read(song, dtype="float32")[0]
    sf.write(song, 2 * mix, 44100, subtype="FLOAT")  # peaks near 1
    monkeypatch.setattr(separator.model("bs_roformer_vocals"), "model", Gain(-0.25))  # mix - vocals: 1.25 mix
    output = OutputSettings(format="wav", wav_bit_depth="24")
    files = [
        stem.path
        for stem in separator.separate_file(
            song, tmp_path / "out", SeparationSettings(**STREAMING, output=output)
        )
    ]
    [vocals] = chunk_spy["returned"]
    expected = expected_files(song, vocals[0], tmp_path / "expected", output)
    assert all(f.read_bytes() == e.read_bytes() for f, e in zip(files, expected, strict=True))
    instrumental = sf.read(files[1], dtype="float32")[0]
    assert 20 * np.log10(np.abs(instrumental).max()) == pytest.approx(RESCALE_PEAK_DBFS, abs=1e-3)


def test_stems_handed_out_stay_when_a_later_model_fails(separator, song, tmp_path, monkeypatch):
    """The vocals and instrumental are yielded before Demucs runs; Demucs failing leaves them, and nothing of
    its own stems."""
    monkeypatch.setattr(separator.model("bs_roformer_vocals"), "model", Gain(0.6))

    def fail(*args, **kwargs):
        raise RuntimeError("Demucs failed")

    monkeypatch.setattr(DemucsSeparator, "separate", fail)
    settings = SeparationSettings(**STREAMING, stems="all_4", output=OutputSettings(format="mp3"))
    handed_out = []
    with pytest.raises(RuntimeError, match="Demucs failed"):
        for stem in separator.stems_as_written(song, tmp_path / "out", settings):
            handed_out.append(stem.path.name)
    assert handed_out == ["vocals.mp3", "instrumental.mp3"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["instrumental.mp3", "vocals.mp3"]
    assert not ffmpeg_children()


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_every_stem_comes_with_its_figures(separator, song, tmp_path, monkeypatch, sample_rate):
    """Silent vocals are reported as silence, not present; the instrumental is then the mix itself."""
    monkeypatch.setattr(separator.model("bs_roformer_vocals"), "model", Gain(0.0))
    output = OutputSettings(format="wav", wav_bit_depth="32-float", sample_rate=sample_rate)
    vocals, instrumental = separator.separate_file(
        song, tmp_path, SeparationSettings(**STREAMING, output=output)
    )
    assert vocals.report == StemReport(peak_dbfs=None, loudness_lufs=None, active_fraction=0.0, present=False)
    mix = decode_audio(song)
    assert instrumental.report.loudness_lufs == pytest.approx(measure_mix(mix, 44100), abs=0.05)
    assert instrumental.report.peak_dbfs == pytest.approx(20 * np.log10(np.abs(mix).max()), abs=0.05)
    assert instrumental.report.active_fraction == 1.0 and instrumental.report.present


# ---------------------------------------------------------------------------------------------------------
# The guitar mode and extra stems (the Mega-53 family, tiny: fp16, 53 heads, hop 512)


@pytest.mark.slow
def test_guitar_mode_computes_head_20_only_and_returns_the_song_without_the_guitar(
    tiny_weights_dir, song, tmp_path
):
    separator = Separator(tiny_weights_dir, "cpu")
    assert "bs_roformer_mega53" not in separator.loaded_models  # lazy
    output = OutputSettings(format="wav", wav_bit_depth="32-float")
    settings = SeparationSettings(stems="guitar", output=output)
    written = separator.separate_file(song, tmp_path, settings)
    assert [stem.path.name for stem in written] == [
        "vocals.wav",
        "instrumental.wav",
        "guitar.wav",
        "no_guitar.wav",
    ]
    mega53 = separator.model("bs_roformer_mega53")
    assert loaded_heads(mega53.model) == [20] and mega53.spec.stems[20] == "guitar"

    mix = decode_audio(song)
    guitar, no_guitar = (sf.read(stem.path, dtype="float32")[0].T for stem in written[2:])
    np.testing.assert_allclose(guitar + no_guitar, mix, atol=1e-6)
    # head 20 of the file, at the config's 20 s chunks and half overlap (not the request's 8 s)
    reference = RoformerCheckpoint(mega53.spec.config, tiny_weights_dir / mega53.spec.checkpoint, heads=[20])
    chunk, overlap = mega53.inference["chunk_samples"], mega53.inference["overlap_samples"]
    assert (chunk, overlap) == (882_000, 441_000)
    model = functools.partial(reference.model, heads=[20])
    expected = separate_chunked(model, torch.from_numpy(mix), "cpu", chunk, overlap)[0]
    np.testing.assert_allclose(guitar, expected.numpy(), atol=1e-6)


@pytest.mark.slow
def test_extra_stems_come_after_the_mode_in_the_order_given(tiny_weights_dir, song, tmp_path):
    separator = Separator(tiny_weights_dir, "cpu")
    settings = SeparationSettings(
        stems="vocals_instrumental", extra_stems=("piano", "electric-guitar", "kick")
    )
    written = separator.separate_file(song, tmp_path, settings)
    assert [stem.name for stem in written] == ["vocals", "instrumental", "piano", "electric-guitar", "kick"]
    assert all(stem.path == tmp_path / f"{stem.name}.wav" and stem.path.is_file() for stem in written)
    names = separator.model("bs_roformer_mega53").spec.stems
    assert loaded_heads(separator.model("bs_roformer_mega53").model) == sorted(
        names.index(name) for name in ("piano", "electric-guitar", "kick")
    )


def test_cli_names_a_bad_extra_stem_in_one_line(tiny_weights_dir, song, tmp_path):
    result = run_cli(str(song), "--weights", str(tiny_weights_dir), "--extra-stems", "piano,gutar")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "unknown name 'gutar'" in result.stderr
    assert "acoustic-guitar" in result.stderr
