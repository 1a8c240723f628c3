"""From an audio file to stem files: the stem plan, model loading, and the separation run.

The plan (`configs/stems.yaml`) names the models, how to load them and which stems each one
gives in every `stems` mode; this module only follows it, so a new checkpoint (a Mel-Band
RoFormer, a multi-stem RoFormer) is a config change. `instrumental` is always mix - vocals.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from .audio import SAMPLE_RATE, OutputSettings, StemStream, decode_audio, write_stem
from .chunking import check_batch_size, check_chunking, separate_chunked
from .demucs_wrapper import FETCH_COMMAND, DemucsSeparator, check_bag_files
from .errors import SettingsError, WeightsError
from .roformer import load_bs_roformer, load_config
from .weights import default_weights_dir

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PLAN_FILE_NAME = "stems.yaml"
WRITER_THREADS = 4  # stems encoded at once
FinalStems = Callable[[int, dict[str, torch.Tensor]], None]  # (first sample, {stem: final [2, n] block})


class Reporter:
    """Receives stage timings and progress; the base class ignores them."""

    def stage_started(self, stage: str) -> None:
        """A stage (decode, a model, write) begins."""

    def decoded(self, audio_seconds: float) -> None:
        """The input holds `audio_seconds` of audio."""

    def progress(self, stage: str, done: int, total: int) -> None:
        """`done` of `total` work units of the current stage are finished."""

    def stage_finished(self, stage: str, seconds: float) -> None:
        """A stage ended after `seconds` of wall time."""


@dataclass(frozen=True)
class SeparationSettings:
    """What a request may choose. Seconds are converted to samples at 44.1 kHz."""

    stems: str = "vocals_instrumental"
    chunk_seconds: float = 8.0
    overlap_seconds: float = 4.0
    batch_size: int | None = None  # chunks or segments per forward pass; None: each model's own default
    precision: str = "auto"
    max_duration_seconds: float = 1800.0
    output: OutputSettings = field(default_factory=OutputSettings)

    def __post_init__(self):
        if self.batch_size is not None:
            check_batch_size(self.batch_size)
        if self.overlap_seconds >= self.chunk_seconds:
            raise SettingsError(
                f"overlap ({self.overlap_seconds} s) must be below chunk_size ({self.chunk_seconds} s)"
            )
        check_chunking(self.chunk_samples, self.overlap_samples)

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_seconds * SAMPLE_RATE)

    @property
    def overlap_samples(self) -> int:
        return round(self.overlap_seconds * SAMPLE_RATE)


@dataclass(frozen=True)
class StemPlan:
    """The parsed stem plan. `config_dir` resolves the model config paths."""

    models: dict[str, dict]
    modes: dict[str, dict[str, list[str]]]
    output_order: list[str]
    config_dir: Path

    @classmethod
    def load(cls, path: Path) -> StemPlan:
        with open(path) as f:
            plan = yaml.safe_load(f)
        return cls(plan["models"], plan["modes"], plan["output_order"], path.parent)

    @classmethod
    def for_weights(cls, weights_dir: Path) -> StemPlan:
        """The weights folder's own stems.yaml if it has one, else the project's."""
        own = weights_dir / PLAN_FILE_NAME
        return cls.load(own if own.is_file() else CONFIG_DIR / PLAN_FILE_NAME)

    def stems_of(self, mode: str) -> list[str]:
        """The stems a mode returns, in output order."""
        if mode not in self.modes:
            raise SettingsError(f"unknown stems mode {mode!r}; choose one of {', '.join(self.modes)}")
        stems = {stem for model_stems in self.modes[mode].values() for stem in model_stems}
        if "vocals" in stems:
            stems.add("instrumental")
        return [stem for stem in self.output_order if stem in stems]

    def models_loaded_at(self, when: str) -> list[str]:
        return [name for name, spec in self.models.items() if spec.get("load", "setup") == when]


class RoformerModel:
    """A BS-RoFormer checkpoint run in overlapping chunks; its config names its stems."""

    def __init__(self, spec: dict, plan: StemPlan, weights_dir: Path, device: torch.device):
        config_path = plan.config_dir / spec["config"]
        self.checkpoint_path = weights_dir / spec["checkpoint"]
        config = load_config(config_path)
        self.stems: list[str] = config["stems"]
        self.batch_size: int = config["inference"]["batch_size"]
        self.device = device
        check_checkpoint_file(self.checkpoint_path)
        self.model = load_bs_roformer(config_path, self.checkpoint_path, device)

    def separate(
        self, mix, wanted, settings: SeparationSettings, progress, on_final: FinalStems | None = None
    ) -> dict[str, torch.Tensor]:
        """mix: [2, samples] CPU float32 -> {stem: [2, samples]} for the wanted stems.

        `on_final(first_sample, {stem: [2, n]})` receives the wanted stems as they become final
        (see `separate_chunked`'s on_final).
        """
        indices = {stem: self.stems.index(stem) for stem in wanted}

        def final_stems(first_sample: int, block: torch.Tensor) -> None:  # block: [stems, 2, n]
            on_final(first_sample, {stem: block[index] for stem, index in indices.items()})

        estimates = separate_chunked(  # [stems, 2, samples]
            self.model,
            mix,
            self.device,
            settings.chunk_samples,
            settings.overlap_samples,
            settings.batch_size or self.batch_size,
            settings.precision,
            progress,
            on_final=final_stems if on_final is not None else None,
        )
        return {stem: estimates[index] for stem, index in indices.items()}


class DemucsModel:
    """One Demucs bag, applied the way the Demucs API applies it."""

    def __init__(self, spec: dict, separator: DemucsSeparator):
        self.bag = spec["bag"]
        self.batch_size: int = spec.get("batch_size", 1)
        self.separator = separator
        check_bag_files(self.bag, separator.bag_dir)
        separator.preload(self.bag)

    def separate(self, mix, wanted, settings: SeparationSettings, progress) -> dict[str, torch.Tensor]:
        batch_size = settings.batch_size or self.batch_size
        return self.separator.separate(self.bag, mix, wanted, progress, batch_size)


def check_checkpoint_file(path: Path) -> None:
    """WeightsError naming a missing checkpoint, with the fetch advice Separator.check_weights merges."""
    if not path.is_file():
        raise WeightsError(f"missing weight file {path}. Fetch the weights with `{FETCH_COMMAND}`.")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Separator:
    """Loads the plan's models once and separates files with them."""

    def __init__(self, weights_dir: Path | None = None, device: str | torch.device | None = None):
        self.weights_dir = Path(weights_dir) if weights_dir else default_weights_dir()
        self.device = torch.device(device) if device else default_device()
        self.plan = StemPlan.for_weights(self.weights_dir)
        self._demucs: dict[Path, DemucsSeparator] = {}
        self._models: dict[str, RoformerModel | DemucsModel] = {}
        self.check_weights(self.plan.models_loaded_at("setup"))
        for name in self.plan.models_loaded_at("setup"):
            self.model(name)

    def check_weights(self, model_names: list[str]) -> None:
        """Raise one WeightsError naming every missing file of these models, before loading any."""
        problems: list[str] = []
        for name in model_names:
            spec = self.plan.models[name]
            try:
                if spec["type"] == "bs_roformer":
                    check_checkpoint_file(self.weights_dir / spec["checkpoint"])
                else:
                    check_bag_files(spec["bag"], self.weights_dir / spec["folder"])
            except WeightsError as error:
                problems.append(str(error))
        if problems:  # one line, the fetch advice once
            advice = f" Fetch the weights with `{FETCH_COMMAND}`."
            raise WeightsError(" ".join(p.replace(advice, "") for p in problems) + advice)

    def model(self, name: str) -> RoformerModel | DemucsModel:
        """The loaded model `name`, loading it on first use."""
        if name not in self._models:
            spec = self.plan.models[name]
            if spec["type"] == "bs_roformer":
                self._models[name] = RoformerModel(spec, self.plan, self.weights_dir, self.device)
            elif spec["type"] == "demucs":
                bag_dir = self.weights_dir / spec["folder"]
                if bag_dir not in self._demucs:
                    self._demucs[bag_dir] = DemucsSeparator(bag_dir, self.device)
                self._models[name] = DemucsModel(spec, self._demucs[bag_dir])
            else:
                raise SettingsError(f"model {name!r} has unknown type {spec['type']!r}")
        return self._models[name]

    def separate_file(
        self,
        audio_path: Path,
        out_dir: Path,
        settings: SeparationSettings,
        reporter: Reporter | None = None,
    ) -> list[Path]:
        """Decode `audio_path`, separate it, write `<stem>.<ext>` files; return them in output order.

        Each stem is handed to a writer thread as soon as it exists, so encoding (ffmpeg, libsndfile:
        outside the GIL) overlaps the next model and the other stems' encoding. A BS-RoFormer's stems
        (and the instrumental) are encoded while the model still runs, block by block as they become
        final, where the output rate is the models' own (`StreamedStems`).
        """
        reporter = reporter or Reporter()
        order = self.plan.stems_of(settings.stems)
        out_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="write") as writer:
            pending: dict[str, Future[Path]] = {}

            def write(stem: str, audio: torch.Tensor) -> None:
                pending[stem] = writer.submit(write_stem, audio.numpy(), stem, out_dir, settings.output)

            with timed(reporter, "decode"):
                mix_array = decode_audio(audio_path, max_duration_seconds=settings.max_duration_seconds)
                mix = torch.from_numpy(mix_array)  # [2, samples], sharing mix_array's memory
            reporter.decoded(mix.shape[-1] / SAMPLE_RATE)
            for model_name, stems in self.plan.modes[settings.stems].items():
                model = self.model(model_name)
                progress = functools.partial(reporter.progress, model_name)
                if isinstance(model, RoformerModel) and settings.output.sample_rate == SAMPLE_RATE:
                    with (
                        timed(reporter, model_name),
                        StreamedStems(stems, out_dir, settings.output) as streams,
                    ):
                        results = model.separate(mix, stems, settings, progress, streams.on_final(mix_array))
                        pending.update(streams.close(results, mix_array))
                else:
                    with timed(reporter, model_name):
                        results = model.separate(mix, stems, settings, progress)
                    for stem, audio in results.items():
                        write(stem, audio)
                    if "vocals" in results:
                        write("instrumental", mix - results["vocals"])
                del results  # a stem's memory goes with its writer task
            with timed(reporter, "write"):  # what encoding adds after the last model
                written = {stem: task.result() for stem, task in pending.items()}
        return [written[stem] for stem in order]


