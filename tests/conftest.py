"""Shared fixtures: a tiny weights folder (real file formats), generated songs, and the device models run on.

`--device cuda` runs the tests that take the `device` fixture on CUDA (default: cpu) and deselects every
other test, which would only repeat what the CPU run checks: `pytest --device cuda -m "not slow"
tests/test_pipeline.py ...` is the CUDA test run of benchmarks/gpu_suite.sh. A test takes `device` where
its models' work runs on it and its checks hold on any device (tolerances, not bits matched to a CPU
reference).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from fixtures.file_server import ServerState, serving
from fixtures.songs import write_song
from fixtures.tiny_weights import write_tiny_weights

DEVICES = ("cpu", "cuda")


def pytest_configure(config):
    """Under pytest-xdist (`-n auto`: scripts/test.sh and the fast loop) the workers share the cores: one
    torch thread each, or their thread pools fight over the cores (small forwards took 10x longer)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        choices=DEVICES,
        help="where the tests that take the `device` fixture run their models; with cuda, only those run",
    )


def pytest_collection_modifyitems(config, items):
    """With a device other than the CPU, deselect the tests that do not take the `device` fixture."""
    if config.getoption("--device") == "cpu":
        return
    kept = [item for item in items if "device" in getattr(item, "fixturenames", ())]
    deselected = [item for item in items if "device" not in getattr(item, "fixturenames", ())]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The device of `--device` (default cpu); a test on cuda fails where torch sees no CUDA device."""
    name = request.config.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.fail("--device cuda: torch sees no CUDA device", pytrace=False)
    return torch.device(name)


@pytest.fixture
def file_server() -> Iterator[tuple[str, ServerState]]:
    """A local HTTP file server in a thread (fixtures/file_server.py): yields (base URL, state)."""
    with serving() as running:
        yield running


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory) -> Path:
    """The tiny weights folder, written once per run: under pytest-xdist the first worker writes it into the
    run's shared temporary folder and the others wait for it (it takes seconds), then every test reads it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))
    shared = tmp_path_factory.getbasetemp().parent / "tiny-weights"
    with FileLock(f"{shared}.lock"):
        if not shared.is_dir():
            write_tiny_weights(shared.with_name("tiny-weights-being-written"))
            shared.with_name("tiny-weights-being-written").rename(shared)
    return shared


@pytest.fixture
def song(tmp_path) -> Path:
    return write_song(tmp_path / "song.wav", seconds=2.0)


@pytest.fixture
def downloaded(song, tmp_path, monkeypatch) -> Path:
    """The song where the runtime puts a URL input: `tmp<random><name>` in the temporary folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "runtime-tmp"))
    (tmp_path / "runtime-tmp").mkdir()
    with tempfile.NamedTemporaryFile(suffix="song.wav", delete=False) as copy:
        copy.write(song.read_bytes())
    return Path(copy.name)
