"""From an audio file to stem files: the stem plan, model loading, and the separation run.

The plan (`configs/stems.yaml`) names the models, how to load them and which stems each one
gives in every `stems` mode; this module only follows it, so a new checkpoint (a Mel-Band
RoFormer, a multi-stem RoFormer) is a config change. `instrumental` is always mix - vocals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from .audio import SAMPLE_RATE, OutputSettings, decode_audio, write_stem
from .chunking import check_chunking, separate_chunked
from .demucs_wrapper import FETCH_COMMAND, DemucsSeparator, check_bag_files
from .errors import SettingsError, WeightsError
from .roformer import load_bs_roformer, load_config
from .weights import default_weights_dir

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PLAN_FILE_NAME = "stems.yaml"
WRITER_THREADS = 4  # stems encoded at once


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
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise SettingsError(f"batch size must be an integer >= 1, got {self.batch_size!r}")
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

    def separate(self, mix, wanted, settings: SeparationSettings, progress) -> dict[str, torch.Tensor]:
        """mix: [2, samples] CPU float32 -> {stem: [2, samples]} for the wanted stems."""
        estimates = separate_chunked(  # [stems, 2, samples]
            self.model,
            mix,
            self.device,
            settings.chunk_samples,
            settings.overlap_samples,
            settings.batch_size or self.batch_size,
            settings.precision,
            progress,
        )
        return {stem: estimates[self.stems.index(stem)] for stem in wanted}


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
    if not path.is_file():
        raise WeightsError(
            f"missing weight file {path}. Fetch the weights with `python -m separation.weights fetch`."
        )


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
        outside the GIL) overlaps the next model and the other stems' encoding.
        """
        reporter = reporter or Reporter()
        order = self.plan.stems_of(settings.stems)
        out_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="write") as writer:
            pending: dict[str, Future[Path]] = {}

            def write(stem: str, audio: torch.Tensor) -> None:
                pending[stem] = writer.submit(write_stem, audio.numpy(), stem, out_dir, settings.output)

            with timed(reporter, "decode"):
                mix = decode_audio(audio_path, max_duration_seconds=settings.max_duration_seconds)
                mix = torch.from_numpy(mix)  # [2, samples]
            reporter.decoded(mix.shape[-1] / SAMPLE_RATE)
            for model_name, stems in self.plan.modes[settings.stems].items():
                with timed(reporter, model_name):
                    results = self.model(model_name).separate(
                        mix,
                        stems,
                        settings,
                        lambda done, total, s=model_name: reporter.progress(s, done, total),
                    )
                for stem, audio in results.items():
                    write(stem, audio)
                if "vocals" in results:
                    write("instrumental", mix - results["vocals"])
                del results  # a stem's memory goes with its writer task
            with timed(reporter, "write"):  # what encoding adds after the last model
                written = {stem: task.result() for stem, task in pending.items()}
        return [written[stem] for stem in order]


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
