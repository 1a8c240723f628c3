"""cog.yaml: valid per Cog's schema, and its weight download lines in agreement with the manifest."""

from __future__ import annotations

import json
import re
import shlex

import jsonschema
import pytest
import yaml

from separation.weights import command as weights
from separation.weights.command import build_commands
from separation.weights.manifest import REPO_ROOT, load_manifest

SCHEMA_PATH = REPO_ROOT / "tests" / "data" / "cog_config_schema_v1.0.json"


@pytest.fixture(scope="module")
def cog_config() -> dict:
    return yaml.safe_load((REPO_ROOT / "cog.yaml").read_text(encoding="utf-8"))


def test_cog_yaml_validates_against_the_cog_schema(cog_config):
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.validate(cog_config, schema)


def test_build_settings(cog_config):
    build = cog_config["build"]
    assert build["gpu"] is True
    assert build["cuda"] == "12.8"
    assert build["python_version"] == "3.11"
    assert {"ffmpeg", "libsndfile1", "curl"} <= set(build["system_packages"])
    assert "SEPARATION_WEIGHTS_DIR=/weights" in cog_config["environment"]


def test_run_points_at_the_runner_class(cog_config):
    assert cog_config["run"] == "predict.py:Runner"
    assert "predict" not in cog_config  # deprecated spelling


def test_python_requirements_pin_torch_exactly(cog_config):
    requirements = REPO_ROOT / cog_config["build"]["python_requirements"]
    lines = [line.split("#")[0].strip() for line in requirements.read_text(encoding="utf-8").splitlines()]
    torch_pins = [line for line in lines if re.match(r"torch\b", line)]
    assert len(torch_pins) == 1 and re.fullmatch(r"torch==\d+\.\d+\.\d+", torch_pins[0]), torch_pins


def test_build_run_is_generated_from_the_manifest(cog_config):
    weights_dir = dict(item.split("=", 1) for item in cog_config["environment"])["SEPARATION_WEIGHTS_DIR"]
    assert cog_config["build"]["run"] == build_commands(load_manifest(), weights_dir)


def test_every_manifest_file_has_exactly_one_checked_run_line(cog_config):
    """Each file's line ends with its sha256 check; a download line tries its URLs in the manifest's order,
    checking each download, and never the unconfirmed mirrors."""
    lines = cog_config["build"]["run"]
    for file in load_manifest():
        destination = f"/weights/{file.target}"
        (line,) = [line for line in lines if f" {destination} " in line]
        assert line.endswith(
            f"'{file.sha256}  {destination}' | sha256sum --check --strict -"
            + (
                ""
                if file.package_file
                else f" || {{ echo {shlex.quote(_none_message(file))} >&2; false; }}; }}"
            )
        )
        if file.package_file is None:
            assert f"for url in {' '.join(file.urls)}; do" in line
            assert f"'{file.sha256}  {destination}.part' | sha256sum --check --strict -" in line
            assert not any(mirror.url in line for mirror in file.unconfirmed_mirrors)
        else:
            assert file.package_file.partition("/")[2] in line


def _none_message(file) -> str:
    if len(file.urls) == 1:
        return f"weights: the one URL of {file.target} did not give its sha256"
    return f"weights: none of the {len(file.urls)} URLs of {file.target} gave its sha256"


def test_cog_build_steps_prints_the_run_list(capsys):
    assert weights.main(["cog-build-steps"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == {"run": build_commands(load_manifest())}


def test_the_container_keeps_the_memory_settings_the_soak_benchmark_chose(cog_config):
    """Without them the worker grows by ~0.9 GB over its first predictions (benchmarks/soak.py)."""
    assert {"MALLOC_ARENA_MAX=2", "MKL_DISABLE_FAST_MM=1"} <= set(cog_config["environment"])
