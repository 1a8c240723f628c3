"""The weights manifest: its entries' checks, the real manifest (files, bags, terms), and which manifest a
weights folder uses."""

from __future__ import annotations

import hashlib
import re

import pytest
import yaml

from separation.errors import WeightsError
from separation.weights import manifest
from separation.weights.manifest import REPO_ROOT, load_manifest

DEMUCS_REMOTE_COPIES = REPO_ROOT / "tests" / "data" / "demucs_remote"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_package_file_of_a_missing_package_is_named():
    with pytest.raises(WeightsError, match=r"package 'no_such_package_xyz' is not installed"):
        manifest.package_file_path("no_such_package_xyz/remote/x.yaml")
    with pytest.raises(WeightsError, match=r"no such file in the installed demucs package"):
        manifest.package_file_path("demucs/remote/no_such_bag.yaml")


def test_default_weights_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEPARATION_WEIGHTS_DIR", str(tmp_path))
    assert manifest.default_weights_dir() == tmp_path
    monkeypatch.delenv("SEPARATION_WEIGHTS_DIR")
    assert manifest.default_weights_dir() == REPO_ROOT / "weights"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "abc"}, "sha256 must be 64 lowercase hex digits"),
        ({"size": 0}, "size must be a positive number of bytes"),
        ({"target": "/abs.th"}, "target must be a relative path"),
        ({"target": "../up.th"}, "target must be a relative path"),
        ({"package_file": "demucs/remote/x.yaml"}, "either urls or package_file"),
        ({"urls": ["ftp://host/x"]}, "not an http"),
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
        ({"terms": None}, r"missing keys \['terms'\]"),
        ({"terms": " "}, "terms must say what the weights' authors state"),
    ],
)
def test_load_manifest_rejects_bad_entries(tmp_path, change, message):
    entry = {
        "target": "a.th",
        "model": "m",
        "size": 1,
        "sha256": "a" * 64,
        "urls": ["https://h/a"],
        "source": "s",
        "terms": "t",
    }
    changed = {key: value for key, value in {**entry, **change}.items() if value is not None}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"files": [changed]}), encoding="utf-8")

    with pytest.raises(WeightsError, match=message):
        load_manifest(path)


def test_real_manifest_is_consistent():
    files = load_manifest()

    models = {"bs_roformer_vocals", "htdemucs_ft", "htdemucs_6s", "bs_roformer_mega53"}
    assert {file.model for file in files} == models
    for file in files:
        assert file.size > 0 and re.fullmatch(r"[0-9a-f]{64}", file.sha256)
        for url in file.urls:
            assert url.startswith("https://") and url.rsplit("/", 1)[1] == file.name
        signature = re.fullmatch(r"([0-9a-f]{8})-([0-9a-f]{8})\.th", file.name)
        if signature:  # demucs checks that the name's second part is the sha256 prefix
            assert signature.group(2) == file.sha256[:8], file.target


@pytest.mark.parametrize("bag", ["htdemucs_ft", "htdemucs_6s"])
def test_real_manifest_bags_match_shipped_files_and_list_their_weights(bag):
    files = load_manifest()
    (entry,) = [file for file in files if file.target == f"demucs/{bag}.yaml"]
    installed = manifest.package_file_path(entry.package_file)

    for copy in (installed, DEMUCS_REMOTE_COPIES / f"{bag}.yaml"):
        data = copy.read_bytes()
        assert (len(data), _sha256(data)) == (entry.size, entry.sha256), copy
    signatures = yaml.safe_load(installed.read_text())["models"]
    weight_names = sorted(f.name for f in files if f.model == bag and f.target.endswith(".th"))
    assert sorted(name.split("-")[0] for name in weight_names) == sorted(signatures)


def test_every_entry_of_the_real_manifest_states_its_terms_and_where():
    for file in load_manifest():
        assert re.search(r"\(https://[^ )]+\)", file.terms), file.target
    terms = {file.model: file.terms for file in load_manifest() if not file.target.endswith(".yaml")}
    assert terms["htdemucs_ft"] == terms["htdemucs_6s"] and "research only" in terms["htdemucs_ft"]
    for url in ("facebookresearch/demucs/issues/327", "facebookresearch/demucs/issues/508"):
        assert url in terms["htdemucs_ft"]
    assert terms["bs_roformer_vocals"].startswith("none stated")
    assert '"Not stated"' in terms["bs_roformer_mega53"] and "issues/245" in terms["bs_roformer_mega53"]
    assert not any("MIT" in file.source for file in load_manifest() if file.target.endswith(".th"))


def test_a_folder_uses_its_own_file_else_the_projects(tmp_path):
    project = tmp_path / "configs" / "weights.yaml"
    assert manifest.own_or_project(tmp_path / "w", project) == project
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "weights.yaml").write_text("files: []")
    assert manifest.own_or_project(tmp_path / "w", project) == tmp_path / "w" / "weights.yaml"
    assert manifest.manifest_for(tmp_path / "w") == tmp_path / "w" / "weights.yaml"
    assert manifest.manifest_for(tmp_path) == manifest.MANIFEST_PATH
