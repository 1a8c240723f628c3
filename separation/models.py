"""The plan's model types as the pipeline uses them: loading each, and separating a mix with it.

Every model answers `separate(mix, wanted, settings, progress, on_final)` with its whole wanted stems,
{stem: float32 [2, samples] CPU}. A BS-RoFormer also hands each span of its stems to `on_final` as soon as
it is final, so the stem writer can encode it while the model runs; Demucs gives whole stems only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .chunking import separate_chunked
from .demucs_apply import DemucsSeparator
from .errors import non_finite_output_error
from .plan import DemucsSpec, ModelSpec, RoformerSpec
from .roformer_checkpoint import RoformerCheckpoint, load_config
from .settings import SeparationSettings

ProgressCallback = Callable[[int, int], None]  # (work done, work in total)
FinalStems = Callable[[int, dict[str, torch.Tensor]], None]  # (first sample, {stem: final [2, n] span})


class RoformerModel:
    """A BS-RoFormer checkpoint run in overlapping chunks; its config names its stems (one per mask head).

    A single-stem checkpoint loads whole. A multi-stem one loads its trunk here and each mask head when a
    request first asks for its stem (then keeps it); a request computes only the heads it asks for.
    """

    def __init__(self, spec: RoformerSpec, weights_dir: Path, device: torch.device):
        self.spec, self.device = spec, device
        self.inference: dict = load_config(spec.config)["inference"]
        heads = None if len(spec.stems) == 1 else []
        self.checkpoint = RoformerCheckpoint(spec.config, Path(weights_dir) / spec.checkpoint, device, heads)
        self.model = self.checkpoint.model

    def chunking(self, settings: SeparationSettings) -> tuple[int, int]:
        """(chunk_samples, overlap_samples): the request's for `chunking: request`, else the config's."""
        if self.spec.chunking == "request":
            return settings.chunk_samples, settings.overlap_samples
        return self.inference["chunk_samples"], self.inference["overlap_samples"]

    def separate(
        self,
        mix: torch.Tensor,
        wanted: Sequence[str],
        settings: SeparationSettings,
        progress: ProgressCallback,
        on_final: FinalStems,
    ) -> dict[str, torch.Tensor]:
        """mix: [2, samples] CPU float32 -> {stem: [2, samples]} for the wanted stems, computing only their
        mask heads."""
        heads = [self.spec.stems.index(stem) for stem in wanted]
        self.checkpoint.ensure_heads(heads)

        def final_stems(first_sample: int, block: torch.Tensor) -> None:  # block: [wanted, 2, n]
            if not torch.isfinite(block).all():  # stop at the first bad span, not after the whole track
                raise non_finite_output_error(self.spec.name)
            on_final(first_sample, dict(zip(wanted, block, strict=True)))

        chunk_samples, overlap_samples = self.chunking(settings)
        estimates = separate_chunked(  # [wanted, 2, samples]
            functools.partial(self.model, heads=heads),
            mix,
            self.device,
            chunk_samples,
            overlap_samples,
            settings.batch_size or self.inference["batch_size"],
            settings.precision,
            progress,
            on_final=final_stems,
        )
        return dict(zip(wanted, estimates, strict=True))


class DemucsModel:
    """One Demucs bag, applied the way the Demucs API applies it."""

    def __init__(self, spec: DemucsSpec, weights_dir: Path, device: torch.device):
        self.spec = spec
        self.separator = DemucsSeparator(Path(weights_dir) / spec.folder, device)
        self.separator.preload(spec.bag)

    def separate(
        self,
        mix: torch.Tensor,
        wanted: Sequence[str],
        settings: SeparationSettings,
        progress: ProgressCallback,
        on_final: FinalStems,
    ) -> dict[str, torch.Tensor]:
        """mix: [2, samples] CPU float32 -> {stem: [2, samples]}; whole stems only (on_final is unused)."""
        batch_size = settings.batch_size or self.spec.batch_size
        return self.separator.separate(self.spec.bag, mix, wanted, progress, batch_size)


Model = RoformerModel | DemucsModel
MODEL_CLASSES: dict[type[ModelSpec], type[Model]] = {RoformerSpec: RoformerModel, DemucsSpec: DemucsModel}
