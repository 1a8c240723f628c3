"""End to end: the real Cog runtime (tiny weights) → the signing relay → the Worker in workerd → R2.

The Worker is examples/worker's probe entry (the example, plus a report of each R2 write and queue send and
test-only routes that list R2 and D1), served by `node dist/scripts/dev.js` with wrangler.toml's local D1,
R2 bucket and queues; `scripts/test.sh` runs `npm ci` and builds it before pytest. The runtime uploads each
stem to a local file host, which serves it back to the Worker as replicate.delivery would.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from fixtures.cog_server import CogServer, Receiver
from fixtures.songs import write_song
from separation.weights.manifest import REPO_ROOT

WORKER_DIR = REPO_ROOT / "examples" / "worker"
SECRET = "whsec_" + base64.b64encode(b"fretwise-e2e-signing-key-32bytes").decode()
INPUT = {"stems": "guitar", "extra_stems": "piano", "output_format": "flac", "chunk_size": 4, "overlap": 1}
TERMINAL = ("succeeded", "failed", "canceled")
COPY_SECONDS = 60

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


@pytest.fixture
def worker(tmp_path):
    """The probe Worker served by workerd; yields (its base URL, the local host around it)."""
    if not (WORKER_DIR / "dist" / "scripts" / "dev.js").exists():
        pytest.fail(
            "examples/worker is not built: run `npm ci && npm run build` there (scripts/test.sh does)"
        )
    local = Receiver()
    env = dict(
        os.environ,
        WEBHOOK_SECRET=SECRET,
        PROBE_URL=local.url("/probe/"),
        TRANSCRIBE_URL=local.url("/jobs"),
        RETRY_BASE_SECONDS="1",
    )
    command = ["node", "dist/scripts/dev.js", "--port", "0", "--entry", "test/worker/probe.js"]
    log = open(tmp_path / "worker.log", "w+")
    process = subprocess.Popen(
        command, cwd=WORKER_DIR, env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on "), f"{line!r}\n{(tmp_path / 'worker.log').read_text()}"
        webhook_url = line.removeprefix("listening on ").strip()
        yield webhook_url.removesuffix("/webhooks/replicate"), local
    finally:
        process.terminate()
        process.wait(timeout=10)
        local.close()
        log.close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_stems_reach_r2_and_the_guitar_is_handed_on(worker, tiny_weights_dir, tmp_path):
    base, local = worker
    relay = signing_relay.SigningRelay(f"{base}/webhooks/replicate", SECRET)
    server = CogServer(tiny_weights_dir, tmp_path / "cog.log", upload_url=local.url("/upload/"))
    try:
        assert server.wait_until_settled(240)["status"] == "READY", server.explain("setup")
        song = local.serve("song.wav", write_song(tmp_path / "song.wav", seconds=10, seed=5).read_bytes())
        request = {
            "id": "e2e",
            "input": {"audio": song, **INPUT},
            "webhook": relay.url,
            "webhook_events_filter": ["start", "output", "completed"],
        }
        status, answer = server.request("POST", "/predictions", request, headers={"Prefer": "respond-async"})
        assert status == 202, server.explain(answer)
        deadline = time.monotonic() + 300
        while not any(json.loads(body)["status"] in TERMINAL for _, body, _, _ in relay.forwarded):
            assert time.monotonic() < deadline, server.explain(relay.forwarded)
            time.sleep(0.1)
    finally:
        server.stop()
        relay.close()

    events = [
        (at, json.loads(body), status, json.loads(reply)) for at, body, status, reply in relay.forwarded
    ]
    assert [status for _, _, status, _ in events] == [200] * len(events), events
    completed_at, completed, _, _ = next(event for event in events if event[1]["status"] in TERMINAL)
    assert completed["status"] == "succeeded", server.explain(completed)
    figures = completed["metrics"]["stems"]
    stems = {url.rsplit("/", 1)[-1].split(".")[0] for url in completed["output"] if url.endswith(".flac")}
    assert stems == {"vocals", "instrumental", "guitar", "no_guitar", "piano"}, completed["output"]
    present = {name for name in stems if figures[name]["present"]}
    assert present == stems, f"this song gives every stem audible: {figures}"

    # the copies run from the queue after the webhooks: wait for every stem's row to settle
    deadline = time.monotonic() + COPY_SECONDS
    while True:
        rows = {row["name"]: row for row in json.loads(_get(f"{base}/probe/stems?prediction=e2e"))}
        settled = rows and all(row["copy_state"] not in ("pending", "queued") for row in rows.values())
        jobs = [body for _, path, body in local.posts if path == "/jobs"]
        if settled and jobs:  # the guitar's hand-off comes after its copy
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)

    listed = {entry["key"]: entry for entry in json.loads(_get(f"{base}/probe/r2"))}
    assert sorted(listed) == sorted(f"stems/e2e/{name}.flac" for name in present), (listed, figures)
    for name in stems:
        row, (_, uploaded) = rows[name], local.uploads[f"{name}.flac"]
        assert row["copy_state"] == "copied", row
        assert (row["size_bytes"], row["content_type"]) == (len(uploaded), "audio/flac")
        assert _get(f"{base}/probe/r2/stems/e2e/{name}.flac") == uploaded, f"{name}: not the file served"

    # each stem was written as it arrived: the instrumental before the runtime sent completed
    puts = {body["key"]: at for at, path, body in local.posts if path == "/probe/r2-put"}
    assert puts["stems/e2e/instrumental.flac"] < completed_at, "the instrumental was copied after completed"

    # no input in a self-hosted runtime's webhooks: the guitar is transcribed, from R2
    [job] = jobs
    assert job["r2_key"] == "stems/e2e/guitar.flac" and job["idempotency_key"] == "e2e/guitar"
    expected = {**{"model": None, "terms": None}, **figures["guitar"]}
    assert job["figures"] == {key: expected[key] for key in job["figures"]}
    assert "127.0.0.1" not in json.dumps(job), "the job carries the R2 key, never the file's URL"
