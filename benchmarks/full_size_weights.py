"""A weights folder of full-size, randomly initialised models in the real geometries and file formats.

Speed and memory do not depend on the weight values, so these stand in for the published checkpoints in
the benchmarks. The folder has the layout `configs/stems.yaml` expects, and no stems.yaml of its own, so
the project's real plan and model configs apply:

- `model_bs_roformer_ep_317_sdr_12.9755.ckpt`: the viperx BS-RoFormer geometry
  (`configs/config_bs_roformer_vocals.yaml`), saved as a bare fp32 state_dict (699 keys, ~639 MB);
- `mvsep_mega_model_bs_roformer_53_stems_v1.ckpt`: the Mega-53 geometry, fp16 as published (13,595 keys,
  ~1.37 GB);
- `demucs/htdemucs_ft.yaml` + 4 `.th` packages: HTDemucs with the htdemucs_ft kwargs, identity bag weights
  (~84 MB each in fp16, as the published files);
- `demucs/htdemucs_6s.yaml` + 1 `.th` package: HTDemucs with 6 sources (~55 MB, as the published file).

The Demucs kwargs: the published packages store `segment=Fraction(39, 5)` and the default 48 channels,
depth 4, nfft 4096 and 5 transformer layers; `dconv_mode=3` with `bottom_channels=512` (htdemucs_ft) or
`bottom_channels=0` (htdemucs_6s) are the settings of demucs' `grids/mmi.py` whose fp16 state size matches
the published file sizes (83,968,912 of 84,141,271 bytes and 54,829,992 of 54,996,327 bytes; the rest is
pickled metadata). Signatures are made up (see `fixtures.tiny_demucs.signature`), not the published ones.

Files that already exist are kept, so a second run costs nothing. A `weights.yaml` with the files' sizes
and sha256 lets the project's weights check accept the folder.

    python -m benchmarks.full_size_weights [DIR]   # default /tmp/bs-roformer-cog-full-size-weights
"""

from __future__ import annotations

import argparse
import os
import time
from fractions import Fraction
from pathlib import Path

import torch
from demucs.htdemucs import HTDemucs

from fixtures.tiny_demucs import FOUR_STEMS, SIX_STEMS, identity_weights, write_bag
from fixtures.weights_manifest import write_local_manifest
from separation.models.demucs.bag import bag_file_problems
from separation.models.roformer.bs_roformer import BSRoformer
from separation.models.roformer.checkpoint import load_config
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan

DEFAULT_DIR = Path("/tmp/bs-roformer-cog-full-size-weights")
ROFORMER_STORAGE = {"bs_roformer_vocals": torch.float32, "bs_roformer_mega53": torch.float16}  # as published
HTDEMUCS_SEGMENT_SECONDS = Fraction(39, 5)  # 7.8 s, as stored in the published packages
HTDEMUCS_FT_KWARGS = {"bottom_channels": 512, "dconv_mode": 3, "segment": HTDEMUCS_SEGMENT_SECONDS}
HTDEMUCS_6S_KWARGS = {"bottom_channels": 0, "dconv_mode": 3, "segment": HTDEMUCS_SEGMENT_SECONDS}


def full_size_htdemucs(sources: list[str], kwargs: dict, seed: int) -> HTDemucs:
    """A randomly initialised full-size HTDemucs; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HTDemucs(sources=list(sources), **kwargs)


def write_roformer_checkpoint(
    path: Path, config_path: Path, seed: int = 0, dtype: torch.dtype = torch.float32
) -> None:
    """Save a random BS-RoFormer of `config_path`'s geometry as a bare state_dict of `dtype` at `path`.

    It is written under its final name in a side folder and then moved, so an interrupted run never
    leaves a truncated checkpoint behind (torch names the archive root after the file stem).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BSRoformer(**load_config(config_path)["model"])
    partial_dir = path.parent / ".partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    torch.save({key: value.to(dtype) for key, value in model.state_dict().items()}, partial_dir / path.name)
    os.replace(partial_dir / path.name, path)
    partial_dir.rmdir()


def bag_is_complete(name: str, bag_dir: Path) -> bool:
    """True when `<name>.yaml` and every `.th` file it lists are present (write_bag writes the yaml last)."""
    return not bag_file_problems(name, bag_dir)


def write_full_size_weights(folder: Path, seed: int = 0, log=print) -> Path:
    """Fill `folder` with the full-size random models the project's stem plan names; keep existing files."""
    plan = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)
    for name, dtype in ROFORMER_STORAGE.items():
        roformer = plan.models[name]
        checkpoint = folder / roformer.checkpoint
        if checkpoint.is_file():
            log(f"kept    {checkpoint}")
            continue
        start = time.perf_counter()
        write_roformer_checkpoint(checkpoint, roformer.config, seed, dtype)
        log(f"wrote   {checkpoint} ({time.perf_counter() - start:.1f} s)")

    bags = {  # name: (sources, kwargs, number of models, bag weights)
        "htdemucs_ft": (FOUR_STEMS, HTDEMUCS_FT_KWARGS, 4, identity_weights(len(FOUR_STEMS))),
        "htdemucs_6s": (SIX_STEMS, HTDEMUCS_6S_KWARGS, 1, None),
    }
    for index, (name, (sources, kwargs, count, weights)) in enumerate(bags.items()):
        bag_dir = folder / plan.models[name].folder
        if bag_is_complete(name, bag_dir):
            log(f"kept    {bag_dir / name}.yaml and its models")
            continue
        start = time.perf_counter()
        models = [full_size_htdemucs(sources, kwargs, seed + 100 * index + i) for i in range(count)]
        write_bag(bag_dir, name, models, weights, seed)
        log(f"wrote   {bag_dir / name}.yaml + {count} models ({time.perf_counter() - start:.1f} s)")
    manifest = write_local_manifest(
        folder, source="full-size random models written by benchmarks/full_size_weights.py"
    )
    log(f"wrote   {manifest} (sizes and sha256 of the files above)")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR, help=f"default {DEFAULT_DIR}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_full_size_weights(args.folder, args.seed)


if __name__ == "__main__":
    main()
