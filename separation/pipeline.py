"""From an audio file to stem files: decode -> the plan's models -> the stem writer -> files."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import torch

from .audio.decode import decode_audio
from .audio.samplerate import SAMPLE_RATE
from .audio.stem_file import check_spool_space
from .errors import SettingsError, non_finite_output_error, quoted, weights_error
from .models.base import LoadedModel, Progress, StemSpan
from .plan import StemPlan
from .progress import Reporter
from .request import Request
from .stem_writer import Origin, StemWriter, WrittenStem
from .weights.manifest import (
    WeightFile,
    default_weights_dir,
    load_manifest,
    manifest_for,
    model_terms,
    select_models,
    verify,
)


def device_named(name: str | torch.device | None) -> torch.device:
    """The torch device `name` (None: CUDA where there is one, else the CPU); SettingsError for a name
    torch does not know."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise SettingsError(f"unknown device {quoted(name)}; use cpu or cuda") from error


class Separator:
    """Checks every weight file of the plan, loads its `setup` models, and separates files with them.

    The weights check is the manifest's (the weights folder's own weights.yaml, else the project's): every
    file of every model in the plan, lazy ones included, must be present with its size, before anything
    loads; their sha256 digests are computed on a thread while the setup models load (about 1 GB/s here,
    2.4 GB in all: 2.5 s beside a 4 s load), and setup fails if any differs. `lazy` models load on first
    use and are then kept.
    """

    def __init__(self, weights_dir: Path | None = None, device: str | torch.device | None = None):
        self.weights_dir = Path(weights_dir) if weights_dir else default_weights_dir()
        self.device = device_named(device)
        self.plan = StemPlan.for_weights(self.weights_dir)
        self._models: dict[str, LoadedModel] = {}
        files = self.weight_files()  # WeightsError for a model of the plan that the manifest does not list
        # {model: terms label}: the manifest gives one for every model it lists, so for every model here
        self.terms = model_terms(manifest_for(self.weights_dir))
        problems = verify(self.weights_dir, files, full_hash=False)
        if problems:
            raise weights_error(problems)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hashing:
            digests = hashing.submit(verify, self.weights_dir, files)
            for name in self.plan.models_loaded_at("setup"):
                self.model(name)
            problems = digests.result()
        if problems:
            raise weights_error(problems)

    def weight_files(self) -> list[WeightFile]:
        """The manifest's files of every model in the plan; WeightsError for a model it does not list."""
        return select_models(load_manifest(manifest_for(self.weights_dir)), list(self.plan.models))

    def model(self, name: str) -> LoadedModel:
        """The loaded model `name`, loading it on first use."""
        if name not in self._models:
            self._models[name] = self.plan.models[name].build(self.weights_dir, self.device)
        return self._models[name]

    @property
    def loaded_models(self) -> list[str]:
        return list(self._models)

    def stems_as_written(
        self,
        audio_path: Path,
        out_dir: Path,
        request: Request,
        reporter: Reporter | None = None,
    ) -> Iterator[WrittenStem]:
        """Separate `audio_path` into `<stem>.<ext>` files in `out_dir`, yielding each stem once its file is
        complete: each model's stems (and their complements) once it is done, before the next model starts;
        the last model's at the end, in output order (the mode's stems, then the extra ones).

        Stems already yielded stay when a later step fails (or the run is cancelled); the others are removed.
        """
        reporter = reporter or Reporter()
        work = self.plan.resolve(request)
        models = {name: self.model(name) for name in work.uses}  # a lazy model that cannot load fails first
        with timed(reporter, "decode"):
            mix_array = decode_audio(audio_path, max_duration_seconds=request.max_duration_seconds)
            mix = torch.from_numpy(mix_array)  # [2, samples], sharing mix_array's memory
        reporter.decoded(mix.shape[-1] / SAMPLE_RATE)
        check_spool_space(len(work.order), mix.shape[-1], request.output)
        last_model = list(work.uses)[-1]
        origins = {stem: Origin(model, self.terms[model]) for stem, model in work.model_of.items()}
        with StemWriter(out_dir, request.output, mix_array, work.complements, origins) as writer:
            for model_name, stems in work.uses.items():
                # closing(): a model stopped midway (a failed write, a cancel) releases what it holds at once
                with (
                    timed(reporter, model_name),
                    closing(models[model_name].separate(mix, stems, request.run_options)) as run,
                ):
                    for event in run:
                        if isinstance(event, Progress):
                            reporter.progress(model_name, event.done, event.total)
                        else:
                            _check_finite(event, model_name)
                            writer.add_span(event)
                writer.complete(stems)
                if model_name != last_model:
                    yield from _reported(writer.deliver(), reporter)
            with timed(reporter, "write"):  # what encoding adds after the last model
                writer.finish()
            yield from _reported(
                sorted(writer.deliver(), key=lambda stem: work.order.index(stem.name)), reporter
            )


def _check_finite(span: StemSpan, model_name: str) -> None:
    """Stop at the first span with NaN or infinite samples (damaged weights), naming the model."""
    if not all(torch.isfinite(block).all() for block in span.stems.values()):
        raise non_finite_output_error(model_name)


def _reported(stems: list[WrittenStem], reporter: Reporter) -> Iterator[WrittenStem]:
    """Each stem, after telling the reporter about it."""
    for stem in stems:
        reporter.stem_written(stem)
        yield stem


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
