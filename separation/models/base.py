"""What every model type provides: a spec parsed from the stem plan, and a loaded model that yields stems.

A model type is a `ModelSpec` subclass (registered in `registry.py` under the plan's `type:` name) whose
`build` returns an object with the `LoadedModel` interface. Its `separate` is a generator: it yields
`Progress` as work finishes and `StemSpan`s as parts of its stems become final, in track order, each sample
of each stem exactly once (a chunked model yields many spans, a whole-track model such as Demucs one per
stem or group of stems). The pipeline hands spans to the stem writer and progress to the reporter; models
never call back up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch

from ..errors import SettingsError

LOAD_TIMES = ("setup", "lazy")  # setup: when the server starts; lazy: on first use, then kept


@dataclass(frozen=True)
class RunOptions:
    """What a request sets for the models it runs (`Request.run_options`).

    chunk_samples, overlap_samples: the chunking of a model that runs at the request's (samples at
    SAMPLE_RATE); batch_size: chunks or segments per forward pass, None for each model's own; precision:
    one of `chunking.PRECISIONS`.
    """

    chunk_samples: int
    overlap_samples: int
    batch_size: int | None
    precision: str


def check_batch_size(batch_size: object, where: str) -> None:
    """SettingsError unless batch_size is an integer >= 1 (chunks or segments per forward pass)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SettingsError(f"{where}: batch_size must be an integer >= 1, got {batch_size!r}")


@dataclass(frozen=True)
class Progress:
    """`done` of `total` work units (chunks, segments) of the running model are finished."""

    done: int
    total: int


@dataclass(frozen=True)
class StemSpan:
    """Samples first_sample .. first_sample + n - 1 of some stems, final: {stem: float32 [2, n] CPU}."""

    first_sample: int
    stems: Mapping[str, torch.Tensor]


class LoadedModel(Protocol):
    """A model of the plan, loaded."""

    def separate(
        self, mix: torch.Tensor, stem_names: Sequence[str], options: RunOptions
    ) -> Iterator[Progress | StemSpan]:
        """mix: float32 [2, samples] CPU at SAMPLE_RATE -> the wanted stems, yielded as spans."""
        ...


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model entry of the stem plan. Subclasses add their own fields (the entry's keys) and behaviour.

    `load`: one of LOAD_TIMES.
    """

    name: str
    load: str = "setup"

    type_name: ClassVar[str]  # the plan's `type:` for this class

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any], plan_dir: Path) -> ModelSpec:
        """The spec of the plan entry `entry` (without its `type`), with paths relative to `plan_dir`;
        SettingsError for an unknown key or a bad value."""
        known = {field.name for field in dataclasses.fields(cls)} - {"name"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise SettingsError(
                f"model {name!r} ({cls.type_name}) has unknown keys {unknown}; it takes {sorted(known)}"
            )
        spec = cls(name=name, **cls.parse_entry(name, dict(entry), plan_dir))
        if spec.load not in LOAD_TIMES:
            raise SettingsError(
                f"model {name!r}: load must be one of {', '.join(LOAD_TIMES)}, not {spec.load!r}"
            )
        return spec

    @classmethod
    def parse_entry(cls, name: str, entry: dict[str, Any], plan_dir: Path) -> dict[str, Any]:
        """The dataclass fields of plan entry `name`: here the entry as it is; subclasses check values,
        resolve paths and read their configs (once). SettingsError for a bad value."""
        return entry

    def stem_names(self) -> tuple[str, ...]:
        """The stems the model gives, known without loading it (the plan checks its modes against them)."""
        raise NotImplementedError

    def weight_files(self, weights_dir: Path) -> list[str]:
        """The files this model loads, relative to the weights folder (a weights manifest lists them)."""
        raise NotImplementedError

    def check_request(self, stem_names: Sequence[str], options: RunOptions) -> None:
        """SettingsError where a request for these stems with these options cannot run on this model
        (before any model loads); here nothing to check."""

    def build(self, weights_dir: Path, device: torch.device) -> LoadedModel:
        """Load the model from the weights folder onto `device`."""
        raise NotImplementedError
