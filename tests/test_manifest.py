"""The weights manifest: its entries' checks, hosts and terms labels, the real manifest (files, bags, hosts,
terms), the stand-in folders' manifests, and which manifest a weights folder uses."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml

from fixtures import weights_manifest
from separation.errors import WeightsError
from separation.weights import manifest
from separation.weights.manifest import MANIFEST_PATH, REPO_ROOT, TERMS_LABELS, load_manifest, model_terms

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


def _entry(**change: object) -> dict:
    """A valid manifest entry with `change` applied (a value of None removes the key)."""
    entry = {
        "target": "a.th",
        "model": "m",
        "size": 1,
        "sha256": "a" * 64,
        "urls": ["https://h/a", "https://mirror/a"],
        "source": "s",
        "terms": "t",
    }
    return {key: value for key, value in {**entry, **change}.items() if value is not None}


def _write(tmp_path, entries: list[dict], models: object = None) -> object:
    """A manifest of `entries`; `models` defaults to a none-stated label for each entry's model."""
    if models is None:
        models = {entry["model"]: {"terms": "none-stated"} for entry in entries}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"models": models, "files": entries}), encoding="utf-8")
    return path


HOSTS = [
    {"url": "https://h/a", "evidence": "publisher"},
    {"url": "https://mirror/a", "evidence": "LFS oid"},
]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "abc"}, "sha256 must be 64 lowercase hex digits"),
        ({"size": 0}, "size must be a positive number of bytes"),
        ({"target": "/abs.th"}, "target must be a relative path"),
        ({"target": "../up.th"}, "target must be a relative path"),
        ({"package_file": "demucs/remote/x.yaml"}, "either urls or package_file"),
        ({"urls": ["ftp://host/x", "https://h/x"]}, "not an http"),
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
        ({"terms": None}, r"missing keys \['terms'\]"),
        ({"terms": " "}, "terms must say what the weights' authors state"),
        ({"urls": ["https://h/a"]}, "one URL only; add a second host with the same sha256, or say why"),
        ({"single_host": "gone"}, "single_host is set, but the entry has 2 URLs"),
        ({"urls": ["https://h/a"], "single_host": " "}, "single_host must say why"),
        ({"urls": ["https://h/a", "https://h/a"]}, "a URL is listed twice"),
        ({"urls": [HOSTS[0], "https://mirror/a"]}, "give each as {url, evidence}, or all as plain strings"),
        ({"urls": [HOSTS[0], {**HOSTS[1], "evidence": ""}]}, "evidence must say where the URL's digest"),
        ({"urls": [{"url": "https://h/a"}, HOSTS[1]]}, r"a URL or a \{url, evidence\} mapping"),
        ({"urls": "https://h/a"}, "urls must be a list"),
        (
            {"unconfirmed_mirrors": ["https://other/a"]},
            r"unconfirmed_mirrors: give each as \{url, evidence\}",
        ),
        ({"unconfirmed_mirrors": [{"url": "https://h/a", "evidence": "x"}]}, "both a URL and an unconfirmed"),
        ({"unconfirmed_mirrors": [{"url": "ftp://o/a", "evidence": "x"}]}, "not an http"),
        (
            {"urls": None, "package_file": "demucs/remote/x.yaml", "single_host": "packaged"},
            "single_host and unconfirmed_mirrors are for downloaded files",
        ),
    ],
)
def test_load_manifest_rejects_bad_entries(tmp_path, change, message):
    with pytest.raises(WeightsError, match=message):
        load_manifest(_write(tmp_path, [_entry(**change)]))


def test_load_manifest_rejects_duplicate_targets(tmp_path):
    with pytest.raises(WeightsError, match=r"duplicate targets \['a.th'\]"):
        load_manifest(_write(tmp_path, [_entry(), _entry()]))


def test_hosts_evidence_single_host_and_unconfirmed_mirrors_are_read(tmp_path):
    mirror = {"url": "https://candidate/a", "evidence": "secondhand"}
    path = _write(
        tmp_path,
        [
            _entry(urls=HOSTS),
            _entry(
                target="b.th", urls=["https://h/b"], single_host="nobody else", unconfirmed_mirrors=[mirror]
            ),
        ],
    )
    two, one = load_manifest(path)
    assert two.urls == ("https://h/a", "https://mirror/a") and two.evidence == ("publisher", "LFS oid")
    assert two.single_host is None and two.unconfirmed_mirrors == ()
    assert one.urls == ("https://h/b",) and one.evidence == () and one.single_host == "nobody else"
    assert one.unconfirmed_mirrors == (manifest.Mirror("https://candidate/a", "secondhand"),)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("missing", "expected a 'models:' mapping of each model to {terms: <label>}"),
        (
            {"m": {"terms": "free"}},
            "m has the terms label 'free'; allowed: research-only, none-stated, mit-reported, mit",
        ),
        ({"m": {"terms": "mit", "note": "x"}}, "models: m must be a mapping with the one key 'terms'"),
        ({"m": "mit"}, "models: m must be a mapping with the one key 'terms'"),
        ({"other": {"terms": "mit"}}, r"no terms label under 'models:' for \['m'\]"),
        (
            {"m": {"terms": "mit"}, "other": {"terms": "mit"}},
            r"'models:' labels \['other'\], which no file uses",
        ),
    ],
)
def test_every_model_has_exactly_one_known_terms_label(tmp_path, models, message):
    path = _write(tmp_path, [_entry()], models={} if models == "missing" else models)
    with pytest.raises(WeightsError, match=message):
        load_manifest(path)
    with pytest.raises(WeightsError, match=message):
        model_terms(path)


