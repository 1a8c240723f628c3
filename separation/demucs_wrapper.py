"""Demucs v4 bags (htdemucs_ft, htdemucs_6s): offline loading, and separation exactly as demucs.api does it.

Loading goes through `demucs.pretrained.get_model(name, repo=bag_dir)`, which reads `<name>.yaml` and the
`<sig>-<sha256 prefix>.th` files of one local folder and never touches the network.

Separation follows `demucs.api.Separator.separate_tensor`: the track is normalised by the mean and standard
deviation of its channel average, run through `demucs.apply.apply_model` (shift trick, overlapping segments),
and scaled back. Python's `random`, which Demucs uses for the shift offsets (and which every HTDemucs forward
pass also draws from), is seeded once at the start of every call and restored afterwards, so the same request
gives the same output, equal to `Separator` run after `random.seed(seed)`.

Sub-models of a bag whose weights are zero for every requested source are not run (htdemucs_ft is four
specialists; when vocals come from elsewhere, the vocals specialist is skipped). The others run in bag
order, exactly as in a full-bag run, so whenever the skipped sub-models all come after the kept ones (the
vocals specialist is last) or shifts=0, every returned sample equals the full bag's. Otherwise the kept
sub-models get other (still seeded) shift offsets than they would in a full-bag run.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from demucs.apply import BagOfModels, apply_model
from demucs.pretrained import REMOTE_ROOT, get_model
from demucs.repo import check_checksum
from demucs.states import load_model

from separation.errors import AudioError, SettingsError, WeightsError

FETCH_COMMAND = "python -m separation.weights fetch"
SHIFT_RANGE_SECONDS = 0.5  # apply_model shifts the track by a random offset in [0, 0.5 s] per shift
NORMALISATION_EPSILON = 1e-8  # added to the standard deviation, as in demucs.api

ProgressCallback = Callable[[int, int], None]


def _weights_error(problem: str) -> WeightsError:
    """A WeightsError whose message ends with the command that fetches the weights."""
    return WeightsError(f"{problem}. Fetch the weights with `{FETCH_COMMAND}`.")


def _read_signatures(yaml_path: Path) -> list[str]:
    """The `models` list (8-hex-digit signatures) of a Demucs bag yaml."""
    try:
        bag = yaml.safe_load(yaml_path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _weights_error(f"the Demucs bag file {yaml_path} cannot be read ({exc})") from exc
    signatures = bag.get("models") if isinstance(bag, dict) else None
    if not isinstance(signatures, list) or not signatures or not all(isinstance(s, str) for s in signatures):
        raise _weights_error(
            f"the Demucs bag file {yaml_path} has no list of model signatures under `models`"
        )
    return signatures


def _signature_files(bag_dir: Path, sig: str) -> list[Path]:
    """The `.th` files demucs' LocalRepo would take for `sig`: `<sig>.th` or `<sig>-<checksum>.th`."""
    return sorted(
        path
        for path in bag_dir.iterdir()
        if path.suffix == ".th" and (path.stem == sig or path.stem.rsplit("-", 1)[0] == sig)
    )


def check_bag_files(name: str, bag_dir: Path) -> None:
    """Raise WeightsError naming every file bag `name` lacks in `bag_dir`, with the fetch command.

    Checked: `<name>.yaml`, and for each signature it lists exactly one `<sig>-*.th` or `<sig>.th`. When the
    yaml itself is missing, the signatures come from demucs' packaged copy of it (same bytes) if there is one.
    Contents are not read here; `load_bag` checks them.
    """
    bag_dir = Path(bag_dir)
    if not bag_dir.is_dir():
        raise _weights_error(f"the Demucs weights folder {bag_dir} does not exist")
    yaml_path = bag_dir / f"{name}.yaml"
    problems = []
    if yaml_path.is_file():
        signatures = _read_signatures(yaml_path)
    else:
        problems.append(f"missing {yaml_path.name}")
        packaged_yaml = REMOTE_ROOT / f"{name}.yaml"
        signatures = _read_signatures(packaged_yaml) if packaged_yaml.is_file() else []
    for sig in signatures:
        files = _signature_files(bag_dir, sig)
        if not files:
            problems.append(f"missing {sig}-*.th (or {sig}.th)")
        elif len(files) > 1:
            problems.append(
                f"several files for signature {sig} ({', '.join(f.name for f in files)}); keep one"
            )
    if problems:
        raise _weights_error(f"Demucs bag '{name}' is incomplete in {bag_dir}: {'; '.join(problems)}")


def _find_unloadable_file(name: str, bag_dir: Path) -> tuple[Path, Exception] | None:
    """After a failed load: the first model file of the bag that fails its checksum or does not load."""
    for sig in _read_signatures(bag_dir / f"{name}.yaml"):
        (path,) = _signature_files(bag_dir, sig)
        try:
            if "-" in path.stem:
                check_checksum(path, path.stem.rsplit("-", 1)[1])
            load_model(path)
        except Exception as exc:
            return path, exc
    return None


