"""`.cog/openapi_schema.json` is current with predict.py, and the Cog inputs and the command line offer the
choices and defaults that `separation.request` and the stem plan declare."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from separation.__main__ import parse_args, settings_from_args
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan
from separation.request import (
    MP3_BITRATES,
    OUTPUT_FORMATS,
    OUTPUT_SAMPLE_RATES,
    PRECISIONS,
    WAV_BIT_DEPTHS,
    OutputSettings,
    SeparationSettings,
)

GENERATOR_PATH = Path(__file__).resolve().parents[1] / "scripts" / "generate_openapi_schema.py"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("generate_openapi_schema", GENERATOR_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def predictor(generator):
    return generator.load_predictor()


def test_committed_schema_is_current(generator, predictor):
    fresh = generator.render(generator.openapi_document(predictor))
    assert generator.SCHEMA_PATH.read_text() == fresh, "stale: run python scripts/generate_openapi_schema.py"


def test_check_mode_fails_on_a_stale_file_and_passes_once_written(generator, tmp_path):
    path = tmp_path / "openapi_schema.json"
    assert generator.main(["--check", "--output", str(path)]) == 1  # missing
    path.write_text(generator.SCHEMA_PATH.read_text().replace("vocals_instrumental", "karaoke"))
    assert generator.main(["--check", "--output", str(path)]) == 1
    assert generator.main(["--output", str(path)]) == 0
    assert generator.main(["--check", "--output", str(path)]) == 0


def test_input_schema_has_the_cog_shape(generator):
    schemas = json.loads(generator.SCHEMA_PATH.read_text())["components"]["schemas"]
    inputs = schemas["Input"]
    assert inputs["required"] == ["audio"]
    names = ["audio", "stems", "extra_stems", "output_format", "chunk_size", "overlap", "sample_rate"]
    names += ["wav_bit_depth", "mp3_bitrate"]
    assert list(inputs["properties"]) == names  # run()'s argument order
    assert [prop["x-order"] for prop in inputs["properties"].values()] == list(range(len(names)))
    assert inputs["properties"]["audio"]["format"] == "uri"
    assert inputs["properties"]["chunk_size"]["minimum"] < inputs["properties"]["chunk_size"]["maximum"]
    assert inputs["properties"]["stems"]["allOf"] == [{"$ref": "#/components/schemas/stems"}]
    assert schemas["stems"]["type"] == "string" and schemas["sample_rate"]["type"] == "integer"
    uri_iterator = {
        "title": "Output",
        "type": "array",
        "items": {"type": "string", "format": "uri"},
        "x-cog-array-type": "iterator",  # files are uploaded as they are yielded
    }
    assert schemas["Output"] == uri_iterator


def test_stems_choices_are_the_stem_plan_modes(predictor):
    plan = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)
    assert predictor.inputs["stems"].choices == list(plan.modes)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("output_format", OUTPUT_FORMATS),
        ("wav_bit_depth", WAV_BIT_DEPTHS),
        ("mp3_bitrate", MP3_BITRATES),
        ("sample_rate", OUTPUT_SAMPLE_RATES),
    ],
)
def test_output_choices_are_the_audio_module_constants(predictor, name, allowed):
    assert predictor.inputs[name].choices == list(allowed)  # same values, types (str vs int) and order


def test_defaults_are_the_package_defaults(predictor):
    settings, output = SeparationSettings(), OutputSettings()
    expected = {
        "stems": settings.stems,
        "extra_stems": ",".join(settings.extra_stems),
        "chunk_size": settings.chunk_seconds,
        "overlap": settings.overlap_seconds,
        "output_format": output.format,
        "sample_rate": output.sample_rate,
        "wav_bit_depth": output.wav_bit_depth,
        "mp3_bitrate": output.mp3_bitrate,
    }
    assert {name: predictor.inputs[name].default for name in expected} == expected


def test_cli_defaults_and_choices_are_the_package_ones():
    settings, output = SeparationSettings(), OutputSettings()
    cli_settings = settings_from_args(parse_args(["song.wav"]))
    assert cli_settings == settings and cli_settings.output == output
    with pytest.raises(SystemExit):
        parse_args(["song.wav", "--precision", "int8"])
    assert all(parse_args(["x", "--precision", p]).precision == p for p in PRECISIONS)


def test_every_extra_stem_name_is_listed_for_the_client(predictor, capsys):
    """The schema's extra_stems description and the CLI help name all 53 instruments."""
    names = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME).extra_stem_names
    assert len(names) == 53
    description = predictor.inputs["extra_stems"].description
    assert description.endswith(", ".join(names))
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    assert ",".join(names) in help_text
