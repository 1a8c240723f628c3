"""The models' sample rate, and the one resampler used to reach it and to leave it."""

from __future__ import annotations

import numpy as np
import soxr

SAMPLE_RATE = 44100  # Hz, the rate every model was trained at
SOXR_QUALITY = "VHQ"


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float32 audio [channels, samples] from `from_rate` to `to_rate` Hz with soxr VHQ.

    Returns float32 [channels, round(samples * to_rate / from_rate)].
    """
    if from_rate == to_rate:
        return audio
    resampled = soxr.resample(audio.T, from_rate, to_rate, quality=SOXR_QUALITY)  # [samples, channels]
    return np.ascontiguousarray(resampled.T, dtype=np.float32)
