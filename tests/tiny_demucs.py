"""Small randomly initialised Demucs v4 bags, saved exactly the way Demucs saves its pretrained models.

Each model is a real `demucs.htdemucs.HTDemucs` (same STFT, same 4-layer hybrid geometry, same segment and
padding logic) with 4 channels, one transformer layer and a 1.2 s training segment, so a forward pass takes
well under 0.1 s on one core. A bag folder holds `<name>.yaml` and one `<sig>-<sha256 prefix>.th` per
model, which is what `demucs.pretrained.get_model(name, repo=folder)` reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import get_state, save_with_checksum

FOUR_STEMS = ["drums", "bass", "other", "vocals"]
SIX_STEMS = ["drums", "bass", "other", "vocals", "guitar", "piano"]
TINY_SEGMENT_SECONDS = Fraction(6, 5)  # the real checkpoints use Fraction(39, 5)
TINY_KWARGS = {"channels": 4, "dconv_comp": 2, "t_layers": 1, "t_heads": 2, "segment": TINY_SEGMENT_SECONDS}


def signature(name: str, index: int, seed: int) -> str:
    """A stable 8-hex-digit model signature, distinct per bag, position and seed."""
    return hashlib.sha256(f"{name}/{index}/{seed}".encode()).hexdigest()[:8]


def write_bag(
    bag_dir: Path,
    name: str,
    models: Sequence[torch.nn.Module],
    weights: list[list[float]] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Save `models` as Demucs packages plus the bag yaml `<name>.yaml`; return the `.th` paths in bag order.

    Each package is the dict `demucs.states.serialize_model` builds (klass, args, kwargs, fp16 state,
    training_args), written by `demucs.states.save_with_checksum` as `<sig>-<first 8 hex of sha256>.th`.
    `training_args` is a plain dict here (Demucs converts its OmegaConf config to one). An earlier file
    with the same signature is replaced (Demucs refuses two files for one signature). The yaml is written
    last, so a bag whose yaml exists is complete.
    """
    bag_dir.mkdir(parents=True, exist_ok=True)
    signatures, paths = [], []
    for index, model in enumerate(models):
        args, kwargs = model._init_args_kwargs
        package = {
            "klass": model.__class__,
            "args": args,
            "kwargs": kwargs,
            "state": get_state(model, None, half=True),
            "training_args": {"model": "htdemucs", "bag": name, "index": index},
        }
        sig = signature(name, index, seed)
        for stale in bag_dir.glob(f"{sig}-*.th"):
            stale.unlink()
        save_with_checksum(package, bag_dir / f"{sig}.th")
        (path,) = bag_dir.glob(f"{sig}-*.th")
        signatures.append(sig)
        paths.append(path)
    bag: dict = {"models": signatures}
    if weights is not None:
        bag["weights"] = weights
    (bag_dir / f"{name}.yaml").write_text(yaml.safe_dump(bag, default_flow_style=None))
    return paths


def tiny_htdemucs(sources: list[str], seed: int) -> HTDemucs:
    """A randomly initialised tiny HTDemucs; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HTDemucs(sources=list(sources), **TINY_KWARGS)


def write_tiny_bag(
    bag_dir: Path,
    name: str,
    sources: list[str],
    num_models: int,
    weights: list[list[float]] | None = None,
    seed: int = 0,
) -> list[Path]:
    """Build `num_models` tiny HTDemucs (model i seeded with `seed + i`) and save them as bag `name`."""
    models = [tiny_htdemucs(sources, seed + index) for index in range(num_models)]
    return write_bag(bag_dir, name, models, weights, seed)


def identity_weights(count: int) -> list[list[float]]:
    """Bag weights for `count` specialists: model k contributes only source k."""
    return [[float(row == col) for col in range(count)] for row in range(count)]


def write_tiny_demucs_weights(bag_dir: Path) -> None:
    """Tiny stand-ins for the two bags the project uses, in one folder:

    - `htdemucs_ft`: 4 specialists with identity weights (model k contributes only source k);
    - `htdemucs_6s`: 1 model with sources drums, bass, other, vocals, guitar, piano.
    """
    write_tiny_bag(bag_dir, "htdemucs_ft", FOUR_STEMS, 4, identity_weights(len(FOUR_STEMS)), seed=0)
    write_tiny_bag(bag_dir, "htdemucs_6s", SIX_STEMS, 1, seed=100)
