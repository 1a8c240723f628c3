"""Reporters: how a separation run tells a person what it is doing.

`LogReporter` writes plain lines (the Cog runtime captures them as prediction logs) and
records stage times as metrics; `TqdmReporter` draws progress bars for the command line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm

from .stem_writer import WrittenStem


def print_flushed(line: str) -> None:
    """print, flushed at once: the Cog runtime streams a prediction's logs as they are written."""
    print(line, flush=True)


MetricRecorder = Callable[..., None]  # (key, value, mode=...), as Cog's record_metric


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

    def stem_written(self, stem: WrittenStem) -> None:
        """A stem file is complete, with its figures."""


def describe(stem: WrittenStem) -> str:
    """One line on a stem: its file, peak, loudness, how much of the track it is audible, presence."""
    figures = stem.figures
    peak = "silent" if figures.peak_dbfs is None else f"peak {figures.peak_dbfs:+.1f} dBFS"
    loudness = "" if figures.loudness_lufs is None else f", {figures.loudness_lufs:.1f} LUFS"
    presence = "present" if figures.present else "not present"
    audible = f"audible {100 * figures.active_fraction:.0f} % of the track"
    origin = f"{stem.origin.model}, terms: {stem.origin.terms}"
    return f"{stem.path.name}: {peak}{loudness}, {audible}, {presence} ({origin})"


class LogReporter(Reporter):
    """One line per stage start and end, and percent done with ETA at most every `interval_seconds`."""

    def __init__(
        self,
        record_metric: MetricRecorder | None = None,
        log: Callable[[str], None] = print_flushed,
        interval_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.record_metric = record_metric
        self.log = log
        self.interval_seconds = interval_seconds
        self.clock = clock
        self._stage_start = self._last_line = 0.0
        self._stem_reports: dict[str, dict] = {}

    def stage_started(self, stage: str) -> None:
        self._stage_start = self._last_line = self.clock()
        self.log(f"[{stage}] started")

    def decoded(self, audio_seconds: float) -> None:
        self.log(f"audio: {audio_seconds:.1f} s")
        if self.record_metric is not None:
            self.record_metric("audio_seconds", round(audio_seconds, 3))

    def progress(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if done < total and now - self._last_line < self.interval_seconds:
            return
        self._last_line = now
        elapsed = now - self._stage_start
        eta = elapsed / done * (total - done) if done else float("nan")
        self.log(f"[{stage}] {100 * done / total:.0f}% ({done}/{total}), ETA {eta:.0f} s")

    def stage_finished(self, stage: str, seconds: float) -> None:
        self.log(f"[{stage}] done in {seconds:.2f} s")
        if self.record_metric is not None:
            self.record_metric(f"stage_seconds.{stage}", round(seconds, 3), mode="incr")

    def stem_written(self, stem: WrittenStem) -> None:
        """Log the stem's line; the `stems` metric maps every stem so far to what the stems report says of
        it (a metric key's segments may not hold '-', which stem names may: so one key, a dict of stems)."""
        self.log(describe(stem))
        self._stem_reports[stem.name] = stem.as_dict()
        if self.record_metric is not None:
            self.record_metric("stems", dict(self._stem_reports))


class TqdmReporter(Reporter):
    """A progress bar per model stage, on stderr."""

    def __init__(self, file=sys.stderr):
        self.file = file
        self._bar: tqdm | None = None

    def stage_started(self, stage: str) -> None:
        self._close()

    def progress(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            # every tick shows: a tick is a batch, seconds or minutes apart
            self._bar = tqdm(total=total, desc=stage, unit="step", file=self.file, leave=False, mininterval=0)
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def stage_finished(self, stage: str, seconds: float) -> None:
        self._close()
        print(f"{stage}: {seconds:.1f} s", file=self.file)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
