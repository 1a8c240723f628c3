"""Loading a RoFormer checkpoint of either family member: its config (MSST's YAML as published, or ours),
the memory-mapped state_dict checked strictly against the model's listing, and the mask heads a request
needs, each on first use.

A multi-stem checkpoint is loaded by `RoformerCheckpoint`: the trunk at once, each mask estimator ("head")
when a request first needs it; `Roformer.forward(audio, heads)` computes only the heads it is given.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch
import yaml
from torch import nn

from ...audio.samplerate import SAMPLE_RATE
from ...errors import SettingsError, WeightsError
from .bs_roformer import BSRoformer


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads `!!python/tuple` sequences, as lists: MSST writes its configs with
    that tag (yaml.dump of tuples). Every other Python tag is refused, as by yaml.safe_load."""


ConfigLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node, deep=True)
)


def load_config(path: str | Path) -> dict:
    """Read a model config: ours, or MSST's as published (`!!python/tuple` read as a list).

    The sections this project reads are filled from MSST's where a config has only those (set ones are
    kept): `stems`, the model's outputs in head order, from `training` (the `target_instrument` where set,
    else the `instruments`, as MSST's inference names them); `inference.chunk_samples` and
    `inference.overlap_samples` from MSST's `chunk_size` (of `inference`, else of `audio`) and
    `num_overlap` (a chunk starts every chunk_size // num_overlap samples, as in MSST's demix).
    SettingsError where the stems do not match `model.num_stems` or the config's sample rate is not the
    project's (SAMPLE_RATE).
    """
    with open(path) as f:
        config = yaml.load(f, Loader=ConfigLoader)  # a SafeLoader: no Python objects
    training, audio = config.get("training", {}), config.get("audio", {})
    inference = config.setdefault("inference", {})
    if "stems" not in config and training:
        target = training.get("target_instrument")
        config["stems"] = [target] if target else list(training["instruments"])
    stems, num_stems = config.get("stems", []), config["model"].get("num_stems", 1)
    if len(stems) != num_stems:
        raise SettingsError(f"{path}: the config names {len(stems)} stems {stems}, its model has {num_stems}")
    if "chunk_samples" not in inference and "num_overlap" in inference:
        chunk = inference.get("chunk_size", audio.get("chunk_size"))
        if chunk is None:
            raise SettingsError(
                f"{path}: inference.num_overlap is set, but no chunk_size in inference or audio"
            )
        inference["chunk_samples"] = chunk
        inference["overlap_samples"] = chunk - chunk // inference["num_overlap"]
    for section in ("audio", "model"):
        rate = config.get(section, {}).get("sample_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise SettingsError(
                f"{path}: {section}.sample_rate is {rate}; this project runs at {SAMPLE_RATE} Hz"
            )
    return config


def read_state_dict(checkpoint_path: str | Path) -> dict[str, torch.Tensor]:
    """Memory-map a checkpoint's tensors (CPU, no copy) and unwrap a training wrapper if present."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise WeightsError(f"checkpoint file missing: {path}")
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{path} is not a PyTorch checkpoint, or it is truncated (no zip directory found)")
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # torch raises several types for damaged archives and pickles
        raise WeightsError(f"{path} cannot be read as a PyTorch checkpoint: {error}") from error
    for wrapper in ("state_dict", "state", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict of tensors")
    return state


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Raise WeightsError listing missing keys, unexpected keys and shape mismatches."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)}, model {expected[key]}"
        for key in expected.keys() & state.keys()
        if tuple(state[key].shape) != expected[key]
    )
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match the model config:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
                lines.append(f"  {len(items)} {title} keys: {shown}")
        raise WeightsError("\n".join(lines))


def split_heads(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
    """Split a state_dict into the trunk's entries and each mask estimator's: (trunk, {head: entries})."""
    trunk: dict[str, torch.Tensor] = {}
    heads: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = re.match(r"mask_estimators\.(\d+)\.", key)
        (heads.setdefault(int(match[1]), {}) if match else trunk)[key] = tensor
    return trunk, heads


class RoformerCheckpoint:
    """A RoFormer (`network`: a family member's class, BSRoformer or MelBandRoformer) of a config's `model`
    section, filled from a memory-mapped checkpoint: the trunk at once, heads on first use.

    The model is built on the meta device and the checkpoint's full key listing is checked against
    it strictly, the heads not loaded included. Then the trunk and the requested mask estimators
    ("heads"; None: all) are copied to `device` as float32, which is exact for the float16 and
    float32 checkpoints. The other heads stay on `meta`, and their tensors stay unread in the
    file mapping until `ensure_heads` asks for them. The trunk includes the rotary `freqs`: they
    come from the checkpoint (float16-rounded in Mega-53), never recomputed.
    """

    def __init__(
        self,
        model_config: dict,
        checkpoint_path: str | Path,
        device: str | torch.device = "cpu",
        heads: Iterable[int] | None = None,
        network: type[nn.Module] = BSRoformer,
    ):
        with torch.device("meta"):
            self.model = network(**model_config).eval()
        state = read_state_dict(checkpoint_path)
        check_state_dict(self.model, state, checkpoint_path)
        self.device = torch.device(device)
        trunk, self._unloaded = split_heads(state)  # _unloaded: head -> its memory-mapped tensors
        self._assign(trunk)
        self.ensure_heads(range(self.model.num_stems) if heads is None else heads)

    def ensure_heads(self, heads: Iterable[int]) -> None:
        """Copy these mask estimators to the device, unless they are there already."""
        for head in heads:
            if not 0 <= head < self.model.num_stems:
                raise IndexError(f"head {head} out of range: the model has {self.model.num_stems}")
            self._assign(self._unloaded.pop(head, {}))

    def _assign(self, tensors: dict[str, torch.Tensor]) -> None:
        """Make checkpoint tensors the model's parameters, as float32 on the device (no copy where they are).

        Set one by one: load_state_dict would walk every module, the meta heads' too, on each call.
        """
        for key, tensor in tensors.items():
            module_name, _, name = key.rpartition(".")
            module = self.model.get_submodule(module_name)
            requires_grad = getattr(module, name).requires_grad
            setattr(module, name, nn.Parameter(tensor.to(self.device, torch.float32), requires_grad))
