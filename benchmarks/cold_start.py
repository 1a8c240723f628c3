"""Cold start: how long a fresh server takes to be ready, with full-size weights on local disk.

The weights folder (full-size random models, `benchmarks/full_size_weights.py`) is read once first, so
the page cache is warm, as on a host that has just pulled the image. Each measurement then runs in a
fresh Python process, so imports and first-use costs count:

- service: `import separation.serving` (torch, demucs, ...), then `PredictionService(weights, device)`,
  which is what `predict.py`'s setup() does: the plan's `setup` models are loaded, the `lazy` ones
  (htdemucs_6s, the Mega-53 BS-RoFormer) are not;
- models: each model's load on its own (CUDA context creation first, on CUDA), lazy ones included; for a
  model that loads its mask heads on first use (Mega-53: the trunk at load), then the first head a mode
  asks of it (guitar) and the other heads, each set timed on its own.

Target: PredictionService construction <= 5 s. With `--profile` (or when over the target) it prints a
cProfile of the construction, sorted by cumulative time.

    python -m benchmarks.cold_start [--weights DIR] [--device cpu|cuda] [--profile] [--smoke]

A weights folder with its own stems.yaml (e.g. the tiny one of `python -m fixtures.tiny_weights DIR`) is
used as it is; any other gets the full-size random models. `--smoke`: tiny models.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.smoke import add_smoke_option, parse_with_smoke, tiny_weights

# Only the standard library (benchmarks.smoke imports nothing else at module level): the child processes
# time the project's imports themselves.

TARGET_SECONDS = 5.0
PROFILE_LINES = 30


def synchronize(device: str) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_service(weights_dir: Path, device: str, profile: bool) -> dict:
    """Child: seconds for the imports and for the PredictionService construction."""
    start = time.perf_counter()
    from separation.serving import PredictionService

    imports = time.perf_counter() - start
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout holds the JSON alone
        PredictionService(weights_dir, device)
    synchronize(device)
    construction = time.perf_counter() - start
    if profiler is not None:
        import pstats

        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative")  # stdout holds the JSON
        stats.print_stats(PROFILE_LINES)
        stats.sort_stats("tottime").print_stats(PROFILE_LINES // 2)
    return {"imports": imports, "construction": construction}


def measure_models(weights_dir: Path, device: str) -> dict:
    """Child: seconds to load each model of the plan on its own, after the imports; for a model whose
    mask heads load on first use, also its first head and then all the others."""
    import torch

    from separation.plan import StemPlan

    seconds = {}
    if torch.device(device).type == "cuda":
        start = time.perf_counter()
        torch.zeros(1, device=device)
        synchronize(device)
        seconds["CUDA context"] = time.perf_counter() - start
    plan = StemPlan.for_weights(weights_dir)
    for name, spec in plan.models.items():
        start = time.perf_counter()
        model = spec.build(weights_dir, torch.device(device))
        synchronize(device)
        stems = spec.stem_names()
        lazy_heads = len(stems) > 1 and hasattr(model, "checkpoint")
        seconds[f"{name} ({spec.load}{', trunk' if lazy_heads else ''})"] = time.perf_counter() - start
        if lazy_heads:
            asked = [stem for mode in plan.modes.values() for stem in mode.models.get(name, ())]
            first = stems.index(asked[0]) if asked else 0
            rest = [head for head in range(len(stems)) if head != first]
            for label, heads in ((f"head {stems[first]}", [first]), (f"the other {len(rest)} heads", rest)):
                start = time.perf_counter()
                model.checkpoint.ensure_heads(heads)
                synchronize(device)
                seconds[f"  {label}"] = time.perf_counter() - start
    return seconds


def run_child(what: str, weights_dir: Path, device: str, profile: bool = False) -> dict:
    """Run one measurement in a fresh interpreter; its stderr (the profile) passes through."""
    command = [sys.executable, "-m", "benchmarks.cold_start", "--child", what]
    command += ["--weights", str(weights_dir), "--device", device] + (["--profile"] if profile else [])
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(weights_dir: Path, device: str, profile: bool) -> None:
    """Parent: warm the page cache, run the children and print their figures."""
    from benchmarks.pipeline import load_average, warm_page_cache

    sys.stdout.reconfigure(line_buffering=True)  # in order with what the children print to stderr
    print(f"page cache: read {warm_page_cache(weights_dir) / 1e6:.0f} MB of weights in {weights_dir}")
    print(f"device {device}, {load_average()}")
    service = run_child("service", weights_dir, device)
    ready = service["imports"] + service["construction"]
    verdict = "met" if service["construction"] <= TARGET_SECONDS else "NOT met"
    print(f"imports (separation.serving: torch, demucs, ...)  {service['imports']:6.2f} s")
    print(f"PredictionService() construction                  {service['construction']:6.2f} s", end="")
    print(f"   target <= {TARGET_SECONDS:g} s: {verdict}")
    print(f"process start to ready                            {ready:6.2f} s")
    print("each model on its own (fresh process, after the imports):")
    for name, seconds in run_child("models", weights_dir, device).items():
        print(f"  {name:40s} {seconds:6.2f} s")
    if profile or service["construction"] > TARGET_SECONDS:
        print(f"\ncProfile of the construction (top {PROFILE_LINES} by cumulative time):", flush=True)
        run_child("service", weights_dir, device, profile=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="default /tmp/bs-roformer-cog-full-size-weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the construction")
    parser.add_argument("--child", choices=["service", "models"], help=argparse.SUPPRESS)
    add_smoke_option(parser)
    args = parse_with_smoke(parser, {"device": "cpu"})
    if args.child == "service":
        print(json.dumps(measure_service(args.weights, args.device, args.profile)))
    elif args.child == "models":
        print(json.dumps(measure_models(args.weights, args.device)))
    elif args.smoke:
        with tiny_weights(args.weights) as weights_dir:
            report(weights_dir, args.device, args.profile)
    else:
        from benchmarks.full_size_weights import DEFAULT_DIR
        from benchmarks.pipeline import prepare_weights

        report(prepare_weights(args.weights or DEFAULT_DIR), args.device, args.profile)


if __name__ == "__main__":
    main()
