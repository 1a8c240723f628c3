"""The models' sample rate, and the one resampler used to reach it (decoding) and to leave it (encoding)."""

from __future__ import annotations

import numpy as np
import soxr

SAMPLE_RATE = 44100  # Hz, the rate every model was trained at
SOXR_QUALITY = "VHQ"


class StreamResampler:
    """soxr VHQ resampling of a signal that arrives in blocks, float32 [channels, n] each, in order.

    The blocks' outputs, followed by `flush()`, are exactly the samples `soxr.resample` gives for the whole
    signal, whatever the block sizes: soxr's stream keeps its state between blocks and its output does not
    depend on where the input was cut (measured with soxr 0.5 and 1.1; tests/test_encode.py checks it).
    """

    def __init__(self, from_rate: int, to_rate: int, channels: int):
        self._channels = channels
        self._soxr = soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality=SOXR_QUALITY)

    def resample(self, block: np.ndarray) -> np.ndarray:
        """The output the next float32 [channels, n] block completes: float32 [channels, m], m >= 0 (soxr
        holds back its filter's delay until `flush`). A view of interleaved [m, channels] samples."""
        return self._soxr.resample_chunk(np.ascontiguousarray(block.T)).T

    def flush(self) -> np.ndarray:
        """The rest of the output once the last block was given: float32 [channels, m]."""
        return self._soxr.resample_chunk(np.zeros((0, self._channels), np.float32), last=True).T
