"""Verified resumable downloads, `verify`, `list` and the CLI, against a local server (file_server)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.file_server import closed_port
from fixtures.weights_manifest import served_file, write_manifest
from separation.errors import WeightsError
from separation.weights import command as weights
from separation.weights import manifest
from separation.weights.download import DownloadError, fetch
from separation.weights.manifest import REPO_ROOT, WeightFile, model_terms, verify

DEMUCS_REMOTE_COPIES = REPO_ROOT / "tests" / "data" / "demucs_remote"
CONTENT = bytes(range(256)) * 1200  # 307,200 bytes, several socket writes
FAST = {"progress": False, "backoff_seconds": 0.0, "timeout_seconds": 10.0}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _package_entry(package_file: str, target: str) -> WeightFile:
    """A manifest entry copied from a package, with the digest of the installed file."""
    data = manifest.package_file_path(package_file).read_bytes()
    return WeightFile(
        target=target,
        size=len(data),
        sha256=_sha256(data),
        urls=(),
        package_file=package_file,
        model="test_bag",
        source="test",
        terms="test",
    )


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m separation.weights ARGS` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "separation.weights", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- downloads -------------------------------------------------------------------------------------


def test_fetch_downloads_checks_and_renames_atomically(file_server, tmp_path):
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT
    destination = tmp_path / "sub" / "model.ckpt"
    part = Path(f"{destination}.part")
    seen_midway = []

    def look_midway() -> None:
        """Record (target exists, part exists) once the client has opened the part file."""
        deadline = time.monotonic() + 10.0
        while not part.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        seen_midway.append((destination.exists(), part.exists()))

    state.midway = look_midway

    fetch(tmp_path, [served_file("sub/model.ckpt", CONTENT, f"{base}/model.ckpt")], **FAST)

    assert destination.read_bytes() == CONTENT
    assert seen_midway == [(False, True)]  # mid-download: only the part file exists
    assert sorted(p.name for p in destination.parent.iterdir()) == ["model.ckpt"]
    assert state.requests == [("/model.ckpt", None)]


def test_fetch_wrong_hash_raises_and_leaves_nothing(file_server, tmp_path):
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT
    expected = "0" * 64
    file = served_file("model.ckpt", CONTENT, f"{base}/model.ckpt", sha256=expected)

    with pytest.raises(WeightsError) as caught:
        fetch(tmp_path, [file], **FAST)

    message = str(caught.value)
    assert "model.ckpt" in message and expected in message and _sha256(CONTENT) in message
    assert list(tmp_path.iterdir()) == []


def test_fetch_resumes_after_dropped_connection(file_server, tmp_path):
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT
    state.drops = [100_000]

    fetch(tmp_path, [served_file("model.ckpt", CONTENT, f"{base}/model.ckpt")], **FAST)

    assert (tmp_path / "model.ckpt").read_bytes() == CONTENT
    assert state.requests == [("/model.ckpt", None), ("/model.ckpt", "bytes=100000-")]
    assert not (tmp_path / "model.ckpt.part").exists()


def test_fetch_resumes_a_part_file_left_by_an_earlier_run(file_server, tmp_path):
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT
    (tmp_path / "model.ckpt.part").write_bytes(CONTENT[:5000])

    fetch(tmp_path, [served_file("model.ckpt", CONTENT, f"{base}/model.ckpt")], **FAST)

    assert (tmp_path / "model.ckpt").read_bytes() == CONTENT
    assert state.requests == [("/model.ckpt", "bytes=5000-")]


def test_fetch_restarts_when_the_server_ignores_range(file_server, tmp_path):
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT
    state.ignore_range = True
    (tmp_path / "model.ckpt.part").write_bytes(b"stale bytes")

    fetch(tmp_path, [served_file("model.ckpt", CONTENT, f"{base}/model.ckpt")], **FAST)

    assert (tmp_path / "model.ckpt").read_bytes() == CONTENT


def test_fetch_gives_up_after_attempts_without_progress(file_server, tmp_path):
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT
    state.drops = [0, 0, 0, 0]

    with pytest.raises(WeightsError, match=r"closed after 0 of 307200 bytes"):
        fetch(tmp_path, [served_file("model.ckpt", CONTENT, f"{base}/model.ckpt")], attempts=3, **FAST)
    assert len(state.requests) == 3
    assert list(tmp_path.iterdir()) == []  # neither the target nor a part file


def test_fetch_rejects_a_file_of_the_wrong_announced_size(file_server, tmp_path):
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT + b"extra"

    with pytest.raises(WeightsError, match=r"announces 307205 bytes, the manifest expects 307200"):
        fetch(tmp_path, [served_file("model.ckpt", CONTENT, f"{base}/model.ckpt")], **FAST)
    assert not (tmp_path / "model.ckpt").exists()


def test_fetch_404_names_the_url(file_server, tmp_path):
    base, state = file_server
    url = f"{base}/missing.ckpt"

    with pytest.raises(
        WeightsError, match=rf"^cannot download model.ckpt from {re.escape(url)}: HTTP 404 Not Found$"
    ):
        fetch(tmp_path, [served_file("model.ckpt", CONTENT, url)], **FAST)
    assert len(state.requests) == 1  # a 404 is not retried


def test_fetch_tries_urls_in_order(file_server, tmp_path):
    base, state = file_server
    state.files["/mirror/model.ckpt"] = CONTENT

    fetch(
        tmp_path,
        [served_file("model.ckpt", CONTENT, f"{base}/gone.ckpt", f"{base}/mirror/model.ckpt")],
        **FAST,
    )

    assert (tmp_path / "model.ckpt").read_bytes() == CONTENT
    assert [path for path, _ in state.requests] == ["/gone.ckpt", "/mirror/model.ckpt"]


def test_fetch_skips_a_host_serving_other_bytes(file_server, tmp_path):
    base, state = file_server
    state.files["/wrong.ckpt"] = CONTENT[::-1]  # same size, other bytes
    state.files["/right.ckpt"] = CONTENT

    fetch(tmp_path, [served_file("model.ckpt", CONTENT, f"{base}/wrong.ckpt", f"{base}/right.ckpt")], **FAST)

    assert (tmp_path / "model.ckpt").read_bytes() == CONTENT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_fetch_starts_afresh_on_the_next_host_after_a_failed_one(file_server, tmp_path):
    """The bytes a failing host sent are not resumed from another host: each URL is judged on its own."""
    base, state = file_server
    state.files["/flaky.ckpt"] = CONTENT
    state.files["/mirror.ckpt"] = CONTENT
    state.drops = [1000, 0]  # the flaky host sends 1000 bytes, then nothing: no progress on the retry
    file = served_file("model.ckpt", CONTENT, f"{base}/flaky.ckpt", f"{base}/mirror.ckpt")

    fetch(tmp_path, [file], attempts=1, **FAST)

    assert (tmp_path / "model.ckpt").read_bytes() == CONTENT
    assert state.requests == [("/flaky.ckpt", None), ("/flaky.ckpt", "bytes=1000-"), ("/mirror.ckpt", None)]


def test_fetch_names_what_each_url_answered_and_leaves_no_partial_file(file_server, tmp_path):
    base, state = file_server
    state.files["/wrong.ckpt"] = CONTENT[::-1]
    state.files["/longer.ckpt"] = CONTENT + b"extra"
    state.files["/dropping.ckpt"] = CONTENT
    state.drops = [5000, 0, 0]  # some bytes, then twice nothing: the attempts (2) run out
    refused = f"http://127.0.0.1:{closed_port()}/model.ckpt"
    urls = [
        f"{base}/dropping.ckpt",
        f"{base}/gone.ckpt",
        refused,
        f"{base}/wrong.ckpt",
        f"{base}/longer.ckpt",
    ]

    with pytest.raises(DownloadError) as caught:
        fetch(tmp_path, [served_file("model.ckpt", CONTENT, *urls)], attempts=2, **FAST)

    answers = [
        "the connection closed after 5000 of 307200 bytes",
        "HTTP 404 Not Found",
        "Connection refused (no network?)",
        f"it serves other bytes (sha256 is {_sha256(CONTENT[::-1])}, expected {_sha256(CONTENT)})",
        "the server announces 307205 bytes, the manifest expects 307200",
    ]
    expected = [
        f"cannot download model.ckpt from {url}: {answer}" for url, answer in zip(urls, answers, strict=True)
    ]
    assert str(caught.value).splitlines() == expected
    assert list(tmp_path.iterdir()) == []  # neither the target nor a part file


def test_cli_fetch_prints_one_error_line_per_url(file_server, tmp_path, capsys):
    base, state = file_server
    state.files["/wrong.ckpt"] = CONTENT[::-1]
    urls = [f"{base}/gone.ckpt", f"{base}/wrong.ckpt"]
    (tmp_path / "w").mkdir()
    write_manifest(tmp_path / "w" / "weights.yaml", [served_file("model.ckpt", CONTENT, *urls)])

    assert weights.main(["fetch", "--dir", str(tmp_path / "w")]) == 1

    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]  # no bars
    assert lines[0] == f"error: cannot download model.ckpt from {urls[0]}: HTTP 404 Not Found"
    assert lines[1].startswith(
        f"error: cannot download model.ckpt from {urls[1]}: it serves other bytes (sha256"
    )
    assert len(lines) == 2
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["weights.yaml"]


def test_fetch_skips_good_files_and_replaces_corrupt_ones(file_server, tmp_path):
    base, state = file_server
    state.files["/a.th"] = CONTENT
    state.files["/b.th"] = CONTENT[::-1]
    good = served_file("a.th", CONTENT, f"{base}/a.th")
    corrupt = served_file("b.th", CONTENT[::-1], f"{base}/b.th")
    (tmp_path / "a.th").write_bytes(CONTENT)
    (tmp_path / "b.th").write_bytes(CONTENT)  # right size, wrong bytes

    fetch(tmp_path, [good, corrupt], **FAST)

    assert state.requests == [("/b.th", None)]
    assert (tmp_path / "b.th").read_bytes() == CONTENT[::-1]


# --- package files ---------------------------------------------------------------------------------


def test_fetch_copies_and_checks_package_files(tmp_path):
    file = _package_entry("demucs/remote/htdemucs_6s.yaml", "demucs/htdemucs_6s.yaml")

    fetch(tmp_path, [file], **FAST)

    assert (tmp_path / "demucs" / "htdemucs_6s.yaml").read_bytes() == (
        DEMUCS_REMOTE_COPIES / "htdemucs_6s.yaml"
    ).read_bytes()
    assert verify(tmp_path, [file]) == []


def test_fetch_rejects_a_package_file_with_another_digest(tmp_path):
    installed = _package_entry("demucs/remote/htdemucs_6s.yaml", "htdemucs_6s.yaml")
    wrong = dataclasses.replace(installed, sha256="f" * 64)

    with pytest.raises(WeightsError, match=r"htdemucs_6s\.yaml.*sha256 is [0-9a-f]{64}, expected f{64}"):
        fetch(tmp_path, [wrong], **FAST)
    assert list(tmp_path.iterdir()) == []


# --- verify ----------------------------------------------------------------------------------------


def test_verify_reports_missing_resized_and_corrupted_files(tmp_path):
    files = [
        served_file(name, CONTENT, "https://example.invalid/x")
        for name in ("ok.th", "gone.th", "short.th", "flip.th")
    ]
    (tmp_path / "ok.th").write_bytes(CONTENT)
    (tmp_path / "short.th").write_bytes(CONTENT[:-1])
    flipped = bytearray(CONTENT)
    flipped[123_456] ^= 0x01
    (tmp_path / "flip.th").write_bytes(bytes(flipped))

    problems = verify(tmp_path, files)

    assert len(problems) == 3
    assert problems[0] == f"{tmp_path / 'gone.th'}: missing"
    assert problems[1] == f"{tmp_path / 'short.th'}: size is 307199 bytes, expected 307200"
    assert problems[2].startswith(f"{tmp_path / 'flip.th'}: sha256 is ")
    assert verify(tmp_path, files, full_hash=False) == problems[:2]  # a flipped byte needs the hash


def test_verify_cli_exit_codes(tmp_path, capsys):
    weights_dir = tmp_path / "w"
    weights_dir.mkdir()
    write_manifest(
        weights_dir / "weights.yaml",
        [
            served_file("a.th", CONTENT, "https://example.invalid/a"),
            served_file("b.th", CONTENT, "https://example.invalid/b"),
        ],
    )
    (weights_dir / "a.th").write_bytes(CONTENT)

    assert weights.main(["verify", "--dir", str(weights_dir)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {weights_dir / 'b.th'}: missing"]

    (weights_dir / "b.th").write_bytes(CONTENT)
    assert weights.main(["verify", "--dir", str(weights_dir)]) == 0
    assert "2 weight files OK" in capsys.readouterr().err


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_fetch_fetches_only_the_named_models(file_server, tmp_path):
    base, state = file_server
    state.files["/a.th"] = CONTENT
    other = dataclasses.replace(served_file("b.th", CONTENT, f"{base}/b.th"), model="other_model")
    (tmp_path / "w").mkdir()
    write_manifest(tmp_path / "w" / "weights.yaml", [served_file("a.th", CONTENT, f"{base}/a.th"), other])

    result = _run_cli("fetch", "--dir", str(tmp_path / "w"), "--only", "test_model")

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["a.th", "weights.yaml"]


def test_cli_unknown_model_is_one_line(tmp_path, capsys):
    write_manifest(tmp_path / "weights.yaml", [served_file("a.th", CONTENT, "https://example.invalid/a")])

    assert weights.main(["fetch", "--dir", str(tmp_path), "--only", "nope"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: unknown model 'nope'; the manifest has test_model"
    ]


@pytest.mark.parametrize("reason", ["unreachable", "404"])
def test_cli_download_failure_is_one_clear_line(file_server, tmp_path, reason):
    base, _ = file_server
    url = f"http://127.0.0.1:{closed_port()}/model.ckpt" if reason == "unreachable" else f"{base}/none.ckpt"
    (tmp_path / "w").mkdir()
    write_manifest(tmp_path / "w" / "weights.yaml", [served_file("model.ckpt", CONTENT, url)])

    result = _run_cli("fetch", "--dir", str(tmp_path / "w"))

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    expected_reason = "Connection refused (no network?)" if reason == "unreachable" else "HTTP 404 Not Found"
    assert lines[0] == f"error: cannot download model.ckpt from {url}: {expected_reason}"


# --- list ----------------------------------------------------------------------------------------


def test_list_prints_each_model_with_its_terms_label_files_sizes_and_hosts(capsys):
    assert weights.main(["list", "--only", "htdemucs_6s", "bs_roformer_mega53"]) == 0
    lines = capsys.readouterr().out.splitlines()
    labels = model_terms()
    assert lines[0] == f"htdemucs_6s: 2 files, 55.0 MB, terms {labels['htdemucs_6s']}"
    assert lines[1].split() == ["demucs/htdemucs_6s.yaml", "21", "B", "from", "the", "demucs", "package"]
    assert lines[2].split() == ["demucs/5c90dfd2-34c22ccb.th", "55.0", "MB", "3", "hosts"]
    assert lines[4].startswith("  terms of demucs/5c90dfd2-34c22ccb.th: research only")
    assert lines[5] == f"bs_roformer_mega53: 1 file, 1368.9 MB, terms {labels['bs_roformer_mega53']}"
    assert "1 host (single: no second host" in lines[6]


# --- a weights folder's own manifest -----------------------------------------------------------------


def test_verify_list_and_fetch_honour_the_tiny_folders_own_manifest(tiny_weights_dir, tmp_path, capsys):
    """The tiny folder's files are not the project's: only its own manifest makes them all good, and fetch
    then has nothing to download (its URLs do not resolve)."""
    assert weights.main(["verify", "--dir", str(tiny_weights_dir)]) == 0
    assert weights.main(["fetch", "--dir", str(tiny_weights_dir)]) == 0
    assert weights.main(["list", "--dir", str(tiny_weights_dir)]) == 0
    listed = capsys.readouterr().out
    assert (
        "terms: none: random numbers" in listed and "research only" not in listed
    )  # the folder's statements
    for model, label in model_terms().items():  # the project's labels, carried by the stand-in folder
        assert re.search(rf"^{model}: .*, terms {label}$", listed, re.MULTILINE), model

    damaged = shutil.copytree(tiny_weights_dir, tmp_path / "weights")
    checkpoint = damaged / "model_bs_roformer_ep_317_sdr_12.9755.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-10])
    assert weights.main(["verify", "--dir", str(damaged), "--quick"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {checkpoint}: size is {checkpoint.stat().st_size} bytes, expected "
        f"{checkpoint.stat().st_size + 10}"
    ]
