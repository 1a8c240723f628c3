"""Cold start: how long a fresh server takes to be ready, with full-size weights on local disk.

The weights folder (full-size random models, `benchmarks/full_size_weights.py`) is read once first, so
the page cache is warm, as on a host that has just pulled the image. Each measurement then runs in a
fresh Python process, so imports and first-use costs count:

- service: `import separation.serving` (torch, demucs, ...), then `SeparationService(weights, device)`,
  which is what `predict.py`'s setup() does: BS-RoFormer and htdemucs_ft are loaded, htdemucs_6s is not;
- models: each model's load on its own (CUDA context creation first, on CUDA), htdemucs_6s included.

Target: SeparationService construction <= 5 s. With `--profile` (or when over the target) it prints a
cProfile of the construction, sorted by cumulative time.

    python -m benchmarks.cold_start [--weights DIR] [--device cpu|cuda] [--profile]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# Only the standard library at module level: the child processes time the project's imports themselves.

TARGET_SECONDS = 5.0
PROFILE_LINES = 30


def synchronize(device: str) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_service(weights_dir: Path, device: str, profile: bool) -> dict:
    """Child: seconds for the imports and for the SeparationService construction."""
    start = time.perf_counter()
    from separation.serving import SeparationService

    imports = time.perf_counter() - start
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start = time.perf_counter()
    SeparationService(weights_dir, device)
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
    """Child: seconds to load each model of the plan on its own, after the imports."""
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
        spec.build(weights_dir, torch.device(device))
        synchronize(device)
        seconds[f"{name} ({spec.load})"] = time.perf_counter() - start
    return seconds


def run_child(what: str, weights_dir: Path, device: str, profile: bool = False) -> dict:
    """Run one measurement in a fresh interpreter; its stderr (the profile) passes through."""
    command = [sys.executable, "-m", "benchmarks.cold_start", "--child", what]
    command += ["--weights", str(weights_dir), "--device", device] + (["--profile"] if profile else [])
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(weights_dir: Path | None, device: str, profile: bool) -> None:
    """Parent: prepare the weights, warm the page cache, run the children and print their figures."""
    from benchmarks.full_size_weights import DEFAULT_DIR, write_full_size_weights
    from benchmarks.pipeline import load_average, warm_page_cache

    weights_dir = weights_dir or DEFAULT_DIR
    write_full_size_weights(weights_dir, log=lambda line: None)
    print(f"page cache: read {warm_page_cache(weights_dir) / 1e6:.0f} MB of weights in {weights_dir}")
    print(f"device {device}, {load_average()}")
    service = run_child("service", weights_dir, device)
    ready = service["imports"] + service["construction"]
    verdict = "met" if service["construction"] <= TARGET_SECONDS else "NOT met"
    print(f"imports (separation.serving: torch, demucs, ...)  {service['imports']:6.2f} s")
    print(f"SeparationService() construction                  {service['construction']:6.2f} s", end="")
    print(f"   target <= {TARGET_SECONDS:g} s: {verdict}")
    print(f"process start to ready                            {ready:6.2f} s")
    print("each model on its own (fresh process, after the imports):")
    for name, seconds in run_child("models", weights_dir, device).items():
        print(f"  {name:32s} {seconds:6.2f} s")
    if profile or service["construction"] > TARGET_SECONDS:
        print(f"\ncProfile of the construction (top {PROFILE_LINES} by cumulative time):", flush=True)
        run_child("service", weights_dir, device, profile=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="default /tmp/bs-roformer-cog-full-size-weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the construction")
    parser.add_argument("--child", choices=["service", "models"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "service":
        print(json.dumps(measure_service(args.weights, args.device, args.profile)))
    elif args.child == "models":
        print(json.dumps(measure_models(args.weights, args.device)))
    else:
        report(args.weights, args.device, args.profile)


if __name__ == "__main__":
    main()
