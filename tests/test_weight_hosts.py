"""A file's several hosts: the cog.yaml build lines run in `sh` and `bash` with curl, and `check-urls`,
both against local HTTP servers (fixtures/file_server) that answer 404, wrong bytes, wrong sizes, dropped
connections, redirects, refused HEAD requests and refused connections."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.file_server import closed_port
from fixtures.weights_manifest import served_file, write_manifest
from separation.weights import command as weights
from separation.weights.command import CURL_OPTIONS, build_commands
from separation.weights.manifest import Mirror, WeightFile, package_file_path, verify
from separation.weights.probe import check_urls

CONTENT = bytes(range(256)) * 1200  # 307,200 bytes
SHA256 = hashlib.sha256(CONTENT).hexdigest()
QUICK_CURL = "--fail --location --silent --show-error"  # no retries: a failing host fails at once
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the build lines need curl")


def _file(*urls: str, target: str = "sub/model.ckpt", mirrors: tuple[Mirror, ...] = ()) -> WeightFile:
    return served_file(target, CONTENT, *urls, mirrors=mirrors)


def _run(line: str, shell: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shell, "-c", line], env=ENV, capture_output=True, text=True, timeout=120)


# --- cog.yaml build lines ----------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_build_line_falls_through_404_wrong_bytes_and_a_dropped_transfer(file_server, tmp_path, shell):
    base, state = file_server
    state.files["/dropping.ckpt"] = CONTENT
    state.drops = [100_000]  # the first body served (/dropping.ckpt) stops after 100,000 bytes
    state.files["/wrong.ckpt"] = CONTENT[::-1]  # the right size, other bytes
    state.files["/right.ckpt"] = CONTENT
    paths = ["/gone.ckpt", "/dropping.ckpt", "/wrong.ckpt", "/right.ckpt"]
    (line,) = build_commands(
        [_file(*(base + path for path in paths))], str(tmp_path), curl_options=QUICK_CURL
    )

    result = _run(line, shell)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sub" / "model.ckpt").read_bytes() == CONTENT
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["model.ckpt"]  # no part file
    assert [path for path, _ in state.requests] == paths
    skipped = [row for row in result.stderr.splitlines() if row.startswith("weights: skipping")]
    assert skipped == [f"weights: skipping this URL for sub/model.ckpt: {base}{path}" for path in paths[:3]]


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_build_line_fails_when_no_url_gives_the_file_and_leaves_nothing(file_server, tmp_path, shell):
    base, state = file_server
    state.files["/wrong.ckpt"] = CONTENT[::-1]
    state.files["/short.ckpt"] = CONTENT[:-1]
    urls = [
        f"{base}/gone.ckpt",
        f"{base}/wrong.ckpt",
        f"http://127.0.0.1:{closed_port()}/x",
        f"{base}/short.ckpt",
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.ckpt.part").write_bytes(CONTENT[:1000])  # left by an earlier, broken build
    (line,) = build_commands([_file(*urls)], str(tmp_path), curl_options=QUICK_CURL)

    result = _run(line, shell)

    assert result.returncode != 0
    assert list((tmp_path / "sub").iterdir()) == []
    assert result.stderr.splitlines()[-1] == "weights: none of the 4 URLs of sub/model.ckpt gave its sha256"
    assert result.stderr.count("weights: skipping this URL") == 4


@pytest.mark.slow  # curl waits 3 s before its retry
def test_build_line_with_the_real_curl_options_retries_without_appending(file_server, tmp_path):
    """curl's own retry after a dropped connection starts the file over (3 s: --retry-delay 3)."""
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT
    state.drops = [100_000]
    (line,) = build_commands([_file(f"{base}/model.ckpt")], str(tmp_path))
    assert CURL_OPTIONS in line

    result = _run(line, "sh")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sub" / "model.ckpt").read_bytes() == CONTENT
    assert len(state.requests) == 2


def test_build_lines_download_copy_and_check_in_sh(file_server, tmp_path):
    base, state = file_server
    state.files["/model.ckpt"] = CONTENT
    data = package_file_path("demucs/remote/htdemucs_ft.yaml").read_bytes()
    packaged = WeightFile(
        target="demucs/htdemucs_ft.yaml",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        urls=(),
        package_file="demucs/remote/htdemucs_ft.yaml",
        model="test_bag",
        source="test",
        terms="test",
    )
    files = [_file(f"{base}/model.ckpt"), packaged]
    weights_dir = tmp_path / "image weights"

    for line in build_commands(files, str(weights_dir), curl_options=QUICK_CURL):
        assert _run(line, "sh").returncode == 0

    assert verify(weights_dir, files) == []
    corrupt = WeightFile(**{**vars(packaged), "sha256": "0" * 64})
    (line,) = build_commands([corrupt], str(weights_dir))
    assert _run(line, "sh").returncode != 0


