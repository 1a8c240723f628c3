"""The `demucs` model type: a Demucs v4 bag (htdemucs_ft, htdemucs_6s) by name from a weights subfolder.

Plan entry keys: `bag` (its name), `folder` (relative to the weights folder), `sources` (the bag's sources
in its order: what the plan may ask of it, checked against the bag when it loads), `load`, `batch_size`
(segments per forward pass, unless the request sets one), and `shifts`, `overlap_fraction` and `seed`:
apply_model's `shifts` and `overlap` (a fraction of a segment; demucs.api's defaults 1 and 0.25), and
the seed of the shift offsets, which makes them repeatable. Every value is checked when the plan loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ...errors import SettingsError
from ..base import ModelSpec, check_batch_size
from .apply import DemucsModel
from .bag import bag_files


@dataclass(frozen=True, kw_only=True)
class DemucsSpec(ModelSpec):
    """Bag `bag` in the weights subfolder `folder`, giving `sources`."""

    type_name: ClassVar[str] = "demucs"

    bag: str
    folder: str
    sources: tuple[str, ...]
    batch_size: int = 1
    shifts: int = 1
    overlap_fraction: float = 0.25
    seed: int = 0

    @classmethod
    def parse_entry(cls, name: str, entry: dict[str, Any], plan_dir: Path) -> dict[str, Any]:
        where = f"model {name!r}"
        sources = entry.get("sources")
        if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
            raise SettingsError(f"{where}: sources must list the bag's sources in its order, got {sources!r}")
        entry["sources"] = tuple(sources)
        check_batch_size(entry.get("batch_size", 1), where)
        shifts, overlap, seed = (
            entry.get("shifts", 1),
            entry.get("overlap_fraction", 0.25),
            entry.get("seed", 0),
        )
        if isinstance(shifts, bool) or not isinstance(shifts, int) or shifts < 0:
            raise SettingsError(f"{where}: shifts must be an integer >= 0, got {shifts!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0 <= overlap < 1:
            raise SettingsError(
                f"{where}: overlap_fraction must be a number from 0 to below 1, got {overlap!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SettingsError(f"{where}: seed must be an integer, got {seed!r}")
        return entry

    def stem_names(self) -> tuple[str, ...]:
        return self.sources

    def weight_files(self, weights_dir: Path) -> list[str]:
        return [str(path.relative_to(weights_dir)) for path in bag_files(self.bag, weights_dir / self.folder)]

    def build(self, weights_dir: Path, device: torch.device) -> DemucsModel:
        return DemucsModel(
            self.name,
            Path(weights_dir) / self.folder,
            self.bag,
            self.sources,
            device,
            shifts=self.shifts,
            overlap_fraction=self.overlap_fraction,
            seed=self.seed,
            batch_size=self.batch_size,
        )
