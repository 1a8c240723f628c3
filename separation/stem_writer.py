"""The one place stems become files: `<stem>.<ext>` in a request's output folder, encoded on writer threads.

Models yield their stems in final spans (`model_base.StemSpan`), in track order; the pipeline hands each to
`add_span`, and tells `complete` when a model is done. Every stem is streamed into its file as its spans
arrive (`encode.StemStream`), at any output rate, so no stem is ever held whole here; the encoder decides
on its own whether a stem must be rescaled to avoid clipping.

Complements (the plan's `complements`, e.g. instrumental = mix - vocals) are derived here and nowhere
else: each span of a complement's source gives the same span of the complement.

Every stem is measured on the way (`StemFigures`: peak, loudness, how much of the track it is audible,
whether it is present) from the samples that go to its encoder, against the loudness of the mix, which is
measured on a thread of its own while the first model runs; with the model that made it and the terms of
that model's weights (`Origin`), that is what the stems report (`write_report`, `stems.json`) says of it.

Each stem has its own writer thread, which runs that stem's work in the order it was queued; the model's
thread only queues, and waits when a stem already has MAX_QUEUED_SPANS spans waiting, so a slow encoder
holds back the model instead of letting spans pile up in memory. Encoding runs in ffmpeg and libsndfile,
outside the GIL, so it overlaps the models. Stems can be handed out as they complete (`deliver`), so a
client gets the vocals while Demucs still runs. A failed write makes `finish()` raise; leaving the `with`
block on an exception stops every thread, kills every encoder and removes every file not yet delivered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .audio.encoders import OutputSettings
from .audio.samplerate import SAMPLE_RATE
from .audio.stem_figures import StemFigures, StemMeter, measure_mix
from .audio.stem_file import StemStream
from .models.base import StemSpan

MAX_QUEUED_SPANS = 4  # per stem: spans waiting for its writer thread before the model waits
REPORT_FILE_NAME = "stems.json"  # the stems report, beside the stems


@dataclass(frozen=True)
class Origin:
    """Where a stem comes from: the plan's model that made it (for a complement, the model of the stem it
    complements) and the terms label of that model's weights (the weights manifest's)."""

    model: str
    terms: str


@dataclass(frozen=True)
class WrittenStem:
    """A finished stem file, its figures and its origin."""

    name: str
    path: Path
    figures: StemFigures
    origin: Origin

    def as_dict(self) -> dict[str, object]:
        """What the stems report says of the stem: file, model, terms, peak_dbfs, loudness_lufs,
        active_fraction, present (JSON-safe values)."""
        return {
            "file": self.path.name,
            "model": self.origin.model,
            "terms": self.origin.terms,
            **self.figures.as_dict(),
        }


def write_report(stems: Iterable[WrittenStem], out_dir: Path) -> Path:
    """`out_dir/stems.json`: {stem: its `as_dict()`}, in the order given."""
    path = Path(out_dir) / REPORT_FILE_NAME
    path.write_text(json.dumps({stem.name: stem.as_dict() for stem in stems}, indent=2) + "\n")
    return path


class _StemFile:
    """One stem's file and its writer thread. Work queued after a failed write is skipped."""

    def __init__(
        self,
        name: str,
        origin: Origin,
        out_dir: Path,
        output: OutputSettings,
        frames: int,
        mix_lufs: Future[float],
    ):
        self.name, self.origin, self.mix_lufs = name, origin, mix_lufs
        self.meter = StemMeter(output.sample_rate)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"write-{name}")
        self._stream = StemStream(name, out_dir, output, frames, self.meter)
        self._queued = threading.Semaphore(MAX_QUEUED_SPANS)
        self.error: BaseException | None = None
        self.done: Future[WrittenStem] | None = None

    def write_span(self, span: Callable[[], np.ndarray]) -> None:
        """Queue the next span of the stem (float32 [2, n], computed on this stem's thread); waits while
        MAX_QUEUED_SPANS are queued already."""
        self._queued.acquire()
        self._thread.submit(self._write_span, span)

    def complete(self) -> None:
        """Queue the file's completion."""
        self.done = self._thread.submit(self._guarded, self._complete)
        self._thread.shutdown(wait=False)  # the thread ends once its queue is done

    def _guarded(self, task: Callable[..., WrittenStem | None], *args) -> WrittenStem | None:
        """Run a queued task unless an earlier one failed; a failure removes the partial file."""
        if self.error is not None:
            raise self.error
        try:
            return task(*args)
        except BaseException as error:
            self.error = error
            self._stream.abort()
            raise

    def _write_span(self, span: Callable[[], np.ndarray]) -> None:
        """Write a queued span (skipped after a failed write) and free its place in the queue either way."""
        try:
            self._guarded(lambda: self._stream.write(span()))
        finally:
            self._queued.release()

    def _complete(self) -> WrittenStem:
        path = self._stream.close()
        return WrittenStem(self.name, path, self.meter.figures(self.mix_lufs.result()), self.origin)

    def abort(self, remove_file: bool) -> None:
        """Drop queued work, wait for the running task, stop the encoder and remove the partial file, and
        the complete one too if `remove_file`."""
        self._thread.shutdown(wait=True, cancel_futures=True)
        self._stream.abort()
        finished = self.done is not None and self.done.done() and not self.done.cancelled()
        if remove_file and finished and self.done.exception() is None:
            self.done.result().path.unlink(missing_ok=True)


