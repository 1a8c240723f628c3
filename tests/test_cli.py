"""The command line: several inputs, a folder per input, re-runs, one-line errors, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import soundfile as sf

from fixtures.scaled_mix import register, write_scaled_mix_weights
from separation.__main__ import main, parse_args
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan
from separation.weights.manifest import REPO_ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    fast = ["--chunk-size", "4", "--overlap", "1"]
    return subprocess.run(
        [sys.executable, "-m", "separation", *args, *fast],
        cwd=REPO_ROOT,
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
    for name in ("song.wav", "other song.wav"):
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
    assert (out / "song.wav" / "vocals.wav").exists()


@pytest.mark.slow
def test_cli_without_weights_stops_with_one_line(tmp_path, song):
    result = run_cli(str(song), "--weights", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "model_bs_roformer_ep_317_sdr_12.9755.ckpt: missing" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_names_a_bad_extra_stem_in_one_line(tiny_weights_dir, song, tmp_path):
    result = run_cli(str(song), "--weights", str(tiny_weights_dir), "--extra-stems", "piano,gutar")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "unknown name 'gutar'" in result.stderr
    assert "acoustic-guitar" in result.stderr


def test_inputs_that_share_a_stem_name_get_a_folder_each(song, tmp_path, monkeypatch):
    """With a stand-in model (fixtures/scaled_mix.py): the folders are the command line's, not the model's."""
    register(monkeypatch)
    plan = {
        "complements": {"instrumental": "vocals"},
        "modes": {"vocals_instrumental": {"models": {"voice": ["vocals"]}, "complements": ["instrumental"]}},
        "output_order": ["vocals", "instrumental"],
    }
    weights = write_scaled_mix_weights(tmp_path / "weights", {"voice": {"gains": {"vocals": 0.5}}}, plan)
    flac = tmp_path / "song.flac"
    sf.write(flac, sf.read(song)[0], 44100)
    out = tmp_path / "separated"
    assert main([str(song), str(flac), "--weights", str(weights), "--out", str(out)]) == 0
    for name in ("song.wav", "song.flac"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["instrumental.wav", "vocals.wav"]


@pytest.mark.slow
def test_a_rerun_replaces_the_stems_and_the_report(tiny_weights_dir, song, tmp_path):
    out = tmp_path / "separated"
    common = [str(song), "--weights", str(tiny_weights_dir), "--out", str(out)]
    assert main([*common, "--stems", "all_4", "--format", "flac", "--json"]) == 0
    (out / "song.wav" / "notes.txt").write_text("mine")  # not the tool's: it stays
    assert main([*common, "--format", "mp3"]) == 0
    left = sorted(p.name for p in (out / "song.wav").iterdir())
    assert left == ["instrumental.mp3", "notes.txt", "vocals.mp3"]


def test_two_inputs_with_one_file_name_are_refused_before_anything_loads(song, tmp_path, capsys):
    twin = tmp_path / "elsewhere" / "song.wav"
    twin.parent.mkdir()
    twin.write_bytes(song.read_bytes())
    assert main([str(song), str(twin), "--weights", str(tmp_path / "no-weights")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: several inputs are named 'song.wav'"), err


def test_stems_help_lists_every_mode_with_its_stems(capsys):
    plan = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for mode in plan.modes:
        assert f"{mode}: {', '.join(plan.stems_of(mode))}" in help_text


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (
            ["--chunk-size", "30", "--overlap", "8", "--batch-size", "16"],
            r"need about [\d.]+ GiB .* \(batch_size 4 fits\)",
        ),
        (["--stems", "guitar", "--batch-size", "16"], "bs_roformer_mega53: chunks of 20 s in batches of 16"),
    ],
)
def test_a_forward_pass_too_large_for_the_limit_is_refused_before_anything_loads(
    options, words, song, tmp_path, capsys
):
    """The real models' geometry (the project's plan; no weights needed): one line, the size and a batch
    size that fits."""
    assert main([str(song), "--weights", str(tmp_path / "no-weights"), *options]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(f"error: .*{words}", err), err
    assert "the limit is 12 GiB" in err