def test_model_terms_gives_each_models_label_in_file_order(tmp_path):
    path = _write(
        tmp_path,
        [_entry(model="late"), _entry(target="b.th", model="early"), _entry(target="c.th", model="late")],
        models={"early": {"terms": "mit"}, "late": {"terms": "research-only"}},
    )
    assert model_terms(path) == {"late": "research-only", "early": "mit"}
    assert list(model_terms(path)) == ["late", "early"]


def test_real_manifest_is_consistent():
    files = load_manifest()

    models = {"bs_roformer_vocals", "htdemucs_ft", "htdemucs_6s", "bs_roformer_mega53"}
    assert {file.model for file in files} == models
    for file in files:
        assert file.size > 0 and re.fullmatch(r"[0-9a-f]{64}", file.sha256)
        for url in (*file.urls, *(mirror.url for mirror in file.unconfirmed_mirrors)):
            # mirrors may rename a file, never change its kind
            assert url.startswith("https://") and Path(url).suffix == Path(file.name).suffix, url
        if file.urls:  # the publisher's URL comes first, under the file's own name
            assert file.urls[0].rsplit("/", 1)[1] == file.name
        signature = re.fullmatch(r"([0-9a-f]{8})-([0-9a-f]{8})\.th", file.name)
        if signature:  # demucs checks that the name's second part is the sha256 prefix
            assert signature.group(2) == file.sha256[:8], file.target


PUBLISHERS = ("https://github.com/TRvlvr/", "https://dl.fbaipublicfiles.com/", "https://github.com/ZFTurbo/")


def test_every_downloaded_file_has_two_hosts_or_says_why_not():
    """Publisher first, then mirrors on other hosts, each URL with where its digest was confirmed; a
    Hugging Face mirror is pinned to a commit unless its evidence says it is not."""
    downloaded = [file for file in load_manifest() if file.urls]
    for file in downloaded:
        assert file.urls[0].startswith(PUBLISHERS), file.target
        assert not any(url.startswith(PUBLISHERS) for url in file.urls[1:]), file.target
        assert len(file.evidence) == len(file.urls), file.target
        hosts = {url.split("/")[2] + "/" + url.split("/")[3] for url in file.urls}
        assert len(hosts) == len(file.urls), f"{file.target}: two URLs on one host"
        assert len(file.urls) >= 2 or file.single_host, file.target
        for url, evidence in zip(file.urls, file.evidence, strict=True):
            pinned = re.search(r"/resolve/[0-9a-f]{40}/", url)
            assert "huggingface.co" not in url or pinned or "not pinned" in evidence, url
    single = [file.model for file in downloaded if file.single_host]
    assert single == ["bs_roformer_mega53"]
    (mega,) = [file for file in downloaded if file.model == "bs_roformer_mega53"]
    assert mega.unconfirmed_mirrors and all(mirror.evidence for mirror in mega.unconfirmed_mirrors)


def test_real_manifest_terms_labels():
    labels = model_terms()
    assert set(labels.values()) <= set(TERMS_LABELS)
    assert labels["htdemucs_ft"] == labels["htdemucs_6s"] == "research-only"
    assert labels["bs_roformer_vocals"] == "none-stated"
    assert labels["bs_roformer_mega53"] == "mit-reported"
    assert list(labels) == list(dict.fromkeys(file.model for file in load_manifest()))


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
    mega = terms["bs_roformer_mega53"]
    assert mega.startswith("MIT, reported") and "issues/245" in mega and "2026-09-25" in mega
    assert "the thread is the authority" in mega and '"Not stated"' in mega  # MSST's table, unchanged
    assert not any("MIT" in file.source for file in load_manifest() if file.target.endswith(".th"))


def test_stand_in_manifests_carry_the_projects_terms_labels(tiny_weights_dir, tmp_path, monkeypatch):
    """The tiny folder's models keep the project's labels; a model the project does not know gets
    none-stated."""
    project = model_terms(MANIFEST_PATH)
    tiny = model_terms(tiny_weights_dir / "weights.yaml")
    assert tiny == {model: project[model] for model in tiny} and set(tiny) == set(project)

    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    monkeypatch.setattr(
        weights_manifest, "plan_files", lambda folder: {"stand_in": ["a.bin"], "htdemucs_6s": ["b.bin"]}
    )
    path = weights_manifest.write_local_manifest(tmp_path, source="test")
    assert model_terms(path) == {"stand_in": "none-stated", "htdemucs_6s": project["htdemucs_6s"]}
    assert [file.target for file in load_manifest(path)] == ["a.bin", "b.bin"]


def test_a_folder_uses_its_own_file_else_the_projects(tmp_path):
    project = tmp_path / "configs" / "weights.yaml"
    assert manifest.own_or_project(tmp_path / "w", project) == project
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "weights.yaml").write_text("files: []")  # not read, only found
    assert manifest.own_or_project(tmp_path / "w", project) == tmp_path / "w" / "weights.yaml"
    assert manifest.manifest_for(tmp_path / "w") == tmp_path / "w" / "weights.yaml"
    assert manifest.manifest_for(tmp_path) == manifest.MANIFEST_PATH
