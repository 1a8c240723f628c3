"""Run the real Cog HTTP server (coglet) against the project, and a local receiver for it.

`CogServer` starts `python -m cog.server.http` the way the container does (cwd = project root,
so `.cog/openapi_schema.json` is enforced), with the venv first on PATH because coglet starts
its worker as the `python` found there. `Receiver` is an in-process HTTP server on 127.0.0.1
that serves input files, records webhooks (POST) and stores output uploads (PUT).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
PREDICTOR_REF = "predict.py:Runner"
LOG_TAIL_CHARS = 6000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CogServer:
    """One coglet server process; its stdout and stderr go to `log_path`, its temp files next to it."""

    def __init__(self, weights_dir: Path, log_path: Path, upload_url: str | None = None):
        self.port = free_port()
        self.log_path = log_path
        temp_dir = log_path.with_name(log_path.stem + "-tmp")  # downloads and stem files land here
        temp_dir.mkdir(exist_ok=True)
        venv_bin = str(Path(sys.executable).parent)
        env = dict(
            os.environ,
            COG_PREDICT_TYPE_STUB=PREDICTOR_REF,
            PORT=str(self.port),
            SEPARATION_WEIGHTS_DIR=str(weights_dir),
            PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
            TMPDIR=str(temp_dir),
        )
        command = [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"]
        if upload_url:
            command += ["--upload-url", upload_url]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-LOG_TAIL_CHARS:]

    def explain(self, what: Any) -> str:
        """An assertion message: `what` (shortened) and the end of the server log."""
        return f"{str(what)[:3000]}\n--- server log ({self.log_path}) ---\n{self.log_tail()}"

    def request(
        self, method: str, path: str, body: Any = None, headers: dict | None = None, timeout: float = 300
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url(path),
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return status, json.loads(raw) if raw else None

    def health(self) -> dict:
        return self.request("GET", "/health-check", timeout=10)[1]

    def wait_until_settled(self, timeout_seconds: float) -> dict:
        """Poll /health-check until setup has ended (READY, SETUP_FAILED, ...); return that answer."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(self.explain(f"server exited with code {self.process.returncode}"))
            try:
                health = self.health()
            except (OSError, ValueError):  # not listening yet, or an empty answer while it starts
                health = None
            if health and health.get("status") != "STARTING":
                return health
            time.sleep(0.25)
        raise AssertionError(self.explain(f"no end of setup within {timeout_seconds} s"))

    def predict(self, inputs: dict, timeout: float = 300, **fields: Any) -> dict:
        """A sync prediction; asserts HTTP 200 and returns the prediction object."""
        status, body = self.request("POST", "/predictions", {"input": inputs, **fields}, timeout=timeout)
        assert status == 200, self.explain((status, body))
        return body

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the server's own process group (it and its worker)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the worker, if it outlived the server
        except ProcessLookupError:
            pass
        self.process.wait()


class Receiver:
    """HTTP server thread on 127.0.0.1: GET /files/<name>, POST anything (webhook), PUT /upload/<name>."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.webhooks: list[dict] = []
        self.uploads: dict[str, tuple[str, bytes]] = {}  # name -> (content type, body)
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def serve(self, name: str, data: bytes) -> str:
        """Publish `data` at /files/<name>; return its URL."""
        self.files[name] = data
        return self.url(f"/files/{name}")

    def webhooks_for(self, prediction_id: str) -> list[dict]:
        with self._changed:
            return [hook for hook in self.webhooks if hook.get("id") == prediction_id]

    def wait_for(self, condition: Callable[[], Any], timeout_seconds: float) -> Any:
        """Wait until `condition()` is truthy (it is re-checked on every request); return its value."""
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            while not (value := condition()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return value
                self._changed.wait(left)
            return value

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, update: Callable[[], None]) -> None:
        with self._changed:
            update()
            self._changed.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # keep pytest output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(parts)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                name = self.path.removeprefix("/files/")
                if self.path.startswith("/files/") and name in receiver.files:
                    self._reply(200, receiver.files[name], {"Content-Type": "application/octet-stream"})
                else:
                    self._reply(404)

            def do_POST(self):
                hook = json.loads(self._body())
                receiver._record(lambda: receiver.webhooks.append(hook))
                self._reply(200)

            def do_PUT(self):
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                entry = (self.headers.get("Content-Type", ""), self._body())
                receiver._record(lambda: receiver.uploads.__setitem__(name, entry))
                self._reply(200, headers={"Location": receiver.url(f"/stored/{name}")})

        return Handler


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode_data_url(url: str) -> tuple[str, bytes]:
    """'data:<mime>;base64,<payload>' -> (mime, bytes)."""
    header, payload = url.split(",", 1)
    assert header.startswith("data:") and header.endswith(";base64"), header[:80]
    return header[len("data:") : -len(";base64")], base64.b64decode(payload)


def read_audio(data: bytes) -> tuple[np.ndarray, int, str]:
    """Encoded audio bytes -> (samples [frames, channels] float64, sample rate in Hz, subtype)."""
    info = sf.info(io.BytesIO(data))
    samples, sample_rate = sf.read(io.BytesIO(data), always_2d=True)
    return samples, sample_rate, info.subtype
