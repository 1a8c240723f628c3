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
    python -m benchmarks.full_size_weights --smoke  # writes nothing (see below)

Every model of the project's plan must have a writer here (`full_size_models`): a model added to the plan
without one fails at once, naming it. `--smoke` checks exactly that and builds each model on the meta
device (no memory, no file), printing its parameters and stored size.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
from demucs.htdemucs import HTDemucs

from benchmarks.smoke import add_smoke_option, parse_with_smoke
from fixtures.tiny_demucs import identity_weights, write_bag
from fixtures.weights_manifest import write_local_manifest
from separation.errors import SettingsError
from separation.models.demucs.bag import bag_file_problems
from separation.models.demucs.spec import DemucsSpec
from separation.models.roformer.bs_roformer import BSRoformer
from separation.models.roformer.checkpoint import load_config
from separation.models.roformer.spec import RoformerSpec
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan

DEFAULT_DIR = Path("/tmp/bs-roformer-cog-full-size-weights")
ROFORMER_STORAGE = {"bs_roformer_vocals": torch.float32, "bs_roformer_mega53": torch.float16}  # as published
HTDEMUCS_SEGMENT_SECONDS = Fraction(39, 5)  # 7.8 s, as stored in the published packages
HTDEMUCS_FT_KWARGS = {"bottom_channels": 512, "dconv_mode": 3, "segment": HTDEMUCS_SEGMENT_SECONDS}
HTDEMUCS_6S_KWARGS = {"bottom_channels": 0, "dconv_mode": 3, "segment": HTDEMUCS_SEGMENT_SECONDS}
HTDEMUCS_BAGS = {  # bag name: (HTDemucs kwargs, number of models, bag weights); sources from the plan
    "htdemucs_ft": (HTDEMUCS_FT_KWARGS, 4, identity_weights(4)),
    "htdemucs_6s": (HTDEMUCS_6S_KWARGS, 1, None),
}


def full_size_htdemucs(sources: list[str], kwargs: dict, seed: int) -> HTDemucs:
    """A randomly initialised full-size HTDemucs; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HTDemucs(sources=list(sources), **kwargs)


def full_size_roformer(
    model_config: dict, seed: int, network: type[torch.nn.Module] = BSRoformer
) -> torch.nn.Module:
    """A randomly initialised RoFormer (`network`) of a config's `model` section; the global torch RNG is
    left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return network(**model_config)


def write_roformer_checkpoint(
    path: Path,
    config_path: Path,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    network: type[torch.nn.Module] = BSRoformer,
) -> None:
    """Save a random `network` of `config_path`'s geometry as a bare state_dict of `dtype` at `path`.

    It is written under its final name in a side folder and then moved, so an interrupted run never
    leaves a truncated checkpoint behind (torch names the archive root after the file stem).
    """
    model = full_size_roformer(load_config(config_path)["model"], seed, network)
    partial_dir = path.parent / ".partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    torch.save({key: value.to(dtype) for key, value in model.state_dict().items()}, partial_dir / path.name)
    os.replace(partial_dir / path.name, path)
    partial_dir.rmdir()


def bag_is_complete(name: str, bag_dir: Path) -> bool:
    """True when `<name>.yaml` and every `.th` file it lists are present (write_bag writes the yaml last)."""
    return not bag_file_problems(name, bag_dir)


@dataclass(frozen=True)
class FullSizeModel:
    """How one model of the plan is written at full size: `build(seed, device)` makes its random modules
    (several for a Demucs bag), `write(folder, seed)` saves them where the plan loads them from,
    `is_written(folder)` tells whether that was done; `dtype` is how its tensors are stored."""

    name: str
    dtype: torch.dtype
    build: Callable[[int, torch.device], list[torch.nn.Module]]
    write: Callable[[Path, int], str]
    is_written: Callable[[Path], bool]


def full_size_models(plan: StemPlan) -> list[FullSizeModel]:
    """The full-size writer of every model of `plan`; SettingsError naming a model this script cannot write
    (a new model type, or a model whose published storage it does not know yet)."""
    models = []
    for index, (name, spec) in enumerate(plan.models.items()):
        if isinstance(spec, RoformerSpec) and name in ROFORMER_STORAGE:
            models.append(_roformer_writer(spec, ROFORMER_STORAGE[name]))
        elif isinstance(spec, DemucsSpec) and spec.bag in HTDEMUCS_BAGS:
            models.append(_bag_writer(spec, seed_offset=100 * index))
        else:
            raise SettingsError(
                f"benchmarks/full_size_weights.py cannot write model {name!r} ({spec.type_name}) of the "
                "plan: add its published geometry and storage there"
            )
    return models


def _roformer_writer(spec: RoformerSpec, dtype: torch.dtype) -> FullSizeModel:
    def build(seed: int, device: torch.device) -> list[torch.nn.Module]:
        with torch.device(device):
            return [full_size_roformer(spec.settings["model"], seed, spec.network)]

    def write(folder: Path, seed: int) -> str:
        write_roformer_checkpoint(folder / spec.checkpoint, spec.config, seed, dtype, spec.network)
        return str(folder / spec.checkpoint)

    return FullSizeModel(spec.name, dtype, build, write, lambda folder: (folder / spec.checkpoint).is_file())


def _bag_writer(spec: DemucsSpec, seed_offset: int) -> FullSizeModel:
    kwargs, count, weights = HTDEMUCS_BAGS[spec.bag]

    def build(seed: int, device: torch.device) -> list[torch.nn.Module]:
        with torch.device(device):
            return [
                full_size_htdemucs(list(spec.sources), kwargs, seed + seed_offset + i) for i in range(count)
            ]

    def write(folder: Path, seed: int) -> str:
        bag_dir = folder / spec.folder
        write_bag(bag_dir, spec.bag, build(seed, torch.device("cpu")), weights, seed)
        return f"{bag_dir / spec.bag}.yaml + {count} models"

    return FullSizeModel(
        spec.name, torch.float16, build, write, lambda folder: bag_is_complete(spec.bag, folder / spec.folder)
    )


def write_full_size_weights(folder: Path, seed: int = 0, log=print) -> Path:
    """Fill `folder` with the full-size random models the project's stem plan names; keep existing files."""
    for model in full_size_models(StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)):
        if model.is_written(folder):
            log(f"kept    {model.name}")
            continue
        start = time.perf_counter()
        written = model.write(folder, seed)
        log(f"wrote   {written} ({time.perf_counter() - start:.1f} s)")
    manifest = write_local_manifest(
        folder, source="full-size random models written by benchmarks/full_size_weights.py"
    )
    log(f"wrote   {manifest} (sizes and sha256 of the files above)")
    return folder


def check_plan_coverage() -> None:
    """What `--smoke` does: build every model of the project's plan at full size on the meta device (no
    memory, nothing written) and print its parameters and stored size."""
    for model in full_size_models(StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)):
        modules = model.build(0, torch.device("meta"))
        params = sum(p.numel() for module in modules for p in module.parameters())
        stored = params * torch.finfo(model.dtype).bits // 8
        print(
            f"{model.name:24s} {len(modules)} module(s), {params / 1e6:8.1f} M parameters, "
            f"{stored / 1e6:7.0f} MB as {model.dtype}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR, help=f"default {DEFAULT_DIR}")
    parser.add_argument("--seed", type=int, default=0)
    add_smoke_option(
        parser, "check that every model of the plan has a full-size writer, building each on the meta device"
    )
    args = parse_with_smoke(parser, {})
    if args.smoke:
        check_plan_coverage()
    else:
        write_full_size_weights(args.folder, args.seed)


if __name__ == "__main__":
    main()