def load_bag(name: str, bag_dir: Path, device: torch.device | str) -> BagOfModels:
    """Load bag `name` from the local folder `bag_dir` only, move it to `device` and set eval mode.

    A missing, corrupt or tampered file (a checksum that does not match the file name, an unpicklable file,
    a state that does not fit the model) raises WeightsError naming the file and the fetch command.
    """
    bag_dir = Path(bag_dir)
    check_bag_files(name, bag_dir)
    try:
        bag = get_model(name, repo=bag_dir)
    except Exception as exc:
        culprit = _find_unloadable_file(name, bag_dir)
        if culprit is None:
            raise _weights_error(f"Demucs bag '{name}' in {bag_dir} cannot be loaded ({exc})") from exc
        path, cause = culprit
        raise _weights_error(f"the Demucs weight file {path} is corrupt or was altered ({cause})") from exc
    return bag.to(device).eval()


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


def _max_forward_passes(
    model: torch.nn.Module, samples: int, shifts: int, split: bool, overlap: float
) -> int:
    """The most segments apply_model can run through `model` for a track of `samples` samples.

    Each shift pads the track by up to `_max_shift_samples` (the random offset decides how much), which can
    add one segment; the bound assumes it always does.
    """
    runs = max(shifts, 1)
    if not split:
        return runs
    longest_samples = samples + (_max_shift_samples(model) if shifts else 0)
    segment_samples = _segment_samples(model)
    stride_samples = int((1 - overlap) * segment_samples)
    if stride_samples < 1:
        raise SettingsError(f"overlap={overlap} leaves no stride between {segment_samples}-sample segments")
    return runs * len(range(0, longest_samples, stride_samples))


