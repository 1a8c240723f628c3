"""Applying a Demucs v4 bag (htdemucs_ft, htdemucs_6s) to a track, exactly as demucs.api does it.

Separation follows `demucs.api.Separator.separate_tensor`: the track is normalised by the mean and standard
deviation of its channel average, run through each sub-model the way `demucs.apply.apply_model` runs it
(shift trick, overlapping segments cross-faded by a triangular weight), combined with the bag weights, and
scaled back. The loop is our own so that host memory stays small: each segment is cut from the mix,
normalised and zero-padded on its own (no normalised, padded or shifted copy of the track), only the rows
of the requested sources are kept, and each finished part of a pass is added straight into its source's
output buffer [channels, samples], which is handed over (and can be freed) as soon as the last sub-model that
contributes to it has run: with htdemucs_ft's one specialist per source, one source buffer at a time. The
numbers are apply_model's: every sample is summed, weighted
and divided in the same order. They are bit-identical when each requested source comes from one sub-model
with a bag weight over `shifts` that is a power of two (htdemucs_ft and htdemucs_6s with shifts 0, 1, 2
or 4), and equal up to float rounding otherwise.

Python's `random`, which gives the shift offsets (and which every HTDemucs forward pass also draws from), is
seeded once at the start of every call and restored afterwards, so the same request gives the same output,
equal to `Separator` run after `random.seed(seed)`.

Sub-models of a bag whose weights are zero for every requested source are not run (htdemucs_ft is four
specialists; when vocals come from elsewhere, the vocals specialist is skipped). A skipped sub-model still
draws from `random` what its run would have drawn (its shift offsets and one draw per forward pass), so
the others get the offsets of a full-bag run and every returned sample equals the full bag's, whichever
sub-models are skipped and whatever `shifts` is.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import torch
import torch.nn.functional as F
from demucs.utils import center_trim

from ...errors import AudioError, SettingsError, WeightsError
from ..base import Progress, RunOptions, StemSpan
from .bag import load_bag

SHIFT_RANGE_SECONDS = 0.5  # apply_model shifts the track by a random offset in [0, 0.5 s] per shift
NORMALISATION_EPSILON = 1e-8  # added to the standard deviation, as in demucs.api


@contextmanager
def _seeded_python_random(seed: int) -> Iterator[None]:
    """Seed Python's global `random` for the duration of the block, then put its previous state back."""
    saved_state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved_state)


def _max_shift_samples(model: torch.nn.Module) -> int:
    """The largest shift offset apply_model draws for `model`, in samples."""
    return int(SHIFT_RANGE_SECONDS * model.samplerate)


def _segment_samples(model: torch.nn.Module) -> int:
    """Length of one model segment, in samples."""
    return int(model.samplerate * model.segment)


def _segment_starts(model: torch.nn.Module, piece_samples: int, overlap: float) -> range:
    """Where the forward passes over a `piece_samples`-sample input start."""
    segment_samples = _segment_samples(model)
    stride_samples = int((1 - overlap) * segment_samples)
    if stride_samples < 1:
        raise SettingsError(f"overlap={overlap} leaves no stride between {segment_samples}-sample segments")
    return range(0, piece_samples, stride_samples)


def _max_forward_passes(model: torch.nn.Module, samples: int, shifts: int, overlap: float) -> int:
    """The most segments apply_model can run through `model` for a track of `samples` samples.

    Each shift pads the track by up to `_max_shift_samples` (the random offset decides how much), which can
    add one segment; the bound assumes it always does.
    """
    longest_samples = samples + (_max_shift_samples(model) if shifts else 0)
    return max(shifts, 1) * len(_segment_starts(model, longest_samples, overlap))


def _segment_weight(segment_samples: int, device: torch.device) -> torch.Tensor:
    """apply_model's cross-fade weight (transition_power 1): a triangle peaking at 1 mid-segment.

    Sample i weighs min(i + 1, segment_samples - i), divided by the largest such value. [segment_samples]
    """
    positions = torch.arange(segment_samples, device=device)
    triangle = torch.minimum(positions + 1, segment_samples - positions)
    return triangle / triangle.max()


