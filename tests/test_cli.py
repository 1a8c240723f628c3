"""The command line: several inputs, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


def test_cli_names_a_bad_extra_stem_in_one_line(tiny_weights_dir, song, tmp_path):
    result = run_cli(str(song), "--weights", str(tiny_weights_dir), "--extra-stems", "piano,gutar")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "unknown name 'gutar'" in result.stderr
    assert "acoustic-guitar" in result.stderr