class StemWriter:
    """Writes one request's stems into `out_dir`.

    mix: the decoded track, float32 [2, samples] at SAMPLE_RATE (complements are derived from it);
    complements: {complement: source stem}; origins: {stem: its Origin}, for every stem it will write.
    """

    def __init__(
        self,
        out_dir: Path,
        output: OutputSettings,
        mix: np.ndarray,
        complements: Mapping[str, str],
        origins: Mapping[str, Origin],
    ):
        self.out_dir, self.output, self.mix, self.origins = Path(out_dir), output, mix, origins
        self._complement_of = {source: complement for complement, source in complements.items()}
        self._files: dict[str, _StemFile] = {}
        self._delivered: set[str] = set()  # handed out by deliver(): kept even if the request fails later
        self._lock = threading.Lock()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._mix_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="measure-mix")
        self._mix_lufs = self._mix_thread.submit(measure_mix, mix, SAMPLE_RATE)
        self._mix_thread.shutdown(wait=False)

    def __enter__(self) -> StemWriter:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if exc_type is not None:
            self.abort()

    def add_span(self, span: StemSpan) -> None:
        """Final spans of some stems, {stem: float32 [2, n] CPU} from `span.first_sample` on, each stem's in
        track order: streamed into their files, and their complements' (mix - stem) into theirs. Raises the
        error of any write that failed before, so the model stops at its next span."""
        for file in list(self._files.values()):
            if file.error is not None:
                raise file.error
        for stem, block in span.stems.items():
            self._file(stem).write_span(block.numpy)
            complement = self._complement_of.get(stem)
            if complement is not None:
                mix = self.mix[:, span.first_sample : span.first_sample + block.shape[-1]]
                self._file(complement).write_span(_difference(mix, block))

    def complete(self, stems: Iterable[str]) -> None:
        """Every span of these stems was added: their files (and their complements') complete."""
        for stem in stems:
            self._file(stem).complete()
            complement = self._complement_of.get(stem)
            if complement is not None:
                self._file(complement).complete()

    def deliver(self) -> list[WrittenStem]:
        """The stems whose model has finished that were not handed out before, once their files are
        complete (waited for: what is left to encode after the model is its last spans), marked delivered."""
        ready = [
            stem
            for stem, file in self._files.items()
            if stem not in self._delivered and file.done is not None
        ]
        written = [self._files[stem].done.result() for stem in ready]
        self._delivered.update(ready)
        return written

    def finish(self) -> None:
        """Wait for every file; raises the first failed write (the `with` block cleans up). `deliver` then
        hands out what was not handed out before."""
        for file in self._files.values():
            file.done.result()

    def abort(self) -> None:
        """Stop every writer thread and encoder and remove every file of this request not yet delivered."""
        self._mix_thread.shutdown(wait=True, cancel_futures=True)
        for stem, file in self._files.items():
            file.abort(remove_file=stem not in self._delivered)

    def _file(self, stem: str) -> _StemFile:
        with self._lock:
            if stem not in self._files:
                frames = self.mix.shape[-1]
                self._files[stem] = _StemFile(
                    stem, self.origins[stem], self.out_dir, self.output, frames, self._mix_lufs
                )
            return self._files[stem]


def _difference(mix: np.ndarray, stem: torch.Tensor) -> Callable[[], np.ndarray]:
    """mix - stem (float32 [2, n] each), computed when called: on the complement's writer thread."""
    return lambda: mix - stem.numpy()
