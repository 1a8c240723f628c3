"""Reporters: log lines with ETA and metrics."""

from __future__ import annotations

from separation.progress import LogReporter


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
