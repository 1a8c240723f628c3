"""Small randomly initialised BS-RoFormers saved in the real checkpoint format."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml

from separation.roformer import BSRoformer, load_config

VIPERX_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "config_bs_roformer_vocals.yaml"


def tiny_config(dim: int = 32, depth: int = 1, heads: int = 2, dim_head: int = 16) -> dict:
    """The viperx config with a narrow, shallow model: same STFT and the same 62 bands."""
    config = copy.deepcopy(load_config(VIPERX_CONFIG))
    config["model"].update(dim=dim, depth=depth, heads=heads, dim_head=dim_head)
    return config


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every norm gain a non-trivial value too, so a mis-wired norm cannot hide."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("gamma"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
    return model


def write_tiny_roformer(
    folder: Path, checkpoint_name: str, config: dict | None = None, wrapper: str | None = None, seed: int = 0
) -> tuple[Path, Path]:
    """Save a random model's state_dict (optionally under `wrapper`) and its config.

    Returns (config_path, checkpoint_path).
    """
    config = config or tiny_config()
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = randomize(BSRoformer(**config["model"]), seed)
    state = model.state_dict()
    checkpoint_path = folder / checkpoint_name
    torch.save({wrapper: state} if wrapper else state, checkpoint_path)
    config_path = folder / (Path(checkpoint_name).stem + ".yaml")
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config_path, checkpoint_path
