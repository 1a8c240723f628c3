"""End to end: the real Cog runtime (tiny weights) → the signing relay → the Worker in workerd.

The Worker is examples/worker's probe entry (the example plus a report of each onStem call), served by
`node dist/scripts/dev.js`; `scripts/test.sh` runs `npm ci` and builds it before pytest.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fixtures.cog_server import CogServer, Receiver
from fixtures.songs import write_song
from separation.weights.manifest import REPO_ROOT

WORKER_DIR = REPO_ROOT / "examples" / "worker"
SECRET = "whsec_" + base64.b64encode(b"fretwise-e2e-signing-key-32bytes").decode()
INPUT = {"stems": "guitar", "extra_stems": "piano", "output_format": "flac", "chunk_size": 4, "overlap": 1}
TERMINAL = ("succeeded", "failed", "canceled")

pytestmark = pytest.mark.slow


def _load_relay():
    spec = importlib.util.spec_from_file_location(
        "signing_relay", REPO_ROOT / "examples" / "signing_relay.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


signing_relay = _load_relay()


class Recorder:
    """Records the Worker's outgoing POSTs (onStem reports, transcription jobs) with their arrival times."""

    def __init__(self):
        self.calls: list[tuple[float, str, dict]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorder.calls.append((time.monotonic(), self.path, body))
                self.send_response(204)
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def worker_url(tmp_path):
    """The probe Worker served by workerd; yields (its webhook URL, the recorder of its outgoing calls)."""
    if not (WORKER_DIR / "dist" / "scripts" / "dev.js").exists():
        pytest.fail(
            "examples/worker is not built: run `npm ci && npm run build` there (scripts/test.sh does)"
        )
    recorder = Recorder()
    env = dict(
        os.environ,
        WEBHOOK_SECRET=SECRET,
        PROBE_URL=recorder.url("/on-stem"),
        TRANSCRIBE_URL=recorder.url("/jobs"),
    )
    command = ["node", "dist/scripts/dev.js", "--port", "0", "--entry", "test/worker/probe.js"]
    log = open(tmp_path / "worker.log", "w+")
    process = subprocess.Popen(
        command, cwd=WORKER_DIR, env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on "), f"{line!r}\n{(tmp_path / 'worker.log').read_text()}"
        yield line.removeprefix("listening on ").strip(), recorder
    finally:
        process.terminate()
        process.wait(timeout=10)
        recorder.close()
        log.close()


def test_first_stems_reach_on_stem_before_completed(worker_url, tiny_weights_dir, tmp_path):
    url, recorder = worker_url
    relay = signing_relay.SigningRelay(url, SECRET)
    receiver = Receiver()
    server = CogServer(tiny_weights_dir, tmp_path / "cog.log", upload_url=receiver.url("/upload/"))
    try:
        assert server.wait_until_settled(240)["status"] == "READY", server.explain("setup")
        song = write_song(tmp_path / "song.wav", seconds=10, seed=5).read_bytes()
        request = {
            "id": "e2e",
            "input": {"audio": receiver.serve("song.wav", song), **INPUT},
            "webhook": relay.url,
            "webhook_events_filter": ["start", "output", "completed"],
        }
        status, answer = server.request("POST", "/predictions", request, headers={"Prefer": "respond-async"})
        assert status == 202, server.explain(answer)
        deadline = time.monotonic() + 300
        while not any(json.loads(body)["status"] in TERMINAL for _, body, _, _ in relay.forwarded):
            assert time.monotonic() < deadline, server.explain(relay.forwarded)
            time.sleep(0.1)
        time.sleep(1)  # the hooks of the last event, and any late webhook
    finally:
        server.stop()
        receiver.close()
        relay.close()

    events = [
        (at, json.loads(body), status, json.loads(reply)) for at, body, status, reply in relay.forwarded
    ]
    assert [status for _, _, status, _ in events] == [200] * len(events), events
    completed_at, completed, _, _ = next(event for event in events if event[1]["status"] in TERMINAL)
    assert completed["status"] == "succeeded", server.explain(completed)
    on_stem = [(at, body["stem"]) for at, path, body in recorder.calls if path == "/on-stem"]
    names = [name for _, name in on_stem]
    assert sorted(names) == ["guitar", "instrumental", "no_guitar", "piano", "vocals"], names
    instrumental_at = next(at for at, name in on_stem if name == "instrumental")
    assert instrumental_at < completed_at, "the instrumental was handed on only after completed"
    jobs = [body for _, path, body in recorder.calls if path == "/jobs"]
    assert [job["stem"] for job in jobs] == ["guitar"]
    assert jobs[0]["figures"] == {**completed["metrics"]["stems"]["guitar"]}