# --- check-urls --------------------------------------------------------------------------------------


def test_check_urls_reports_each_answer(file_server):
    base, state = file_server
    state.files["/good.ckpt"] = CONTENT
    state.files["/long.ckpt"] = CONTENT + b"extra"
    refused = f"http://127.0.0.1:{closed_port()}/x.ckpt"
    file = _file(f"{base}/good.ckpt", f"{base}/gone.ckpt", f"{base}/long.ckpt", refused)

    checks = check_urls([file], timeout_seconds=5)

    assert [(check.url, check.ok, check.answer) for check in checks] == [
        (f"{base}/good.ckpt", True, "HTTP 200, 307200 bytes as expected (Content-Length)"),
        (f"{base}/gone.ckpt", False, "HTTP 404 Not Found"),
        (
            f"{base}/long.ckpt",
            False,
            "HTTP 200, Content-Length says 307205 bytes, the manifest expects 307200",
        ),
        (refused, False, "connection refused"),
    ]
    assert all(method == "HEAD" for method, _ in state.methods)  # nothing downloaded, a 404 not asked twice


def test_check_urls_asks_for_one_byte_where_head_is_refused(file_server):
    base, state = file_server
    state.files["/good.ckpt"] = CONTENT
    state.refuse_head = 405

    (check,) = check_urls([_file(f"{base}/good.ckpt")], timeout_seconds=5)

    assert check.ok
    head = "HEAD: HTTP 405 Method Not Allowed"
    assert check.answer == f"HTTP 206 to a 1-byte GET ({head}), 307200 bytes as expected (Content-Range)"
    assert state.requests == [("/good.ckpt", "bytes=0-0")]


@pytest.mark.parametrize("etag", [SHA256, "f" * 64])
def test_check_urls_compares_hugging_faces_linked_size_and_etag(file_server, etag):
    """Hugging Face answers a resolve URL with a redirect carrying X-Linked-Size and X-Linked-Etag (the LFS
    sha256); the HEAD request keeps its method across the redirect."""
    base, state = file_server
    state.files["/cdn/blob"] = CONTENT
    state.redirects["/resolve/model.ckpt"] = f"{base}/cdn/blob"
    state.headers["/resolve/model.ckpt"] = {"X-Linked-Size": str(len(CONTENT)), "X-Linked-Etag": f'"{etag}"'}

    (check,) = check_urls([_file(f"{base}/resolve/model.ckpt")], timeout_seconds=5)

    assert state.methods == [("HEAD", "/resolve/model.ckpt"), ("HEAD", "/cdn/blob")]
    sizes = "307200 bytes as expected (Content-Length, X-Linked-Size)"
    if etag == SHA256:
        assert check.ok and check.answer == f"HTTP 200, {sizes}, sha256 as expected (X-Linked-Etag)"
    else:
        assert not check.ok
        assert (
            check.answer
            == f"HTTP 200, {sizes}, X-Linked-Etag sha256 is {etag}, the manifest expects {SHA256}"
        )


def test_check_urls_command_fails_only_for_a_file_without_a_working_url(file_server, tmp_path, capsys):
    """One line per URL; a working unconfirmed mirror is shown but does not count."""
    base, state = file_server
    state.files["/a.ckpt"] = CONTENT
    state.files["/candidate.ckpt"] = CONTENT
    served = _file(f"{base}/gone.ckpt", f"{base}/a.ckpt", target="a.ckpt")
    stranded = _file(
        f"{base}/lost.ckpt",
        target="b.ckpt",
        mirrors=(Mirror(f"{base}/candidate.ckpt", "secondhand"),),
    )

    manifest = write_manifest(tmp_path / "m.yaml", [served, stranded])
    assert weights.main(["check-urls", "--manifest", str(manifest)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"FAIL  a.ckpt  {base}/gone.ckpt  HTTP 404 Not Found",
        f"ok    a.ckpt  {base}/a.ckpt  HTTP 200, 307200 bytes as expected (Content-Length)",
        f"FAIL  b.ckpt  {base}/lost.ckpt  HTTP 404 Not Found",
        f"ok    b.ckpt  {base}/candidate.ckpt  HTTP 200, 307200 bytes as expected (Content-Length)"
        "  [unconfirmed mirror, never downloaded from]",
    ]
    assert captured.err.splitlines() == ["error: b.ckpt: its one URL does not answer as the manifest expects"]

    assert weights.main(["check-urls", "--manifest", str(write_manifest(tmp_path / "n.yaml", [served]))]) == 0
    assert capsys.readouterr().err.splitlines() == ["1 of 2 URLs answer; the one downloaded file has one"]