def _replay_forward_draws(model: torch.nn.Module) -> None:
    """Draw from `random` what one forward pass of `model` draws, without running it.

    An HTDemucs forward pass draws once, in its cross-transformer's sinusoidal time embedding (a random
    position shift, `randrange(sin_random_shift + 1)`, which is 0 for the released models but still moves
    the generator); the embeddings of other kinds and the older Demucs models draw nothing.
    """
    transformer = getattr(model, "crosstransformer", None)
    if transformer is not None and transformer.emb == "sin":
        random.randrange(transformer.sin_random_shift + 1)


@dataclass(frozen=True)
class _NormalisedTrack:
    """The mix as demucs.api hands it to apply_model, (mix - mean) / scale, normalised only where it is read.

    mean and scale are demucs.api's: the mean and the standard deviation (+ epsilon) of the channel average.
    Reading a window at a time keeps the normalised copy of the whole track out of memory.
    """

    mix: torch.Tensor  # [channels, samples] on the CPU
    mean: torch.Tensor  # 0-dim
    scale: torch.Tensor  # 0-dim

    @classmethod
    def of(cls, mix: torch.Tensor) -> _NormalisedTrack:
        """The track of mix [channels, samples], with demucs.api's mean and scale."""
        reference = mix.mean(0)  # [samples]
        return cls(mix, reference.mean(), reference.std() + NORMALISATION_EPSILON)

    @property
    def samples(self) -> int:
        """Length of the track, in samples."""
        return self.mix.shape[-1]

    def window(self, start: int, length: int) -> torch.Tensor:
        """Normalised samples [start, start + length), zeros where that lies outside the track (start may be
        negative). The window must overlap the track. Returns [1, channels, length]."""
        first, last = max(start, 0), min(start + length, self.samples)
        inside = (self.mix[:, first:last] - self.mean) / self.scale  # [channels, last - first]
        return F.pad(inside, (first - start, start + length - last))[None]


def _check_mix(mix: object, channels: int) -> None:
    """AudioError unless `mix` is a float32 tensor [channels, samples] with at least 2 samples (decoding
    has checked its samples are finite)."""
    if not isinstance(mix, torch.Tensor) or mix.dim() != 2 or mix.shape[0] != channels:
        shape = tuple(mix.shape) if isinstance(mix, torch.Tensor) else type(mix).__name__
        raise AudioError(f"Demucs needs a [{channels}, samples] tensor, got {shape}")
    if mix.dtype != torch.float32:
        raise AudioError(f"Demucs needs float32 audio, got {mix.dtype}")
    if mix.shape[1] < 2:
        raise AudioError(f"the audio has {mix.shape[1]} sample(s); Demucs needs at least 2")


