"""The model-type registry: a new model type is a module of its own and one registry entry.

The type below is defined here, in the test, and registered; nothing in `separation/` knows it. A plan that
uses it runs through the service and the command line like the shipped types.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from fixtures.weights_manifest import write_local_manifest
from separation.__main__ import main
from separation.models.base import ModelSpec, Progress, RunOptions, StemSpan
from separation.models.registry import MODEL_TYPES
from separation.plan import PLAN_FILE_NAME, StemPlan
from separation.request import Request
from separation.serving import PredictionService


@dataclass(frozen=True, kw_only=True)
class PassThroughSpec(ModelSpec):
    """`echo`: the whole mix as its one stem, after checking that its one weight file says so."""

    type_name: ClassVar[str] = "pass_through"

    weights: str

    def stem_names(self) -> tuple[str, ...]:
        return ("echo",)

    def weight_files(self, weights_dir: Path) -> list[str]:
        return [self.weights]

    def build(self, weights_dir: Path, device: torch.device) -> PassThrough:
        assert (Path(weights_dir) / self.weights).read_text() == "pass through\n"
        return PassThrough()


class PassThrough:
    def separate(
        self, mix: torch.Tensor, stem_names: Sequence[str], options: RunOptions
    ) -> Iterator[Progress | StemSpan]:
        yield Progress(0, 1)
        yield StemSpan(0, {"echo": mix.clone()})
        yield Progress(1, 1)


PLAN = {
    "models": {"echo_model": {"type": "pass_through", "weights": "echo.txt"}},
    "complements": {"silence": "echo"},
    "modes": {"echo": {"models": {"echo_model": ["echo"]}, "complements": ["silence"]}},
    "output_order": ["echo", "silence"],
}


@pytest.fixture
def echo_weights(tmp_path, monkeypatch) -> Path:
    monkeypatch.setitem(MODEL_TYPES, PassThroughSpec.type_name, PassThroughSpec)
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "echo.txt").write_text("pass through\n")
    (folder / PLAN_FILE_NAME).write_text(yaml.safe_dump(PLAN))
    write_local_manifest(folder, source="a model type defined in a test")
    return folder


def test_the_manifest_of_a_new_type_lists_what_its_spec_names(echo_weights):
    manifest = yaml.safe_load((echo_weights / "weights.yaml").read_text())
    assert [(entry["target"], entry["model"]) for entry in manifest["files"]] == [("echo.txt", "echo_model")]
    assert isinstance(StemPlan.for_weights(echo_weights).models["echo_model"], PassThroughSpec)


def test_a_new_model_type_runs_through_the_service(echo_weights, downloaded):
    service = PredictionService(echo_weights, "cpu")
    files = {
        path.name: path
        for path in service.predict(downloaded, Request(stems="echo", wav_bit_depth="32-float"))
    }
    assert sorted(files) == ["echo.wav", "silence.wav", "stems.json"]
    mix, _ = sf.read(downloaded, dtype="float32")
    np.testing.assert_array_equal(sf.read(files["echo.wav"], dtype="float32")[0], mix)
    assert not sf.read(files["silence.wav"], dtype="float32")[0].any()


def test_a_new_model_type_runs_through_the_command_line(echo_weights, song, tmp_path, capsys):
    out = tmp_path / "separated"
    assert main([str(song), "--weights", str(echo_weights), "--stems", "echo", "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    assert sorted(path.name for path in folder.iterdir()) == ["echo.wav", "silence.wav"]
    assert "echo" in capsys.readouterr().out  # the figures table


def test_an_unregistered_type_is_refused_naming_the_known_ones(echo_weights, monkeypatch):
    monkeypatch.delitem(MODEL_TYPES, PassThroughSpec.type_name)
    with pytest.raises(Exception, match="unknown type 'pass_through'.*bs_roformer, demucs"):
        StemPlan.for_weights(echo_weights)