def _check_settings(shifts: int, overlap: float, split: bool, seed: int) -> None:
    """SettingsError naming the first unusable value."""
    if isinstance(shifts, bool) or not isinstance(shifts, int) or shifts < 0:
        raise SettingsError(f"shifts must be an integer >= 0, got {shifts!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise SettingsError(f"overlap must be a number in [0, 1), got {overlap!r}")
    if not isinstance(split, bool):
        raise SettingsError(f"split must be True or False, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SettingsError(f"seed must be an integer, got {seed!r}")


def _check_mix(mix: object, channels: int) -> None:
    """AudioError unless `mix` is a finite float32 tensor [channels, samples] with at least 2 samples."""
    if not isinstance(mix, torch.Tensor) or mix.dim() != 2 or mix.shape[0] != channels:
        shape = tuple(mix.shape) if isinstance(mix, torch.Tensor) else type(mix).__name__
        raise AudioError(f"Demucs needs a [{channels}, samples] tensor, got {shape}")
    if mix.dtype != torch.float32:
        raise AudioError(f"Demucs needs float32 audio, got {mix.dtype}")
    if mix.shape[1] < 2:
        raise AudioError(f"the audio has {mix.shape[1]} sample(s); Demucs needs at least 2")
    if not torch.isfinite(mix).all():
        raise AudioError("the audio contains NaN or infinite samples")


class DemucsSeparator:
    """Holds loaded bags by name; loads a bag on first use and then keeps it (lazy).

    `shifts`, `overlap` and `split` mean what `demucs.apply.apply_model`'s arguments mean; `seed` seeds the
    shift offsets so the same request gives the same output. Bags are kept on `device`; the track and the
    outputs stay in host memory, and only segments go to the device.
    """

    def __init__(
        self,
        bag_dir: Path,
        device: torch.device | str,
        *,
        shifts: int = 1,
        overlap: float = 0.25,
        split: bool = True,
        seed: int = 0,
    ) -> None:
        _check_settings(shifts, overlap, split, seed)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise SettingsError(f"unknown device {device!r}") from exc
        self.bag_dir = Path(bag_dir)
        self.shifts = shifts
        self.overlap = float(overlap)
        self.split = split
        self.seed = seed
        self._bags: dict[str, BagOfModels] = {}
        # Loading and the seeded use of the process-wide `random` must not interleave between threads.
        self._lock = threading.RLock()

    def _bag(self, name: str) -> BagOfModels:
        """The loaded bag `name`, loading it on first use."""
        with self._lock:
            if name not in self._bags:
                self._bags[name] = load_bag(name, self.bag_dir, self.device)
            return self._bags[name]

    def preload(self, name: str) -> None:
        """Load bag `name` now (a no-op if it is already loaded)."""
        self._bag(name)

    def sources(self, name: str) -> list[str]:
        """Source names of bag `name`, in output order (loads the bag)."""
        return list(self._bag(name).sources)

    def _source_indices(self, bag: BagOfModels, name: str, wanted: Sequence[str]) -> list[int]:
        """Indices into `bag.sources` of the wanted sources, in request order, without repeats."""
        if isinstance(wanted, str) or not wanted:
            raise SettingsError(f"ask for a non-empty list of sources of '{name}': {', '.join(bag.sources)}")
        unknown = [source for source in wanted if source not in bag.sources]
        if unknown:
            raise SettingsError(
                f"'{name}' has no source {', '.join(map(repr, unknown))}; it has {', '.join(bag.sources)}"
            )
        indices = [bag.sources.index(source) for source in dict.fromkeys(wanted)]
        for k in indices:
            if all(weights[k] == 0 for weights in bag.weights):
                raise WeightsError(f"bag '{name}' gives source {bag.sources[k]} weight 0 in every model")
        return indices

    def _check_unsplit_length(self, bag: BagOfModels, samples: int) -> None:
        """With split=False every model sees the whole (shifted) track at once: it must fit one segment."""
        for model in bag.models:
            longest_samples = samples + (_max_shift_samples(model) if self.shifts else 0)
            if longest_samples > _segment_samples(model):
                raise SettingsError(
                    f"split=False runs the whole track through the model at once, which takes at most "
                    f"{_segment_samples(model)} samples here (shift margin included), not {longest_samples}; "
                    f"use split=True"
                )

    def separate(
        self, name: str, mix: torch.Tensor, wanted: Sequence[str], progress: ProgressCallback | None = None
    ) -> dict[str, torch.Tensor]:
        """Separate `mix` with bag `name` and return the wanted sources only.

        mix: float32 [2, samples] at 44.1 kHz (moved to the CPU if it is elsewhere).
        Returns {source: float32 [2, samples] on the CPU}, in the order of `wanted`.
        progress(done, total) is called after every segment. `total` is fixed up front: the segments of all
        sub-models that run, counting for each shift the segment its random offset may add; where an offset
        spares it, `done` skips ahead when that sub-model finishes, and the last call has done == total.
        Raising from `progress` stops the separation before the next segment.
        """
        bag = self._bag(name)
        source_indices = self._source_indices(bag, name, wanted)
        _check_mix(mix, bag.audio_channels)
        mix = mix.cpu()  # [channels, samples]
        samples = mix.shape[1]
        if not self.split:
            self._check_unsplit_length(bag, samples)

        reference = mix.mean(0)  # [samples]
        mean = reference.mean()
        scale = reference.std() + NORMALISATION_EPSILON
        normalised = ((mix - mean) / scale)[None]  # [1, channels, samples]
        with self._lock, _seeded_python_random(self.seed):
            estimates = self._apply_bag(bag, normalised, source_indices, progress)
        estimates = estimates * scale + mean  # [1, wanted, channels, samples]
        return {bag.sources[k]: estimates[0, j] for j, k in enumerate(source_indices)}

    def _apply_bag(
        self,
        bag: BagOfModels,
        mix: torch.Tensor,
        source_indices: list[int],
        progress: ProgressCallback | None,
    ) -> torch.Tensor:
        """apply_model on the sub-models that contribute to the wanted sources, combined as BagOfModels does.

        mix: [1, channels, samples] on the CPU, already normalised. Returns the weighted average over the
        contributing sub-models, [1, len(source_indices), channels, samples] on the CPU. Expects `random`
        freshly seeded. Progress counts segments against an upper bound fixed up front, and jumps to each
        sub-model's full share when that sub-model finishes.
        """
        run_indices = [
            i for i, weights in enumerate(bag.weights) if any(weights[k] != 0 for k in source_indices)
        ]
        samples = mix.shape[-1]
        model_passes = [
            _max_forward_passes(bag.models[i], samples, self.shifts, self.split, self.overlap)
            for i in run_indices
        ]
        total_passes, done_passes = sum(model_passes), 0

        def report(done: int) -> None:
            nonlocal done_passes
            done_passes = done
            if progress is not None:
                progress(done_passes, total_passes)

        def on_segment(event: dict) -> None:
            if event["state"] == "end":
                report(done_passes + 1)

        wanted_weights = torch.tensor([[weights[k] for k in source_indices] for weights in bag.weights])
        estimates = torch.zeros(1, len(source_indices), *mix.shape[1:])  # [1, wanted, channels, samples]
        finished_passes = 0
        for model_index, passes in zip(run_indices, model_passes, strict=True):
            out = apply_model(
                bag.models[model_index],
                mix,
                shifts=self.shifts,
                split=self.split,
                overlap=self.overlap,
                device=self.device,
                callback=on_segment,
            )  # [1, sources, channels, samples]
            estimates += out[:, source_indices].cpu() * wanted_weights[model_index][None, :, None, None]
            finished_passes += passes
            if done_passes < finished_passes:  # a shift offset spared a segment of the bound
                report(finished_passes)
        return estimates / wanted_weights[run_indices].sum(0)[None, :, None, None]
