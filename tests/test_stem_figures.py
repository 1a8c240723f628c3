"""Per-stem presence and loudness figures: BS.1770-4 as pyloudnorm measures it, streamed block by block."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pyloudnorm
import pytest

from fixtures.songs import song_block
from separation.audio.stem_figures import (
    ACTIVE_BELOW_MIX_LU,
    PRESENT_MIN_ACTIVE_FRACTION,
    SHORT_TERM_WINDOW_SECONDS,
    LoudnessMeter,
    StemFigures,
    StemMeter,
    measure_mix,
)

RATES = (44100, 48000)


def music(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Music-like float32 [2, samples]: fixtures' song, its first third 26 dB down (relative gate acts)"""
    samples = round(seconds * sample_rate)
    song = song_block(0, samples, seed).T.copy()  # [2, samples]
    song[:, : samples // 3] *= 0.05
    return song


def sine(seconds: float, sample_rate: int, channels: tuple[float, float]) -> np.ndarray:
    """A 997 Hz sine at the given amplitude per channel, float32 [2, samples]."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = np.sin(2 * np.pi * 997.0 * t)
    return np.stack([amplitude * wave for amplitude in channels]).astype(np.float32)


def reference_lufs(signal: np.ndarray, sample_rate: int) -> float:
    """pyloudnorm's integrated loudness of float [2, samples], on the whole array in float64."""
    return pyloudnorm.Meter(sample_rate).integrated_loudness(signal.T.astype(np.float64))


def fed(signal: np.ndarray, sample_rate: int, block_sizes=None) -> StemMeter:
    """A StemMeter fed `signal` [2, samples] in one block or in blocks of the given sizes (the rest last)."""
    meter = StemMeter(sample_rate)
    start = 0
    for size in block_sizes or []:
        meter.add(signal[:, start : start + size])
        start += size
    meter.add(signal[:, start:])
    return meter


def random_block_sizes(samples: int, seed: int) -> list[int]:
    """Random block sizes, from 0 and 1 sample to ~1.5 s, covering about `samples`."""
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 7, 4409, 4410, 4411]
    while sum(sizes) < samples:
        sizes.append(int(rng.integers(1, 66_000)))
    return sizes


@pytest.mark.parametrize("sample_rate", RATES)
@pytest.mark.parametrize("seconds", [12.0, 12.03, 12.05, 12.06, 0.4, 0.45, 0.55, 3.01])
def test_integrated_loudness_matches_pyloudnorm(sample_rate, seconds):
    # 12.06 s: pyloudnorm rounds its block count up, its last block runs past the end; 12.03 s: it is dropped
    signal = music(seconds, sample_rate)
    meter = fed(signal, sample_rate, random_block_sizes(signal.shape[1], seed=1))
    assert meter.loudness.integrated_lufs() == pytest.approx(reference_lufs(signal, sample_rate), abs=1e-9)


@pytest.mark.parametrize("sample_rate", RATES)
def test_measure_mix_matches_pyloudnorm(sample_rate):
    mix = music(20.0, sample_rate, seed=3)
    assert measure_mix(mix, sample_rate) == pytest.approx(reference_lufs(mix, sample_rate), abs=1e-9)


@pytest.mark.parametrize("sample_rate", RATES)
def test_full_scale_997_hz_sine_reads_as_bs1770_says(sample_rate):
    one_channel = fed(sine(10.0, sample_rate, (1.0, 0.0)), sample_rate).loudness.integrated_lufs()
    both_channels = fed(sine(10.0, sample_rate, (1.0, 1.0)), sample_rate).loudness.integrated_lufs()
    # BS.1770-4: a 0 dBFS 1 kHz sine in the left (or right) channel reads -3.01 LKFS; pyloudnorm's
    # K-weighting (RBJ designs, not the standard's 48 kHz coefficients) is a few hundredths off at 997 Hz
    assert one_channel == pytest.approx(-3.01, abs=0.1)
    assert one_channel == pytest.approx(
        reference_lufs(sine(10.0, sample_rate, (1.0, 0.0)), sample_rate), abs=1e-9
    )
    # channels add power: the same sine in both reads 10·log10(2) = 3.01 LU louder, about 0 LUFS
    assert both_channels - one_channel == pytest.approx(10 * math.log10(2), abs=1e-9)
    assert both_channels == pytest.approx(0.0, abs=0.1)
    assert fed(sine(10.0, sample_rate, (1.0, 1.0)), sample_rate).figures(
        both_channels
    ).peak_dbfs == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("sample_rate", RATES)
def test_figures_do_not_depend_on_block_sizes(sample_rate):
    mix = music(30.0, sample_rate)
    stem = mix * np.float32(0.3)
    stem[:, round(20.0 * sample_rate) :] = 0.0
    mix_lufs = measure_mix(mix, sample_rate)
    whole = fed(stem, sample_rate)
    cut = fed(stem, sample_rate, random_block_sizes(stem.shape[1], seed=2))
    assert cut.loudness.frames == whole.loudness.frames == stem.shape[1]
    np.testing.assert_allclose(
        cut.loudness.short_term_lufs(), whole.loudness.short_term_lufs(), rtol=0, atol=1e-9
    )
    assert cut.loudness.integrated_lufs() == pytest.approx(whole.loudness.integrated_lufs(), abs=1e-9)
    assert cut.figures(mix_lufs) == whole.figures(mix_lufs)


