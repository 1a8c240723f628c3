"""The one place stems become files: `<stem>.<ext>` in a request's output folder, encoded on writer threads.

Models hand their stems over in one of two ways: a BS-RoFormer emits each span of its stems as soon as no
later chunk can change it (`add_blocks`), and every model hands over its whole stems when it is done
(`add_stems`). The writer decides how each stem is written: at the models' rate the emitted spans are
encoded while the model still runs (`StemStream`), and the whole stem is only needed again if it must be
rescaled to avoid clipping; at any other output rate the whole stem is resampled and written once it is
complete. Demucs stems come whole only, and are written whole.

Complements (the plan's `complements`, e.g. instrumental = mix - vocals) are derived here and nowhere
else: wherever a complement's source stem is written, the complement is written beside it, span by span or
whole in the same way.

Every stem is measured on the way (`StemReport`: peak, loudness, how much of the track it is audible,
whether it is present) from the samples that go to its encoder, against the loudness of the mix, which is
measured on a thread of its own while the first model runs.

Each stem has its own writer thread, which runs that stem's work in the order it was queued; the model's
thread only queues. Encoding runs in ffmpeg and libsndfile, outside the GIL, so it overlaps the models.
Stems can be handed out as they complete (`deliver`), so a client gets the vocals while Demucs still runs.
A failed write makes `finish()` raise; leaving the `with` block on an exception stops every thread, kills
every encoder and removes every file not yet delivered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .encode import StemStream, write_stem
from .samplerate import SAMPLE_RATE
from .settings import OutputSettings
from .stem_report import StemMeter, StemReport, measure_mix


@dataclass(frozen=True)
class WrittenStem:
    """A finished stem file and its figures."""

    name: str
    path: Path
    report: StemReport


class _StemFile:
    """One stem's file and its writer thread. Work queued after a failed write is skipped."""

    def __init__(
        self, name: str, out_dir: Path, output: OutputSettings, frames: int, mix_lufs: Future[float]
    ):
        self.name, self.out_dir, self.output, self.frames = name, out_dir, output, frames
        self.mix_lufs = mix_lufs
        self.meter = StemMeter(output.sample_rate)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"write-{name}")
        self._stream: StemStream | None = None
        self._error: BaseException | None = None
        self.streamed = False  # spans of it were queued: once complete, only the last one is left to encode
        self.done: Future[WrittenStem] | None = None

    def write_block(self, block: Callable[[], np.ndarray]) -> None:
        """Queue the next span of the stem (float32 [2, n], computed on this stem's thread) for streaming."""
        self.streamed = True
        self._thread.submit(self._guarded, self._write_block, block)

    def complete(self, whole: Callable[[], np.ndarray]) -> None:
        """Queue the file's completion; `whole()` gives the whole stem (float32 [2, frames]) when needed."""
        self.done = self._thread.submit(self._guarded, self._complete, whole)
        self._thread.shutdown(wait=False)  # the thread ends once its queue is done

    def _guarded(self, task: Callable[..., WrittenStem | None], *args) -> WrittenStem | None:
        """Run a queued task unless an earlier one failed; a failure removes the partial file."""
        if self._error is not None:
            raise self._error
        try:
            return task(*args)
        except BaseException as error:
            self._error = error
            if self._stream is not None:
                self._stream.abort()
            raise

    def _write_block(self, block: Callable[[], np.ndarray]) -> None:
        if self._stream is None:
            self._stream = StemStream(self.name, self.out_dir, self.output, self.frames, self.meter)
        self._stream.write(block())

    def _complete(self, whole: Callable[[], np.ndarray]) -> WrittenStem:
        if self._stream is not None:
            path = self._stream.close(whole)
        else:
            path = write_stem(whole(), self.name, self.out_dir, self.output, self.meter)
        return WrittenStem(self.name, path, self.meter.report(self.mix_lufs.result()))

    def abort(self) -> None:
        """Drop queued work, wait for the running task, stop the encoder and remove the partial file."""
        self._thread.shutdown(wait=True, cancel_futures=True)
        if self._stream is not None:
            self._stream.abort()


class StemWriter:
    """Writes one request's stems into `out_dir`.

    mix: the decoded track, float32 [2, samples] at SAMPLE_RATE (complements are derived from it);
    complements: {complement: source stem}.
    """

    def __init__(
        self, out_dir: Path, output: OutputSettings, mix: np.ndarray, complements: Mapping[str, str]
    ):
        self.out_dir, self.output, self.mix = Path(out_dir), output, mix
        self.streaming = output.sample_rate == SAMPLE_RATE
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

    def add_blocks(self, first_sample: int, blocks: Mapping[str, torch.Tensor]) -> None:
        """Final spans {stem: float32 [2, n] CPU} starting at `first_sample`, in track order: streamed into
        their files where the output rate is the models' own, ignored otherwise (`add_stems` follows)."""
        if not self.streaming:
            return
        for stem, block in blocks.items():
            self._file(stem).write_block(block.numpy)
            complement = self._complement_of.get(stem)
            if complement is not None:
                span = slice(first_sample, first_sample + block.shape[-1])
                self._file(complement).write_block(_difference(self.mix[:, span], block))

    def add_stems(self, stems: Mapping[str, torch.Tensor]) -> None:
        """A model's whole stems {stem: float32 [2, samples] CPU}: their files (and complements) complete."""
        for stem, audio in stems.items():
            self._file(stem).complete(audio.numpy)
            complement = self._complement_of.get(stem)
            if complement is not None:
                self._file(complement).complete(_difference(self.mix, audio))

    def deliver(self) -> list[WrittenStem]:
        """The stems complete now that were not handed out before, and mark them delivered. A streamed stem
        whose model has finished is waited for: only its last span is left to encode."""
        ready = [
            stem
            for stem, file in self._files.items()
            if stem not in self._delivered and file.done is not None and (file.streamed or file.done.done())
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
        for file in self._files.values():
            file.abort()
        for stem in self._files.keys() - self._delivered:
            (self.out_dir / f"{stem}.{self.output.extension}").unlink(missing_ok=True)

    def _file(self, stem: str) -> _StemFile:
        with self._lock:
            if stem not in self._files:
                frames = self.mix.shape[-1]
                self._files[stem] = _StemFile(stem, self.out_dir, self.output, frames, self._mix_lufs)
            return self._files[stem]


def _difference(mix: np.ndarray, stem: torch.Tensor) -> Callable[[], np.ndarray]:
    """mix - stem (float32 [2, n] each), computed when called: on the complement's writer thread."""
    return lambda: mix - stem.numpy()
