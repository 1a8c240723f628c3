"""The Cog model's service: one Separator per server, one output folder per prediction."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .audio.upload import check_upload
from .pipeline import Separator
from .progress import LogReporter, MetricRecorder
from .request import Request
from .stem_writer import write_report


class PredictionService:
    """Loads the models at server start and answers the Cog model's predictions.

    Each prediction writes into a fresh temporary folder; the previous prediction's folder is
    removed when the next one starts (the runtime has uploaded its files by then), so the disk
    holds at most one prediction's stems. Stems are handed to the runtime as they are complete, so it
    uploads the vocals while Demucs still runs; the last file is the stems report, `stems.json` (each
    stem's figures, model and terms: the `stems` metric's content, for clients that do not get the
    metrics). A prediction that fails or is cancelled keeps only the stems it had handed over (none: its
    folder goes at once).

    The request was checked when it was made. The audio must be a file the runtime downloaded for this
    prediction (`separation.audio.upload`): a plain path would make the server read its own disk, so it
    is refused. Messages name the upload as its sender named it.
    """

    def __init__(self, weights_dir: Path | None = None, device: str | None = None):
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # e.g. "vocals scaled by -1.2 dB"
        self.separator = Separator(weights_dir, device)
        self._last_out_dir: Path | None = None
        loaded = ", ".join(self.separator.loaded_models)
        print(f"models ready on {self.separator.device}: {loaded}", flush=True)

    def predict(
        self, audio: Path, request: Request, record_metric: MetricRecorder | None = None
    ) -> Iterator[Path]:
        """Separate one upload, yielding each stem file, named `<stem>.<ext>`, as soon as it is complete,
        then `stems.json`."""
        upload = check_upload(Path(audio))
        self._remove_last_outputs()
        out_dir = self._last_out_dir = Path(tempfile.mkdtemp(prefix="stems-"))
        reporter = LogReporter(record_metric)
        try:
            stems = []
            for stem in self.separator.stems_as_written(upload, out_dir, request, reporter):
                stems.append(stem)
                yield stem.path
            yield write_report(stems, out_dir)
        except BaseException:  # failed or cancelled: the writer has removed every stem not handed over
            if not any(out_dir.iterdir()):
                self._remove_last_outputs()
            raise
        finally:
            release_free_memory()  # what this prediction freed, back to the system: RSS does not creep up

    def _remove_last_outputs(self) -> None:
        """Remove the previous prediction's output folder."""
        if self._last_out_dir is not None:
            shutil.rmtree(self._last_out_dir, ignore_errors=True)
            self._last_out_dir = None


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give the memory glibc malloc holds free back to the system, in every arena (10-50 ms).

    A prediction's buffers are freed in the arenas of the threads that allocated them (the runtime's request
    thread, one writer thread per stem); glibc keeps most of it, scattered over those arenas, so without this
    a server's RSS grows by about 1 GB over its first predictions of a 20 s song (benchmarks/soak.py).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