class DemucsModel:
    """Demucs bag `bag` from the folder `bag_dir`, loaded onto `device`, applied as demucs.api applies it:
    the plan's model `name` (`spec.DemucsSpec` checked every value and builds it).

    `sources`: the bag's sources as the plan names them, checked against the loaded bag. `shifts` and
    `overlap_fraction` mean what `demucs.apply.apply_model`'s `shifts` and `overlap` mean; `seed` seeds the
    shift offsets so the same request gives the same output; `batch_size`: segments per forward pass unless
    the request sets one. The bag stays on `device`; the track and the outputs stay in host memory, and only
    segments go to the device.
    """

    def __init__(
        self,
        name: str,
        bag_dir: Path,
        bag: str,
        sources: Sequence[str],
        device: torch.device,
        *,
        shifts: int,
        overlap_fraction: float,
        seed: int,
        batch_size: int,
    ) -> None:
        self.name, self.bag_name, self.device = name, bag, torch.device(device)
        self.bag = load_bag(bag, Path(bag_dir), self.device)
        if list(self.bag.sources) != list(sources):
            raise WeightsError(
                f"Demucs bag '{bag}' gives {', '.join(self.bag.sources)}; the plan's model {name} says "
                f"{', '.join(sources)}"
            )
        self.shifts, self.overlap, self.seed, self.batch_size = shifts, overlap_fraction, seed, batch_size
        # The seeded use of the process-wide `random` must not interleave between threads.
        self._lock = threading.Lock()

    def separate(
        self, mix: torch.Tensor, stem_names: Sequence[str], options: RunOptions
    ) -> Iterator[Progress | StemSpan]:
        """Separate `mix` with the bag, yielding the wanted sources only (names the plan checked).

        mix: float32 [2, samples] at 44.1 kHz (moved to the CPU if it is elsewhere). Yields `Progress` after
        every segment, and each wanted source as one whole `StemSpan` (float32 [2, samples] on the CPU) as
        soon as no sub-model left to run contributes to it, so its memory can go before the next one's is
        needed. `total` is fixed up front: the segments of all sub-models that run, counting for each shift
        the segment its random offset may add; where an offset spares it, `done` skips ahead when that
        sub-model finishes, and the last Progress has done == total. Closing the generator stops the
        separation before the next forward pass. The batch size (the request's, else the spec's) is how
        many segments of equal length go through the model in one forward pass: it sets speed and device
        memory, not the output (equal to one segment at a time up to float rounding).
        """
        bag = self.bag
        source_indices = [bag.sources.index(source) for source in dict.fromkeys(stem_names)]
        for k in source_indices:
            if all(weights[k] == 0 for weights in bag.weights):
                raise WeightsError(
                    f"bag '{self.bag_name}' gives source {bag.sources[k]} weight 0 in every model"
                )
        _check_mix(mix, bag.audio_channels)
        track = _NormalisedTrack.of(mix.cpu())  # [channels, samples]
        batch_size = options.batch_size or self.batch_size
        with self._lock, _seeded_python_random(self.seed):
            yield from self._apply_bag(track, source_indices, batch_size)

    def _apply_bag(
        self, track: _NormalisedTrack, source_indices: list[int], batch_size: int
    ) -> Iterator[Progress | StemSpan]:
        """The wanted sources as BagOfModels under apply_model gives them, scaled back to the mix, running
        only the sub-models that contribute to them; each source yielded once its last contributor ran.

        Expects `random` freshly seeded. Progress counts segments against an upper bound fixed up front, and
        jumps to each sub-model's full share when that sub-model finishes.
        """
        bag, samples = self.bag, track.samples
        contributors = {  # source -> the sub-models that contribute to it
            k: [i for i, weights in enumerate(bag.weights) if weights[k] != 0] for k in source_indices
        }
        model_passes = {
            i: _max_forward_passes(bag.models[i], samples, self.shifts, self.overlap)
            for i in sorted({i for models in contributors.values() for i in models})
        }
        total_passes, done_passes = sum(model_passes.values()), 0
        estimates: dict[int, torch.Tensor] = {}  # source -> its weighted sum so far, [channels, samples]
        finished_passes = 0
        yield Progress(0, total_passes)
        for model_index, (model, weights) in enumerate(zip(bag.models, bag.weights, strict=True)):
            if model_index not in model_passes:
                self._replay_sub_model_draws(model, samples)
                continue
            rows = [k for k in source_indices if weights[k] != 0]
            for k in rows:
                estimates.setdefault(k, torch.zeros(track.mix.shape))
            scales = [weights[k] / max(self.shifts, 1) for k in rows]
            targets = [estimates[k] for k in rows]
            for _ in self._add_sub_model(model, track, rows, targets, scales, batch_size):
                done_passes += 1
                yield Progress(done_passes, total_passes)
            finished_passes += model_passes[model_index]
            if done_passes < finished_passes:  # a shift offset spared a segment of the bound
                done_passes = finished_passes
                yield Progress(done_passes, total_passes)
            for k in [k for k in source_indices if k in estimates and contributors[k][-1] == model_index]:
                source = estimates.pop(k)  # [channels, samples]
                source /= sum(weights[k] for weights in bag.weights)
                yield StemSpan(0, {bag.sources[k]: source.mul_(track.scale).add_(track.mean)})

    def _shift_leads(self, model: torch.nn.Module) -> Iterator[int]:
        """For each pass of `model` over the track, how many zeros come before it (the shift trick).

        shifts=0: one pass, lead 0. Otherwise `shifts` passes with lead max_shift - offset, each offset
        drawn by `random.randint(0, max_shift)` just before its pass, as apply_model draws them.
        """
        if not self.shifts:
            yield 0
            return
        max_shift = _max_shift_samples(model)
        for _ in range(self.shifts):
            yield max_shift - random.randint(0, max_shift)

    def _replay_sub_model_draws(self, model: torch.nn.Module, samples: int) -> None:
        """Draw from `random` what running `model` over a `samples`-sample track would draw, in the same
        order (shift offsets, then one draw per forward pass), without running it."""
        for lead in self._shift_leads(model):
            for _ in _segment_starts(model, lead + samples, self.overlap):
                _replay_forward_draws(model)

    def _add_sub_model(
        self,
        model: torch.nn.Module,
        track: _NormalisedTrack,
        rows: list[int],
        targets: list[torch.Tensor],
        scales: list[float],
        batch_size: int,
    ) -> Iterator[None]:
        """Add scales[r] x `model`'s estimate of source rows[r] into targets[r] ([channels, samples] on the
        CPU), in place, yielding after each segment.

        Each pass reads the track from `lead` samples before its start (zeros there), and what the pass
        finishes is added at once, less the samples that fall in the lead (apply_model trims them).
        """
        for lead in self._shift_leads(model):
            blocks = self._pass_blocks(model, track, -lead, lead + track.samples, rows, batch_size)
            for first, block in blocks:
                skip = max(0, -first)  # samples of the block that fall in the lead
                end = first + block.shape[-1]
                if skip < block.shape[-1]:
                    for row, (target, scale) in enumerate(zip(targets, scales, strict=True)):
                        target[:, first + skip : end].add_(block[0, row, :, skip:], alpha=scale)
                yield

    def _pass_blocks(
        self,
        model: torch.nn.Module,
        track: _NormalisedTrack,
        start: int,
        samples: int,
        rows: list[int],
        batch_size: int,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """One pass of `model` over track samples [start, start + samples), as apply_model with shifts=0.

        Yields (first, block): block [1, len(rows), channels, n] on the CPU is the finished output for track
        samples [first, first + n); the blocks follow each other and cover the pass. Segment outputs are
        cross-faded in a buffer one segment long; after each segment, the samples no later
        segment reaches are divided by their summed weight and yielded. Segments go to the model
        `batch_size` at a time.
        """
        segment_samples = _segment_samples(model)
        weight = _segment_weight(segment_samples, self.device)  # [segment]
        host_weight = weight.cpu()
        channels = track.mix.shape[0]
        pending = torch.zeros(1, len(rows), channels, segment_samples)  # [1, rows, channels, segment]
        pending_weight = torch.zeros(segment_samples)  # [segment]
        offsets = _segment_starts(model, samples, self.overlap)
        for first in range(0, len(offsets), batch_size):
            batch_offsets = offsets[first : first + batch_size]
            spans = [(start + offset, min(segment_samples, samples - offset)) for offset in batch_offsets]
            outs = self._forward(model, track, spans, rows)  # on the device
            for offset, (_, length), out in zip(batch_offsets, spans, outs, strict=True):
                pending[..., :length] += (weight[:length] * out).cpu()
                pending_weight[:length] += host_weight[:length]
                finished = min(offsets.step, samples - offset)
                yield start + offset, pending[..., :finished] / pending_weight[:finished]
                pending = pending.roll(-finished, -1)
                pending[..., -finished:] = 0
                pending_weight = pending_weight.roll(-finished, -1)
                pending_weight[-finished:] = 0

    def _forward(
        self,
        model: torch.nn.Module,
        track: _NormalisedTrack,
        spans: list[tuple[int, int]],
        rows: list[int],
    ) -> list[torch.Tensor]:
        """`model` on track samples [start, start + samples) of each (start, samples) span, sources `rows`.

        Each input is widened on both sides to the model's valid length (track samples where there are any,
        zeros elsewhere) and its output trimmed back, as apply_model does. Spans of equal valid length
        share one forward pass; `random` still moves as it would over one pass per span. Returns one
        [1, len(rows), channels, samples] tensor per span, on `self.device`.
        """
        outputs: list[torch.Tensor] = []
        for valid_samples, group in groupby(spans, key=lambda span: model.valid_length(span[1])):
            group = list(group)
            segments = [  # [1, channels, valid] each
                track.window(start - (valid_samples - samples) // 2, valid_samples)
                for start, samples in group
            ]
            with torch.no_grad():
                out = model(torch.cat(segments).to(self.device))  # [segments, sources, channels, valid]
            for _ in group[1:]:
                _replay_forward_draws(model)
            for index, (_, samples) in enumerate(group):
                outputs.append(center_trim(out[index : index + 1], samples)[:, rows])
        return outputs
