"""Memory of a long-lived server: RSS of the real Cog server's process tree over many sequential predictions.

One real coglet server (`fixtures.cog_server.CogServer`, started the way the container starts it) per
configuration, with the tiny random models of `fixtures/tiny_weights.py`, answers N sequential sync
predictions of the same generated song. After each prediction (and a short settle) the RSS of the whole
process tree is summed from /proc: the server, its Python worker and any other descendant. It prints the
curve and the two target figures:

- warm-up growth: tree RSS after prediction 10 minus the idle tree RSS before the first (target <= 150 MB);
- steady growth: tree RSS after the last prediction minus after prediction 10 (target <= 30 MB over 100).

Configurations: `--modes` (vocals_instrumental, all_4) x `--formats` (output format: wav, mp3). Everything
is loopback: by default the song is served by an in-process HTTP receiver (`--io http`) and the stems are
uploaded to it (`--upload-url`), the way a hosted prediction moves files; `--io dataurl` sends the song as
a data URL and gets the stems back as data URLs instead.

Environment: the server gets cog.yaml's `environment:` list (what the container's image sets; its
SEPARATION_WEIGHTS_DIR is replaced by the tiny weights) plus every `--env KEY=VALUE`. `--compare` also runs
each configuration "bare" (neither cog.yaml's list nor --env), so one run shows a setting's effect.
`--no-cog-env` leaves cog.yaml's list out. Variants are named after what they get: `cog.yaml`,
`cog.yaml+env`, `env` (--no-cog-env with --env) or `bare`. What the code does itself (the malloc_trim after
each prediction in separation/serving.py) is in every variant.

Time: `--max-minutes` bounds the whole run and is shared evenly by the configurations still to run; one that
runs out stops early and says so. On 2 shared CPU cores a prediction takes about 1.5-2 s (vocals_instrumental)
and 6-10 s (all_4), so 110 predictions of all four configurations need about 45 minutes: run all_4 with fewer
(`--modes all_4 --predictions 30`); the steady-growth limit is scaled to the predictions run.

At predictions 1, 10 and the last it prints where the worker's memory is (from /proc/<pid>/smaps): the
main heap ([heap]), glibc's per-thread malloc arenas (anonymous 64 MiB-aligned heaps of 64 MiB), other
anonymous mappings (large mallocs, thread stacks, torch), file-backed mappings, and its thread count.

    python -m benchmarks.soak [--predictions 110] [--seconds 20] [--modes vocals_instrumental all_4]
        [--formats wav mp3] [--env KEY=VALUE ...] [--compare] [--no-cog-env] [--io http|dataurl]
        [--chunks fast|default] [--every 10] [--settle 0.5] [--max-minutes 18] [--weights DIR] [--smoke]

`--smoke`: 3 predictions of a 1 s song, vocals_instrumental to WAV only, a 0.1 s settle (no target figure is
reached: both need 10 predictions or more).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks.smoke import add_smoke_option, parse_with_smoke, tiny_weights
from fixtures.cog_server import REPO_ROOT, CogServer, Receiver, data_url
from fixtures.songs import write_song

MB = 1_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")
ARENA_HEAP_BYTES = 64 << 20  # glibc HEAP_MAX_SIZE on 64-bit: each non-main arena heap is 64 MiB, aligned
WARMUP_PREDICTIONS = 10
TARGET_WARMUP_MB = 150
TARGET_STEADY_MB_PER_100 = 30
FAST_CHUNKS = {"chunk_size": 4, "overlap": 1}  # the least BS-RoFormer work the schema allows (tests' FAST)
SETUP_TIMEOUT_S = 180
PREDICTION_TIMEOUT_S = 300


# ---------------------------------------------------------------------------------------------------
# /proc


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants alive now."""
    children, tree, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not args:
        return "?"
    short = [Path(args[0]).name] + args[1:3]
    return " ".join(short)[:60]


def thread_count(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class MemoryMap:
    """A process's resident memory by kind of mapping, in bytes."""

    heap: int = 0  # [heap]: glibc's main arena (brk)
    arenas: int = 0  # non-main arena heaps (per-thread malloc arenas)
    arena_count: int = 0
    other_anon: int = 0  # large mallocs (mmap), thread stacks, other anonymous memory
    file: int = 0  # libraries, mapped files
    threads: int = 0

    def line(self) -> str:
        return (
            f"heap {self.heap / MB:7.1f}  arenas {self.arenas / MB:7.1f} ({self.arena_count:2d})  "
            f"other anon {self.other_anon / MB:7.1f}  file {self.file / MB:6.1f}  threads {self.threads}"
        )


def memory_map(pid: int) -> MemoryMap:
    """Classify /proc/<pid>/smaps. An arena heap is an anonymous mapping starting on a 64 MiB boundary whose
    readable part and the reserved (---p) rest after it add up to 64 MiB."""
    regions = []  # (start, end, perms, name, rss)
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 5)
                if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    regions.append([start, end, head[1], head[5].strip() if len(head) > 5 else "", 0])
                elif line.startswith("Rss:"):
                    regions[-1][4] = int(line.split()[1]) * 1024
    except OSError:
        return MemoryMap()
    result = MemoryMap(threads=thread_count(pid))
    for i, (start, end, perms, name, rss) in enumerate(regions):
        if name == "[heap]":
            result.heap += rss
        elif name and not name.startswith("["):
            result.file += rss
        elif name:
            result.other_anon += rss  # [stack], [vvar], ...
        else:
            size = end - start
            nxt = regions[i + 1] if i + 1 < len(regions) else None
            if nxt and nxt[0] == end and nxt[2] == "---p" and not nxt[3]:
                size += nxt[1] - nxt[0]
            if start % ARENA_HEAP_BYTES == 0 and size == ARENA_HEAP_BYTES and perms.startswith("rw"):
                result.arenas += rss
                result.arena_count += 1
            else:
                result.other_anon += rss
    return result


