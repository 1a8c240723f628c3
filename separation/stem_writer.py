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

Each stem has its own writer thread, which runs that stem's work in the order it was queued; the model's
thread only queues. Encoding runs in ffmpeg and libsndfile, outside the GIL, so it overlaps the models.
A failed write makes `finish()` raise; leaving the `with` block on an exception stops every thread, kills
every encoder and removes every partial file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .encode import StemStream, write_stem
from .samplerate import SAMPLE_RATE
from .settings import OutputSettings


class _StemFile:
    """One stem's file and its writer thread. Work queued after a failed write is skipped."""

    def __init__(self, name: str, out_dir: Path, output: OutputSettings, frames: int):
        self.name, self.out_dir, self.output, self.frames = name, out_dir, output, frames
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"write-{name}")
        self._stream: StemStream | None = None
        self._error: BaseException | None = None
        self.done: Future[Path] | None = None

    def write_block(self, block: Callable[[], np.ndarray]) -> None:
        """Queue the next span of the stem (float32 [2, n], computed on this stem's thread) for streaming."""
        self._thread.submit(self._guarded, self._write_block, block)

    def complete(self, whole: Callable[[], np.ndarray]) -> None:
        """Queue the file's completion; `whole()` gives the whole stem (float32 [2, frames]) when needed."""
        self.done = self._thread.submit(self._guarded, self._complete, whole)
        self._thread.shutdown(wait=False)  # the thread ends once its queue is done

    def _guarded(self, task: Callable[..., Path | None], *args) -> Path | None:
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
            self._stream = StemStream(self.name, self.out_dir, self.output, self.frames)
        self._stream.write(block())

    def _complete(self, whole: Callable[[], np.ndarray]) -> Path:
        if self._stream is not None:
            return self._stream.close(whole)
        return write_stem(whole(), self.name, self.out_dir, self.output)

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
        self._lock = threading.Lock()
        self.out_dir.mkdir(parents=True, exist_ok=True)

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

    def finish(self) -> dict[str, Path]:
        """Wait for every file; {stem: path}. Raises the first failed write (the `with` block cleans up)."""
        return {stem: file.done.result() for stem, file in self._files.items()}

    def abort(self) -> None:
        """Stop every writer thread and encoder and remove every partial or finished file of this request."""
        for file in self._files.values():
            file.abort()
        for stem in self._files:
            (self.out_dir / f"{stem}.{self.output.extension}").unlink(missing_ok=True)

    def _file(self, stem: str) -> _StemFile:
        with self._lock:
            if stem not in self._files:
                self._files[stem] = _StemFile(stem, self.out_dir, self.output, self.mix.shape[-1])
            return self._files[stem]


def _difference(mix: np.ndarray, stem: torch.Tensor) -> Callable[[], np.ndarray]:
    """mix - stem (float32 [2, n] each), computed when called: on the complement's writer thread."""
    return lambda: mix - stem.numpy()
