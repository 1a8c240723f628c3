"""Reporters: log lines with ETA and metrics."""

from __future__ import annotations

import io

from fixtures.scaled_mix import register, write_scaled_mix_weights
from separation.pipeline import Separator
from separation.progress import LogReporter, Reporter, TqdmReporter
from separation.request import Request


def test_log_reporter_prints_eta_and_records_metrics():
    lines, metrics, now = [], [], [0.0]
    reporter = LogReporter(
        record_metric=lambda key, value, mode="replace": metrics.append((key, value, mode)),
        log=lines.append,
        interval_seconds=2.0,
        clock=lambda: now[0],
    )
    reporter.stage_started("bs_roformer_vocals")
    for done in range(1, 5):
        now[0] += 1.5
        reporter.progress("bs_roformer_vocals", done, 4)
    reporter.stage_finished("bs_roformer_vocals", 6.0)
    assert lines == [
        "[bs_roformer_vocals] started",
        "[bs_roformer_vocals] 50% (2/4), ETA 3 s",
        "[bs_roformer_vocals] 100% (4/4), ETA 0 s",
        "[bs_roformer_vocals] done in 6.00 s",
    ]
    assert metrics == [("stage_seconds.bs_roformer_vocals", 6.0, "incr")]


def test_the_bar_shows_at_once_and_ticks_with_each_batch():
    """The command line's bar appears at 0 when a model starts (its first batch may take minutes on a CPU)
    and moves as each batch is done."""
    stream = io.StringIO()
    reporter = TqdmReporter(file=stream)
    reporter.stage_started("bs_roformer_vocals")
    reporter.progress("bs_roformer_vocals", 0, 19)
    assert "0/19" in stream.getvalue()
    reporter.progress("bs_roformer_vocals", 4, 19)
    assert "4/19" in stream.getvalue()


def test_the_pipeline_reports_a_model_before_its_first_span(song, tmp_path, monkeypatch):
    """A stand-in model that yields slowly: the reporter hears of the stage's whole work before any span."""
    register(monkeypatch)
    models = {"voice": {"gains": {"vocals": 0.5}, "span_samples": 22050}}
    plan = {"modes": {"solo": {"models": {"voice": ["vocals"]}}}, "output_order": ["vocals"]}
    separator = Separator(write_scaled_mix_weights(tmp_path / "weights", models, plan), "cpu")
    seen = []

    class Recorder(Reporter):
        def progress(self, stage, done, total):
            seen.append((done, total, separator.model("voice").spans))

    list(separator.stems_as_written(song, tmp_path / "out", Request(stems="solo"), Recorder()))
    assert seen[0] == (0, 4, 0) and seen[-1] == (4, 4, 4)
    assert [done for done, _, _ in seen] == [0, 1, 2, 3, 4]
