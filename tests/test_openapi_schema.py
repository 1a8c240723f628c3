"""`.cog/openapi_schema.json` is current with predict.py (whose inputs tests/test_request.py holds to the
declaration), in the shape Cog gives it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from separation.__main__ import parse_args
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan

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


def test_the_schema_carries_the_plan_modes_and_the_longest_extra_stems(generator):
    """What the runtime checks before run() is called: the modes (guitar_only among them) and the length
    of extra_stems (a megabyte of it is refused with a 422, not handed to the model)."""
    schemas = json.loads(generator.SCHEMA_PATH.read_text())["components"]["schemas"]
    plan = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)
    assert schemas["stems"]["enum"] == list(plan.modes) and "guitar_only" in plan.modes
    assert schemas["Input"]["properties"]["extra_stems"]["maxLength"] == len(", ".join(plan.extra_stem_names))


def test_every_extra_stem_name_is_listed_for_the_client(predictor, capsys):
    """The schema's extra_stems description and the CLI help name all 53 instruments."""
    names = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME).extra_stem_names
    assert len(names) == 53
    description = predictor.inputs["extra_stems"].description
    assert description.endswith(", ".join(names) + ".")
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    assert ",".join(names) in help_text