# ---------------------------------------------------------------------------------------------------
# One configuration


@dataclass
class Soak:
    variant: str
    mode: str
    fmt: str
    idle: int = 0  # tree RSS before the first prediction
    curve: list[tuple[int, float, int]] = field(default_factory=list)  # (n, seconds, tree RSS)
    truncated: bool = False

    def median_seconds(self) -> float:
        return statistics.median(s for _, s, _ in self.curve) if self.curve else math.nan

    def rss_after(self, n: int) -> int | None:
        return next((rss for i, _, rss in self.curve if i == n), None)

    def warmup_growth(self) -> int | None:
        after = self.rss_after(WARMUP_PREDICTIONS)
        return None if after is None else after - self.idle

    def steady_growth(self) -> tuple[int, int] | None:
        """(growth from prediction 10 to the last, number of predictions it spans)."""
        after = self.rss_after(WARMUP_PREDICTIONS)
        if after is None or len(self.curve) <= WARMUP_PREDICTIONS:
            return None
        return self.curve[-1][2] - after, self.curve[-1][0] - WARMUP_PREDICTIONS


def cog_yaml_environment() -> dict[str, str]:
    """cog.yaml's `environment:` list as a dict, less SEPARATION_WEIGHTS_DIR (the tiny weights replace it)."""
    items = yaml.safe_load((REPO_ROOT / "cog.yaml").read_text()).get("environment") or []
    env = dict(item.split("=", 1) for item in items)
    env.pop("SEPARATION_WEIGHTS_DIR", None)
    return env


def run_configuration(
    args: argparse.Namespace,
    variant: str,
    extra_env: dict[str, str],
    mode: str,
    fmt: str,
    weights: Path,
    song: Path,
    work: Path,
    deadline: float,
) -> Soak:
    soak = Soak(variant, mode, fmt)
    receiver = Receiver()
    log = work / f"server-{variant}-{mode}-{fmt}.log"
    upload_url = receiver.url("/upload/") if args.io == "http" else None
    server = CogServer(weights, log, upload_url=upload_url, extra_env=extra_env)
    try:
        health = server.wait_until_settled(SETUP_TIMEOUT_S)
        assert health.get("status") == "READY", server.explain(health)
        audio = (
            receiver.serve("song.wav", song.read_bytes())
            if args.io == "http"
            else data_url(song.read_bytes(), "audio/wav")
        )
        inputs = {"audio": audio, "stems": mode, "output_format": fmt}
        if args.chunks == "fast":
            inputs.update(FAST_CHUNKS)
        time.sleep(args.settle)
        soak.idle = sum(rss_bytes(pid) for pid in process_tree(server.process.pid))
        env_text = " ".join(f"{k}={v}" for k, v in extra_env.items()) or "(none)"
        print(f"\n== {variant}: {mode} {fmt}   env: {env_text}")
        print(f"   idle tree RSS {soak.idle / MB:.1f} MB")
        for pid in process_tree(server.process.pid):
            print(f"     pid {pid:7d} {rss_bytes(pid) / MB:8.1f} MB  {process_name(pid)}")
        print(f"   {'n':>4} {'s':>6} {'tree MB':>9} {'vs idle':>8} {'vs n=10':>8}")
        for n in range(1, args.predictions + 1):
            if time.monotonic() > deadline:
                soak.truncated = True
                print(f"   time limit reached after {n - 1} predictions")
                break
            start = time.monotonic()
            response = server.predict(inputs, timeout=PREDICTION_TIMEOUT_S)
            seconds = time.monotonic() - start
            assert response["status"] == "succeeded", server.explain(response)
            receiver.uploads.clear()  # the benchmark's own memory, not the server's
            del response
            time.sleep(args.settle)
            tree = process_tree(server.process.pid)
            rss = sum(rss_bytes(pid) for pid in tree)
            soak.curve.append((n, seconds, rss))
            if n <= WARMUP_PREDICTIONS or n % args.every == 0 or n == args.predictions:
                at10 = soak.rss_after(WARMUP_PREDICTIONS)
                since10 = f"{(rss - at10) / MB:+8.1f}" if at10 is not None else ""
                print(f"   {n:4d} {seconds:6.2f} {rss / MB:9.1f} {(rss - soak.idle) / MB:+8.1f} {since10:>8}")
            if n in (1, WARMUP_PREDICTIONS, args.predictions):
                for pid in tree:
                    if rss_bytes(pid) > 50 * MB:
                        print(f"        pid {pid}: {rss_bytes(pid) / MB:7.1f} MB  {memory_map(pid).line()}")
    finally:
        server.stop()
        receiver.close()
    if not args.keep_logs:
        log.unlink(missing_ok=True)
    return soak