class StreamedStems:
    """A model's stems, and the instrumental where vocals are among them, written while it runs.

    Each stem has a `StemStream` and its own writer thread, which encodes the stem's blocks in the
    order they were queued; the model's thread only queues them. The instrumental's blocks (mix -
    vocals) are computed on its writer thread. A failed write is raised by the stem's close future
    (and its file removed). As a context manager it aborts every stream when the block raises: the
    writer threads stop, no partial file stays, no encoder process is left.
    """

    def __init__(self, stems: list[str], out_dir: Path, settings: OutputSettings):
        names = [*stems, "instrumental"] if "vocals" in stems else list(stems)
        self._streams: dict[str, StemStream] = {}
        self._threads: dict[str, ThreadPoolExecutor] = {}
        self._writes: dict[str, list[Future[None]]] = {}
        try:
            for name in names:
                self._streams[name] = StemStream(name, out_dir, settings)
                self._threads[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"write-{name}")
                self._writes[name] = []
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> StreamedStems:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is not None:
            self.abort()

    def on_final(self, mix: np.ndarray) -> FinalStems:
        """The model's on_final for the track `mix` (float32 [2, samples]): queue each stem's block."""

        def queue(first_sample: int, blocks: dict[str, torch.Tensor]) -> None:
            for stem, block in blocks.items():  # [2, n], final: never changed afterwards
                self._queue(stem, self._streams[stem].write, block.numpy())
            if "instrumental" in self._streams:
                span = slice(first_sample, first_sample + blocks["vocals"].shape[-1])
                self._queue("instrumental", self._write_instrumental, mix[:, span], blocks["vocals"].numpy())

        return queue

    def _queue(self, stem: str, task: Callable, *args) -> None:
        self._writes[stem].append(self._threads[stem].submit(task, *args))

    def _write_instrumental(self, mix: np.ndarray, vocals: np.ndarray) -> None:
        """Write mix - vocals (float32 [2, n] each) to the instrumental's stream."""
        self._streams["instrumental"].write(mix - vocals)

    def close(self, results: dict[str, torch.Tensor], mix: np.ndarray) -> dict[str, Future[Path]]:
        """Queue every stream's close after its writes, with its whole stem (results' [2, samples]; the
        instrumental: mix - vocals, computed on its thread). Returns {stem: future of its file's path}."""
        whole = {stem: audio.numpy for stem, audio in results.items()}
        if "instrumental" in self._streams:
            whole["instrumental"] = functools.partial(np.subtract, mix, results["vocals"].numpy())
        closed = {stem: self._threads[stem].submit(self._close, stem, whole[stem]) for stem in self._streams}
        for thread in self._threads.values():
            thread.shutdown(wait=False)  # each thread ends once its queue is done
        return closed

    def _close(self, stem: str, whole_stem: Callable[[], np.ndarray]) -> Path:
        """On the stem's thread, after its writes: finish its file, or remove it if a write failed."""
        try:
            for write in self._writes[stem]:
                write.result()  # already done (same thread, in order): raises a failed write's error
            return self._streams[stem].close(whole_stem())
        except BaseException:
            self._streams[stem].abort()
            raise

    def abort(self) -> None:
        """Drop the queued writes, wait for the running ones, stop every encoder and remove its file."""
        for thread in self._threads.values():
            thread.shutdown(wait=True, cancel_futures=True)
        for stream in self._streams.values():
            stream.abort()


class timed:
    """Context manager: report a stage's start, then its wall time when it ends."""

    def __init__(self, reporter: Reporter, stage: str, clock: Callable[[], float] = time.perf_counter):
        self.reporter, self.stage, self.clock = reporter, stage, clock

    def __enter__(self):
        self.reporter.stage_started(self.stage)
        self.start = self.clock()

    def __exit__(self, *exc_info):
        if exc_info[0] is None:
            self.reporter.stage_finished(self.stage, self.clock() - self.start)
