"""How soon a client gets its first stems: the first `output` webhook that carries the instrumental, against
the `completed` one, through the real Cog runtime (coglet) with tiny models and `--upload-url`.

`run()` yields each stem file as soon as it is written, so the runtime uploads the vocals and the
instrumental and sends an `output` event while Demucs (all_4) or Mega-53 (guitar) still runs. For each mode
this prints the seconds from the request to that first event, to `completed`, and their ratio. Everything
stays on the loopback interface: one server, one local receiver for the input, uploads and webhooks.

    python -m benchmarks.stream_outputs [--seconds 60] [--modes all_4 guitar] [--repeats 2]
        [--weights TINY_DIR] [--smoke]

`--smoke`: a 1 s song, one prediction per mode.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.smoke import add_smoke_option, parse_with_smoke, tiny_weights
from fixtures.cog_server import CogServer, Receiver
from fixtures.songs import write_song

SETUP_TIMEOUT_SECONDS = 300
PREDICTION_TIMEOUT_SECONDS = 900


def timed_prediction(
    server: CogServer, receiver: Receiver, audio_url: str, mode: str, tag: str
) -> tuple[float, float]:
    """(seconds to the first output event naming instrumental.wav, seconds to the completed event)."""
    prediction_id = f"stream-{tag}"
    body = {
        "id": prediction_id,
        "input": {"audio": audio_url, "stems": mode},
        "webhook": receiver.url("/hook"),
        "webhook_events_filter": ["output", "completed"],
    }
    arrivals: dict[str, float] = {}

    def note_arrivals() -> bool:
        for hook in receiver.webhooks_for(prediction_id):
            outputs = hook.get("output") or []
            if any(url.endswith("/instrumental.wav") for url in outputs):
                arrivals.setdefault("instrumental", time.perf_counter())
            if hook["status"] in ("succeeded", "failed", "canceled"):
                arrivals.setdefault("completed", time.perf_counter())
                if hook["status"] != "succeeded":
                    raise RuntimeError(
                        f"prediction {prediction_id} ended {hook['status']}: {hook.get('error')}"
                    )
        return "completed" in arrivals

    start = time.perf_counter()
    status, answer = server.request("POST", "/predictions", body, headers={"Prefer": "respond-async"})
    if status != 202:
        raise RuntimeError(server.explain((status, answer)))
    while not receiver.wait_for(note_arrivals, PREDICTION_TIMEOUT_SECONDS):
        if time.perf_counter() - start > PREDICTION_TIMEOUT_SECONDS:
            raise RuntimeError(server.explain("no completed webhook"))
    return arrivals["instrumental"] - start, arrivals["completed"] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated song")
    parser.add_argument("--modes", nargs="+", default=["all_4", "guitar"])
    parser.add_argument(
        "--repeats", type=int, default=2, help="predictions per mode (the first loads lazy models)"
    )
    parser.add_argument("--weights", type=Path, help="a tiny weights folder (default: written to a temp dir)")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"seconds": 1.0, "repeats": 1})

    with tiny_weights(args.weights) as weights, tempfile.TemporaryDirectory(prefix="stream-") as folder:
        scratch = Path(folder)
        song = write_song(scratch / "song.wav", seconds=args.seconds)
        receiver = Receiver()
        server = CogServer(weights, scratch / "server.log", upload_url=receiver.url("/upload/"))
        try:
            health = server.wait_until_settled(SETUP_TIMEOUT_SECONDS)
            if health["status"] != "READY":
                raise RuntimeError(server.explain(health))
            audio_url = receiver.serve("song.wav", song.read_bytes())
            print(f"tiny models, {args.seconds:g} s song, WAV output, coglet with --upload-url (loopback)")
            print(f"{'mode':<8} {'run':>3} {'first instrumental':>19} {'completed':>10} {'ratio':>6}")
            for mode in args.modes:
                ratios = []
                for repeat in range(args.repeats):
                    first, completed = timed_prediction(server, receiver, audio_url, mode, f"{mode}-{repeat}")
                    ratios.append(first / completed)
                    row = f"{mode:<8} {repeat + 1:>3} {first:>17.2f} s {completed:>8.2f} s"
                    print(f"{row} {first / completed:>6.2f}")
                print(f"{mode:<8} median ratio {statistics.median(ratios):.2f}")
        finally:
            server.stop()
            receiver.close()


if __name__ == "__main__":
    main()
