"""The `bs_roformer` and `mel_band_roformer` model types: a RoFormer checkpoint and its config, run in
overlapping chunks. The two types differ only in the network class they build (`network`).

Plan entry keys: `config` (relative to the plan's folder; read once, here), `checkpoint` (relative to the
weights folder), `load`, and `chunking`: `request` runs at the request's chunk_size / overlap, `config` at
the config's `inference` section (chunk_samples, overlap_samples). The batch size comes from the request,
else from the config's `inference.batch_size`. The config's `stems` name the mask heads in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ...audio.samplerate import SAMPLE_RATE
from ...errors import SettingsError
from ..base import ModelSpec, Progress, RunOptions, StemSpan, check_batch_size
from ..chunking import check_chunking, separate_chunked
from .bs_roformer import BSRoformer
from .checkpoint import RoformerCheckpoint, load_config
from .mel_band_roformer import MelBandRoformer
from .memory import MAX_FORWARD_BYTES, forward_bytes

CHUNKINGS = ("request", "config")  # whose chunk length and overlap the model runs at


@dataclass(frozen=True, kw_only=True)
class RoformerSpec(ModelSpec):
    """config: the config file; checkpoint: its file name in the weights folder; settings: the config's
    sections (model, inference, stems), read once when the plan loads."""

    type_name: ClassVar[str] = "bs_roformer"
    network: ClassVar[type[nn.Module]] = BSRoformer  # the family member the config's `model` builds

    config: Path
    checkpoint: str
    chunking: str = "config"
    settings: dict[str, Any]

    @classmethod
    def parse_entry(cls, name: str, entry: dict[str, Any], plan_dir: Path) -> dict[str, Any]:
        chunking = entry.get("chunking", cls.chunking)
        if chunking not in CHUNKINGS:
            raise SettingsError(
                f"model {name!r}: chunking must be one of {', '.join(CHUNKINGS)}, not {chunking!r}"
            )
        entry["config"] = plan_dir / entry["config"]
        entry["settings"] = settings = load_config(entry["config"])
        inference = settings.get("inference", {})
        where = f"model {name!r}, `inference` of {entry['config']}"
        if chunking == "config":
            try:
                check_chunking(inference.get("chunk_samples", 0), inference.get("overlap_samples", 0))
            except SettingsError as error:
                raise SettingsError(f"{where}: {error}") from None
        check_batch_size(inference.get("batch_size"), where)
        return entry

    def stem_names(self) -> tuple[str, ...]:
        return tuple(self.settings["stems"])

    def weight_files(self, weights_dir: Path) -> list[str]:
        return [self.checkpoint]

    def chunking_samples(self, options: RunOptions) -> tuple[int, int]:
        """(chunk_samples, overlap_samples) this model runs a request at."""
        if self.chunking == "request":
            return options.chunk_samples, options.overlap_samples
        inference = self.settings["inference"]
        return inference["chunk_samples"], inference["overlap_samples"]

    def batch_size(self, options: RunOptions) -> int:
        """Chunks per forward pass: the request's, else the config's."""
        return options.batch_size or self.settings["inference"]["batch_size"]

    def check_request(self, stem_names: Sequence[str], options: RunOptions) -> None:
        """SettingsError where one forward pass at the request's chunk and batch size would allocate more
        than MAX_FORWARD_BYTES (estimated in fp32, the larger precision), naming a batch size that fits."""
        chunk_samples, _ = self.chunking_samples(options)
        batch_size = self.batch_size(options)
        model = _meta_model(self.network, self.config, self.settings["model"])

        def bytes_at(batch: int) -> int:
            return forward_bytes(model, batch, chunk_samples, len(stem_names), torch.float32, "cuda")

        if bytes_at(batch_size) <= MAX_FORWARD_BYTES:
            return
        fitting = [batch for batch in range(batch_size - 1, 0, -1) if bytes_at(batch) <= MAX_FORWARD_BYTES]
        advice = f"batch_size {fitting[0]} fits" if fitting else "a shorter chunk_size is needed"
        raise SettingsError(
            f"{self.name}: chunks of {chunk_samples / SAMPLE_RATE:g} s in batches of {batch_size} need about "
            f"{bytes_at(batch_size) / 2**30:.1f} GiB in one forward pass; the limit is "
            f"{MAX_FORWARD_BYTES / 2**30:g} GiB ({advice})"
        )

    def build(self, weights_dir: Path, device: torch.device) -> RoformerModel:
        return RoformerModel(self, weights_dir, device)


class RoformerModel:
    """A loaded RoFormer (the spec's network). A single-stem checkpoint loads whole; a multi-stem one loads
    its trunk here and each mask head when a request first asks for its stem (then keeps it). A request
    computes only the heads it asks for."""

    def __init__(self, spec: RoformerSpec, weights_dir: Path, device: torch.device):
        self.spec, self.device = spec, device
        heads = None if len(spec.stem_names()) == 1 else []
        self.checkpoint = RoformerCheckpoint(
            spec.settings["model"], Path(weights_dir) / spec.checkpoint, device, heads, spec.network
        )

    def separate(
        self, mix: torch.Tensor, stem_names: Sequence[str], options: RunOptions
    ) -> Iterator[Progress | StemSpan]:
        """mix: float32 [2, samples] CPU -> spans of the wanted stems, computing only their mask heads."""
        heads = [self.spec.stem_names().index(stem) for stem in stem_names]
        self.checkpoint.ensure_heads(heads)
        chunk_samples, overlap_samples = self.spec.chunking_samples(options)
        for event in separate_chunked(
            partial(self.checkpoint.model, heads=heads),
            mix,
            self.device,
            chunk_samples,
            overlap_samples,
            self.spec.batch_size(options),
            options.precision,
        ):
            if isinstance(event, Progress):
                yield event
            else:  # event.block: [stems, 2, n]
                yield StemSpan(event.first_sample, dict(zip(stem_names, event.block, strict=True)))


@dataclass(frozen=True, kw_only=True)
class MelBandRoformerSpec(RoformerSpec):
    """A Mel-Band RoFormer checkpoint and its config: everything as `bs_roformer` but the network."""

    type_name: ClassVar[str] = "mel_band_roformer"
    network: ClassVar[type[nn.Module]] = MelBandRoformer


_META_MODELS: dict[tuple[type, Path], nn.Module] = {}  # (network, config) -> its model on the meta device


def _meta_model(network: type[nn.Module], config: Path, model_settings: dict) -> nn.Module:
    """The model of a config's `model` section on the meta device (no memory), for the geometry of one
    forward pass: built once per config, with one mask head (every head has the same geometry, and
    `forward_bytes` takes the number of heads; Mega-53's 53 took about 3 s to build)."""
    if (network, config) not in _META_MODELS:
        with torch.device("meta"):
            _META_MODELS[network, config] = network(**{**model_settings, "num_stems": 1})
    return _META_MODELS[network, config]