def test_silent_stem_reports_none_and_absent():
    report = fed(np.zeros((2, 441_000), np.float32), 44100).figures(mix_lufs=-14.0)
    assert report == StemFigures(peak_dbfs=None, loudness_lufs=None, active_fraction=0.0, present=False)
    assert json.loads(json.dumps(report.as_dict(), allow_nan=False)) == {
        "peak_dbfs": None,
        "loudness_lufs": None,
        "active_fraction": 0.0,
        "present": False,
    }


def test_stem_below_the_absolute_gate_has_no_loudness_but_a_peak():
    stem = sine(10.0, 44100, (1e-4, 1e-4))  # -80 dBFS: below -70 LUFS
    report = fed(stem, 44100).figures(mix_lufs=-14.0)
    assert report.loudness_lufs is None
    assert report.peak_dbfs == pytest.approx(-80.0, abs=1e-3)
    assert not report.present


def test_stem_active_in_the_first_tenth_of_the_track():
    sample_rate, seconds = 44100, 60.0
    mix = music(seconds, sample_rate, seed=4)
    mix[:, : mix.shape[1] // 3] *= 20.0  # undo music()'s quiet third: level throughout
    mix_lufs = measure_mix(mix, sample_rate)
    stem = mix * np.float32(10 ** (-45 / 20))  # bleed, 45 dB down: never active
    stem[:, : round(0.1 * seconds * sample_rate)] = mix[:, : round(0.1 * seconds * sample_rate)]
    report = fed(stem, sample_rate).figures(mix_lufs)
    assert report.active_fraction == pytest.approx(0.1, abs=SHORT_TERM_WINDOW_SECONDS / seconds)
    assert report.present == (0.1 >= PRESENT_MIN_ACTIVE_FRACTION)
    assert report.present


@pytest.mark.parametrize(
    ("below_mix_db", "active_fraction", "present"),
    [(20.0, 1.0, True), (ACTIVE_BELOW_MIX_LU + 5.0, 0.0, False), (40.0, 0.0, False)],
)
def test_active_within_the_threshold_below_the_mix(below_mix_db, active_fraction, present):
    mix = sine(20.0, 44100, (0.5, 0.5))
    stem = mix * np.float32(10 ** (-below_mix_db / 20))
    report = fed(stem, 44100).figures(measure_mix(mix, 44100))
    assert (report.active_fraction, report.present) == (active_fraction, present)


@pytest.mark.parametrize("gain", [0.5, 0.891, 1e-3])
def test_gain_gives_the_figures_of_the_scaled_stem(gain):
    sample_rate = 48000
    mix = music(20.0, sample_rate, seed=5)
    mix_lufs = measure_mix(mix, sample_rate)
    stem = mix * np.float32(1.2)  # a stem that clips; the writer scales it by `gain`
    meter = fed(stem, sample_rate, random_block_sizes(stem.shape[1], seed=6))
    plain = meter.figures(mix_lufs)
    meter.gain = gain  # as the encoder sets it once it has seen the whole stem
    report = meter.figures(mix_lufs)
    scaled = fed(stem.astype(np.float64) * gain, sample_rate)
    for got, expected in zip(vars(report).values(), vars(scaled.figures(mix_lufs)).values(), strict=True):
        assert got == pytest.approx(expected, abs=1e-9)
    if gain > 0.1:  # far from the absolute gate: only the level moves
        shift_db = 20 * math.log10(gain)
        assert report.loudness_lufs - plain.loudness_lufs == pytest.approx(shift_db, abs=1e-9)
        assert report.peak_dbfs - plain.peak_dbfs == pytest.approx(shift_db, abs=1e-9)
    else:  # 60 dB down: the absolute gate now leaves most of the stem out
        assert report.active_fraction < plain.active_fraction


def test_silent_mix_makes_no_stem_present():
    mix_lufs = measure_mix(np.zeros((2, 441_000), np.float32), 44100)
    assert mix_lufs == -math.inf
    loud = fed(music(10.0, 44100), 44100)
    for reference in (mix_lufs, None):
        report = loud.figures(reference)
        assert (report.active_fraction, report.present) == (0.0, False)
        assert report.loudness_lufs is not None
        json.dumps(report.as_dict(), allow_nan=False)


@pytest.mark.parametrize("samples", [0, 1, 17_639])
def test_shorter_than_a_gating_block_has_no_loudness(samples):
    meter = fed(sine(1.0, 44100, (0.5, 0.5))[:, :samples], 44100)
    assert meter.loudness.integrated_lufs() == -math.inf
    assert meter.figures(-14.0).loudness_lufs is None


def test_as_dict_is_rounded_json():
    report = StemFigures(peak_dbfs=-0.123456, loudness_lufs=-14.98765, active_fraction=0.123456, present=True)
    assert json.dumps(report.as_dict(), allow_nan=False) == (
        '{"peak_dbfs": -0.12, "loudness_lufs": -14.99, "active_fraction": 0.1235, "present": true}'
    )


def test_rates_without_whole_samples_per_100_ms_are_refused():
    with pytest.raises(ValueError, match="11025"):
        LoudnessMeter(11025)


def test_measuring_a_mix_holds_no_track_sized_copy():
    mix = music(60.0, 44100, seed=7)  # 10 MiB float32 per channel
    tracemalloc.start()
    measure_mix(mix, 44100)
    peak_bytes = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak_bytes < mix.nbytes / 2  # a float64 copy of the mix would be 2 x its size