# ---------------------------------------------------------------------------------------------------


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def figure(value: int | None, limit: float) -> str:
    if value is None:
        return "      n/a"
    return f"{value / MB:+8.1f} {'ok' if value <= limit * MB else 'OVER'}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--predictions", type=int, default=110, help="sequential predictions per server")
    parser.add_argument("--seconds", type=float, default=20, help="song length (float WAV: 7 MB for 20 s)")
    parser.add_argument("--modes", nargs="+", default=["vocals_instrumental", "all_4"])
    parser.add_argument("--formats", nargs="+", default=["wav", "mp3"], help="output formats")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server environment")
    parser.add_argument("--compare", action="store_true", help="also run each configuration bare")
    parser.add_argument("--no-cog-env", action="store_true", help="leave cog.yaml's environment out")
    parser.add_argument("--io", choices=["http", "dataurl"], default="http")
    parser.add_argument("--chunks", choices=["fast", "default"], default="fast")
    parser.add_argument("--every", type=int, default=10, help="print every k-th prediction after the 10th")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds to wait before sampling RSS")
    parser.add_argument("--max-minutes", type=float, default=18, help="wall limit for the whole run")
    parser.add_argument("--weights", type=Path, help="a tiny weights folder (default: written to a temp dir)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server logs (and temp files)")
    add_smoke_option(parser)
    smoke = {"predictions": 3, "seconds": 1.0, "modes": ["vocals_instrumental"], "formats": ["wav"]}
    smoke["settle"] = 0.1
    args = parse_with_smoke(parser, smoke)

    deadline_all = time.monotonic() + args.max_minutes * 60
    configured_env = ({} if args.no_cog_env else cog_yaml_environment()) | parse_env(args.env)
    name = "+".join((["cog.yaml"] if not args.no_cog_env else []) + (["env"] if args.env else [])) or "bare"
    variants = [(name, configured_env)]
    if args.compare and name != "bare":
        variants.insert(0, ("bare", {}))
    inherited = sorted(k for k in os.environ if k.startswith("MALLOC_") or k.startswith("GLIBC_TUNABLES"))
    if inherited:
        print(f"NOTE: inherited from this shell, applies to every variant: {', '.join(inherited)}")
    print(
        f"soak: {args.predictions} predictions of a {args.seconds:g} s float WAV per configuration, "
        f"io {args.io}, chunks {args.chunks}, {os.cpu_count()} CPUs"
    )

    results: list[Soak] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, tiny_weights(args.weights) as weights:
        work = Path(tempfile.mkdtemp(prefix="soak-logs-")) if args.keep_logs else Path(tmp)
        song = write_song(Path(tmp) / "song.wav", args.seconds)
        kept = f"; server logs kept in {work}" if args.keep_logs else ""
        print(f"song {song.stat().st_size / MB:.1f} MB{kept}")
        configurations = [(v, e, m, f) for v, e in variants for m in args.modes for f in args.formats]
        for i, (variant, env, mode, fmt) in enumerate(configurations):
            share = (deadline_all - time.monotonic()) / (len(configurations) - i)
            deadline = time.monotonic() + share
            results.append(run_configuration(args, variant, env, mode, fmt, weights, song, work, deadline))

    print(
        "\nsummary: process-tree RSS in MB. Targets: <= 150 over the first 10 predictions, <= 30 per 100 "
        "after (limit scaled to the predictions run)"
    )
    header = f"{'variant':<11} {'mode':<20} {'fmt':<4} {'idle':>7} {'first 10':>11} {'after 10':>11}"
    print(f"  {header} {'over':>5} {'median s':>8}")
    for soak in results:
        steady = soak.steady_growth()
        steady_text = figure(None, 0)
        if steady is not None:
            growth, span = steady
            steady_text = figure(growth, TARGET_STEADY_MB_PER_100 * max(span, 1) / 100)
        span_text = f"{steady[1]:5d}" if steady else "    -"
        print(
            f"  {soak.variant:<11} {soak.mode:<20} {soak.fmt:<4} {soak.idle / MB:7.1f} "
            f"{figure(soak.warmup_growth(), TARGET_WARMUP_MB)} {steady_text} {span_text} "
            f"{soak.median_seconds():8.2f}" + ("  (time limit)" if soak.truncated else "")
        )


if __name__ == "__main__":
    main()
