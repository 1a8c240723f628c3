"""Back-to-back sync predictions: how often the runtime answers 409 "At capacity" right after a response.

Right after a sync prediction returns, coglet may still report BUSY on /health-check and refuse the next
request with 409 for a moment. This sends N sync predictions, each as soon as the previous one returned,
to two servers on the same runtime: the real model (tiny weights, the fast chunk settings) and
`benchmarks/busy_probe_runner.py`, which does no work at all. For each it counts the 409s, and how often a
/health-check sent right after a response said BUSY. If the empty runner shows the same, the window is the
runtime's alone, and a client retries a 409 after a short backoff. Loopback only.

    python -m benchmarks.busy_window [--requests 64] [--weights TINY_DIR] [--smoke]

`--smoke`: 2 predictions per server.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.smoke import add_smoke_option, parse_with_smoke, tiny_weights
from fixtures.cog_server import CogServer, data_url
from fixtures.songs import write_song

PROBE_RUNNER = "benchmarks/busy_probe_runner.py:Runner"
SETUP_TIMEOUT_SECONDS = 300


def back_to_back(server: CogServer, inputs: dict, requests: int) -> tuple[int, int, float]:
    """(409 answers, BUSY health checks right after a response, seconds per prediction) over `requests`."""
    conflicts = busy = 0
    start = time.perf_counter()
    for _ in range(requests):
        status, body = server.request("POST", "/predictions", {"input": inputs})
        if status == 409:
            conflicts += 1
            time.sleep(0.05)
            continue
        if status != 200 or body.get("status") != "succeeded":
            raise RuntimeError(server.explain((status, body)))
        if server.health().get("status") == "BUSY":
            busy += 1
    return conflicts, busy, (time.perf_counter() - start) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--weights", type=Path, help="a tiny weights folder (default: written to a temp dir)")
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"requests": 2})
    with tempfile.TemporaryDirectory(prefix="busy-window-") as folder, tiny_weights(args.weights) as weights:
        scratch = Path(folder)
        song = data_url(write_song(scratch / "song.wav", seconds=2.0).read_bytes(), "audio/wav")
        servers = {
            "model (tiny weights)": (
                CogServer(weights, scratch / "model.log"),
                {"chunk_size": 4, "overlap": 1},
            ),
            "empty runner": (
                CogServer(weights, scratch / "probe.log", extra_env={"COG_PREDICT_TYPE_STUB": PROBE_RUNNER}),
                {},
            ),
        }
        try:
            print(f"{args.requests} back-to-back sync predictions per server (a 2 s WAV as a data URL)")
            for name, (server, options) in servers.items():
                health = server.wait_until_settled(SETUP_TIMEOUT_SECONDS)
                if health["status"] != "READY":
                    raise RuntimeError(server.explain(health))
                conflicts, busy, seconds = back_to_back(server, {"audio": song, **options}, args.requests)
                print(
                    f"  {name:<22} 409 answers {conflicts:>3}/{args.requests}, BUSY right after a response "
                    f"{busy:>3}/{args.requests - conflicts}, {seconds:.3f} s per prediction"
                )
        finally:
            for server, _ in servers.values():
                server.stop()


if __name__ == "__main__":
    main()
