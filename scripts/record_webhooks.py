"""Record the webhooks the real Cog runtime sends, as the fixture the Worker's tests replay.

Starts the Cog server (coglet) on tiny random weights with an upload URL, so outputs are named file URLs as on
Replicate, and runs three async predictions whose webhooks (`start`, `output`, `completed`) go to a local
recorder:

- `guitar`: `stems=guitar` with `extra_stems`, run to the end;
- `canceled`: the same mode on a longer song, canceled once the instrumental has arrived;
- `failed`: an audio file that is not audio.

Each body is kept as the runtime sent it, in arrival order. The runtime sends them unsigned; the tests sign
them with a test secret when they replay them.

    python scripts/record_webhooks.py                  # rewrite the fixture
    python scripts/record_webhooks.py --out FILE.json  # write elsewhere
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: fixtures/ is importable from the repo root

from fixtures.cog_server import CogServer, Receiver  # noqa: E402
from fixtures.songs import write_song  # noqa: E402
from fixtures.tiny_weights import write_tiny_weights  # noqa: E402

FIXTURE = REPO_ROOT / "examples" / "worker" / "test" / "fixtures" / "cog-webhooks.json"
EVENTS = ["start", "output", "completed"]
FAST = {"chunk_size": 4, "overlap": 1}  # the least BS-RoFormer work the schema allows
GUITAR_INPUT = {"stems": "guitar", "extra_stems": "piano, kick", "output_format": "flac", **FAST}
TERMINAL = ("succeeded", "failed", "canceled")
SETUP_SECONDS = 240
PREDICTION_SECONDS = 300


def terminal(receiver: Receiver, prediction_id: str) -> dict | None:
    return next((h for h in receiver.webhooks_for(prediction_id) if h["status"] in TERMINAL), None)


def start(server: CogServer, receiver: Receiver, prediction_id: str, inputs: dict) -> None:
    body = {
        "id": prediction_id,
        "input": inputs,
        "webhook": receiver.url("/hook"),
        "webhook_events_filter": EVENTS,
    }
    status, answer = server.request("POST", "/predictions", body, headers={"Prefer": "respond-async"})
    if status != 202:
        raise RuntimeError(server.explain((status, answer)))


def wait_terminal(server: CogServer, receiver: Receiver, prediction_id: str, expected: str) -> None:
    final = receiver.wait_for(lambda: terminal(receiver, prediction_id), PREDICTION_SECONDS)
    if not final or final["status"] != expected:
        raise RuntimeError(server.explain(f"{prediction_id}: expected {expected}, got {final}"))


def has_stem(hook: dict, name: str) -> bool:
    return any(url.rsplit("/", 1)[-1].startswith(name + ".") for url in hook.get("output") or [])


def record(work: Path) -> dict[str, list[dict]]:
    """Run the three predictions; return each one's webhook bodies in arrival order."""
    weights = write_tiny_weights(work / "weights")
    receiver = Receiver()
    server = CogServer(weights, work / "cog.log", upload_url=receiver.url("/upload/"))
    try:
        health = server.wait_until_settled(SETUP_SECONDS)
        if health.get("status") != "READY":
            raise RuntimeError(server.explain(health))
        song = write_song(work / "song.wav", seconds=10, seed=1).read_bytes()
        start(server, receiver, "guitar", {"audio": receiver.serve("song.wav", song), **GUITAR_INPUT})
        wait_terminal(server, receiver, "guitar", "succeeded")

        long_song = write_song(work / "long.wav", seconds=60, seed=2).read_bytes()
        start(server, receiver, "canceled", {"audio": receiver.serve("long.wav", long_song), **GUITAR_INPUT})
        arrived = receiver.wait_for(
            lambda: any(has_stem(h, "instrumental") for h in receiver.webhooks_for("canceled")),
            PREDICTION_SECONDS,
        )
        if not arrived:
            raise RuntimeError(server.explain("the canceled prediction brought no instrumental"))
        status, answer = server.request("POST", "/predictions/canceled/cancel")
        if status != 200:
            raise RuntimeError(server.explain((status, answer)))
        wait_terminal(server, receiver, "canceled", "canceled")

        not_audio = receiver.serve("notes.wav", b"these are guitar tabs, not audio\n")
        start(server, receiver, "failed", {"audio": not_audio, **GUITAR_INPUT})
        wait_terminal(server, receiver, "failed", "failed")
        return {name: receiver.webhooks_for(name) for name in ("guitar", "canceled", "failed")}
    finally:
        server.stop()
        receiver.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=FIXTURE, help=f"where to write (default: {FIXTURE})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="record-webhooks-") as work:
        predictions = record(Path(work))
    fixture = {
        "about": "Webhook bodies the Cog runtime sent for async predictions on tiny random weights, in "
        "arrival order, unsigned. Written by scripts/record_webhooks.py.",
        "input": GUITAR_INPUT,
        "predictions": predictions,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, indent=1) + "\n")
    for name, hooks in predictions.items():
        print(f"{name}: {' '.join(h['status'] for h in hooks)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
