"""The `demucs` model type: a Demucs v4 bag (htdemucs_ft, htdemucs_6s) by name from a weights subfolder.

Plan entry keys: `bag` (its name), `folder` (relative to the weights folder), `load`, `batch_size`
(segments per forward pass, unless the request sets one), and `shifts`, `overlap`, `seed` as
`demucs.api` takes them (its defaults: 1, 0.25; the seed makes the shift offsets repeatable).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ...request import SeparationSettings
from ..base import ModelSpec, Progress, StemSpan
from .apply import DemucsSeparator
from .bag import bag_files


@dataclass(frozen=True, kw_only=True)
class DemucsSpec(ModelSpec):
    """Bag `bag` in the weights subfolder `folder`."""

    type_name: ClassVar[str] = "demucs"

    bag: str
    folder: str
    batch_size: int = 1
    shifts: int = 1
    overlap: float = 0.25
    seed: int = 0

    def weight_files(self, weights_dir: Path) -> list[str]:
        return [str(path.relative_to(weights_dir)) for path in bag_files(self.bag, weights_dir / self.folder)]

    def build(self, weights_dir: Path, device: torch.device) -> DemucsModel:
        return DemucsModel(self, weights_dir, device)


class DemucsModel:
    """A loaded Demucs bag."""

    def __init__(self, spec: DemucsSpec, weights_dir: Path, device: torch.device):
        self.spec = spec
        self.separator = DemucsSeparator(
            Path(weights_dir) / spec.folder,
            spec.bag,
            device,
            shifts=spec.shifts,
            overlap=spec.overlap,
            seed=spec.seed,
        )

    def separate(
        self, mix: torch.Tensor, stems: Sequence[str], settings: SeparationSettings
    ) -> Iterator[Progress | StemSpan]:
        """mix: float32 [2, samples] CPU -> each wanted stem whole, as soon as it is final."""
        return self.separator.separate(mix, stems, settings.batch_size or self.spec.batch_size)
