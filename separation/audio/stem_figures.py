"""Per-stem presence and loudness figures, measured on the float samples that go to a stem's encoder.

A stem is measured while it streams: `StemMeter.add` takes each block the writer encodes (float [2, n],
full scale 1.0, at the output rate, any block sizes), K-weights it with the filter state carried from the
previous block and keeps only the K-weighted energy of each 100 ms sub-block: one float per 100 ms, 18,000
for 30 minutes. The 400 ms gating blocks of the integrated loudness and the 3 s short-term windows are
sums of consecutive sub-blocks, formed once the stem is complete, so nothing track-sized is kept and the
figures do not depend on how the stem was cut into blocks.

Loudness is ITU-R BS.1770-4 as `pyloudnorm.Meter(rate).integrated_loudness` computes it: the same two
biquads (pyloudnorm's own coefficients, for any rate), channels weighted 1.0 (left and right), gating
blocks every 100 ms, round((T - 0.4 s) / 0.1 s) + 1 of them for T seconds of audio (the last one may run
past the end and counts the missing samples as zeros), the absolute gate at -70 LUFS and the relative one
10 LU below the loudness of the blocks that pass it. Where no block passes (digital silence, anything below
-70 LUFS, less than 400 ms of audio) the loudness is -inf, as pyloudnorm gives it; a report says None.

A writer that scales a clipping stem by a gain g knows g only once the whole stem has been seen: every
figure takes that final gain and is computed for the scaled signal from the stored energies (times g²), so
peak and loudness move by 20·log10(g) and the gates see the scaled levels; nothing is measured twice.

Presence. A stem the song does not have is not silent: it holds the bleed of the other instruments and the
model's artefacts, typically 30-40 dB below the mix, while a real part rarely sits more than 20-25 LU below
the mix's integrated loudness, even where it plays quietly.

- `active_fraction`: the share of the stem's short-term windows (3 s, EBU R128 / Tech 3341, one every
  100 ms: the meter's 10 Hz update) whose loudness is at least the mix's integrated loudness minus
  ACTIVE_BELOW_MIX_LU and at least the absolute gate. 30 LU keeps 5-10 LU of margin below the quietest
  real parts and sits at the top of the range bleed occupies, so only bleed's loudest moments reach it.
- `present`: active_fraction >= PRESENT_MIN_ACTIVE_FRACTION, i.e. audible for at least 5 % of the track
  (15 s of a 5-minute song: a few bars of a solo, an intro riff). Bleed that crosses the threshold does so
  in brief moments (the loudest hits of the mix), a few windows, not 5 % of them; a part that plays for
  less than that is not worth a transcription.

The mix's integrated loudness (`measure_mix`, the same meter on the decoded mix) is the reference. A silent
mix (-inf) gives none: then every stem's active_fraction is 0 and no stem is present.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal
from pyloudnorm import IIRfilter

SUB_BLOCK_SECONDS = 0.1  # energy is kept per sub-block; gating blocks and windows are made of them
GATING_BLOCK_SECONDS = 0.4  # BS.1770 gating block, one every sub-block (75 % overlap)
SHORT_TERM_WINDOW_SECONDS = 3.0  # EBU R128 short-term loudness
SHORT_TERM_HOP_SECONDS = 0.1  # EBU Tech 3341: short-term loudness updates at least 10 times a second
ABSOLUTE_GATE_LUFS = -70.0  # BS.1770
RELATIVE_GATE_LU = 10.0  # BS.1770: gating blocks more than 10 LU below the gated loudness are left out
ACTIVE_BELOW_MIX_LU = 30.0  # a short-term window is active within 30 LU of the mix's integrated loudness
PRESENT_MIN_ACTIVE_FRACTION = 0.05  # a stem is present when active for at least 5 % of the track
MIX_BLOCK_FRAMES = 1 << 18  # measure_mix's blocks: 262,144 frames, 4 MiB of float64 per channel pair

_LOUDNESS_OFFSET_DB = -0.691  # BS.1770: cancels the K-weighting's gain at 1 kHz


def k_weighting_sos(sample_rate: int) -> np.ndarray:
    """The BS.1770 K-weighting at `sample_rate` as second-order sections [2, 6], shelf then high-pass.

    The coefficients are pyloudnorm's (RBJ-cookbook designs), so the filtered signal matches it at any rate.
    """
    shelf = IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sample_rate, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
    return np.stack([np.concatenate([stage.b, stage.a]) for stage in (shelf, high_pass)])


def _lufs(mean_square: np.ndarray | float) -> np.ndarray | float:
    """Loudness in LUFS of a K-weighted mean square summed over channels; -inf for 0."""
    with np.errstate(divide="ignore"):
        return _LOUDNESS_OFFSET_DB + 10.0 * np.log10(mean_square)


def _window_sums(sub_block_energies: np.ndarray, width: int, count: int) -> np.ndarray:
    """Sums [count] of `width` consecutive sub-block energies, one per sub-block, zeros past the end."""
    needed = count + width - 1
    padded = np.pad(sub_block_energies, (0, max(0, needed - sub_block_energies.size)))[:needed]
    return np.lib.stride_tricks.sliding_window_view(padded, width).sum(axis=1)


class LoudnessMeter:
    """Streaming BS.1770-4 loudness of a stereo signal: K-weighted energy per 100 ms sub-block."""

    def __init__(self, sample_rate: int):
        if sample_rate % round(1 / SUB_BLOCK_SECONDS):
            raise ValueError(f"sample rate {sample_rate} Hz is not a whole number of samples per 100 ms")
        self.sample_rate = sample_rate
        self.frames = 0  # samples per channel added so far
        self._sub_block_frames = round(sample_rate * SUB_BLOCK_SECONDS)
        self._sos = k_weighting_sos(sample_rate)
        self._filter_state = np.zeros((self._sos.shape[0], 2, 2))  # [sections, channels, 2]
        # K-weighted sum of squares per sub-block, both channels; the last one may still be open
        self._sub_block_energies: list[float] = []

    def add(self, block: np.ndarray) -> None:
        """Add the next samples, float [2, n]: K-weight them, add their energy to their sub-blocks."""
        if block.shape[1] == 0:
            return
        weighted, self._filter_state = scipy.signal.sosfilt(
            self._sos, block, axis=1, zi=self._filter_state
        )  # [2, n] float64
        energy = np.einsum("cn,cn->n", weighted, weighted)  # [n] summed over the channels
        lacking = -self.frames % self._sub_block_frames  # samples the open sub-block lacks (0: none open)
        starts = np.arange(lacking, energy.size, self._sub_block_frames)
        if lacking:
            starts = np.concatenate([[0], starts])
        sums = np.add.reduceat(energy, starts)  # [sub-blocks touched]
        if lacking:
            self._sub_block_energies[-1] += float(sums[0])
            sums = sums[1:]
        self._sub_block_energies.extend(sums.tolist())
        self.frames += energy.size

    def integrated_lufs(self, gain: float = 1.0) -> float:
        """Gated integrated loudness in LUFS of the signal scaled by `gain`, framed as pyloudnorm frames it.

        -inf where no gating block passes the gates (digital silence, below -70 LUFS, under 400 ms).
        """
        block_frames = round(GATING_BLOCK_SECONDS * self.sample_rate)
        if self.frames < block_frames:
            return -math.inf
        seconds = self.frames / self.sample_rate
        count = int(np.round((seconds - GATING_BLOCK_SECONDS) / SUB_BLOCK_SECONDS)) + 1
        width = round(GATING_BLOCK_SECONDS / SUB_BLOCK_SECONDS)
        mean_squares = _window_sums(self._energies(gain), width, count) / block_frames  # [blocks]
        loudness = _lufs(mean_squares)
        above_absolute = loudness >= ABSOLUTE_GATE_LUFS
        if not above_absolute.any():
            return -math.inf
        relative_gate = _lufs(mean_squares[above_absolute].mean()) - RELATIVE_GATE_LU
        gated = mean_squares[(loudness > relative_gate) & (loudness > ABSOLUTE_GATE_LUFS)]
        return float(_lufs(gated.mean())) if gated.size else -math.inf

    def short_term_lufs(self, gain: float = 1.0) -> np.ndarray:
        """Short-term loudness [windows] in LUFS of the signal scaled by `gain`: 3 s windows every 100 ms.

        The windows run from the start to the one that ends with the last sample; a signal shorter than a
        window has one, zero-padded.
        """
        width = round(SHORT_TERM_WINDOW_SECONDS / SUB_BLOCK_SECONDS)
        hop = round(SHORT_TERM_HOP_SECONDS / SUB_BLOCK_SECONDS)
        energies = self._energies(gain)
        count = max(1, energies.size - width + 1)
        window_frames = round(SHORT_TERM_WINDOW_SECONDS * self.sample_rate)
        return _lufs(_window_sums(energies, width, count)[::hop] / window_frames)

    def _energies(self, gain: float) -> np.ndarray:
        """K-weighted energy per sub-block [sub-blocks] of the signal scaled by `gain`."""
        return np.asarray(self._sub_block_energies) * gain**2


@dataclass(frozen=True)
class StemFigures:
    """How loud a returned stem is and whether it carries a part; None where the stem is digital silence."""

    peak_dbfs: float | None  # sample peak, dBFS
    loudness_lufs: float | None  # BS.1770-4 integrated loudness, LUFS
    active_fraction: float  # share of the 3 s windows within ACTIVE_BELOW_MIX_LU of the mix, 0..1
    present: bool  # active_fraction >= PRESENT_MIN_ACTIVE_FRACTION

    def as_dict(self) -> dict[str, float | bool | None]:
        """The figures as JSON-safe values: no inf or NaN, dB to 0.01, the fraction to 0.0001."""
        return {
            "peak_dbfs": None if self.peak_dbfs is None else round(self.peak_dbfs, 2),
            "loudness_lufs": None if self.loudness_lufs is None else round(self.loudness_lufs, 2),
            "active_fraction": round(self.active_fraction, 4),
            "present": self.present,
        }


def sample_peak(audio: np.ndarray) -> float:
    """max |sample| of float [channels, samples] (0 for no samples), without an |audio| copy."""
    return max(float(audio.max(initial=0.0)), -float(audio.min(initial=0.0)))


class StemMeter:
    """A stem's loudness meter and sample peak, fed block by block as the stem is written."""

    def __init__(self, sample_rate: int):
        self.loudness = LoudnessMeter(sample_rate)
        self._peak = 0.0  # largest |sample| so far, full scale 1.0
        self.gain = 1.0  # what the encoder scaled the stem by (it sets this once it knows)

    def add(self, block: np.ndarray) -> None:
        """Add the next samples of the stem, float [2, n], as they go to the encoder."""
        self.loudness.add(block)
        self._peak = max(self._peak, sample_peak(block))

    def figures(self, mix_lufs: float | None) -> StemFigures:
        """The figures of the stem scaled by the encoder's `gain`, active windows judged against the mix's
        `mix_lufs`."""
        peak = self._peak * self.gain
        loudness = self.loudness.integrated_lufs(self.gain)
        if mix_lufs is None or not math.isfinite(mix_lufs):
            active_fraction = 0.0
        else:
            threshold_lufs = max(mix_lufs - ACTIVE_BELOW_MIX_LU, ABSOLUTE_GATE_LUFS)
            active_fraction = float(np.mean(self.loudness.short_term_lufs(self.gain) >= threshold_lufs))
        return StemFigures(
            peak_dbfs=20.0 * math.log10(peak) if peak > 0 else None,
            loudness_lufs=loudness if math.isfinite(loudness) else None,
            active_fraction=active_fraction,
            present=active_fraction >= PRESENT_MIN_ACTIVE_FRACTION,
        )


def measure_mix(mix: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS of the decoded mix, float [2, samples], fed in views of MIX_BLOCK_FRAMES.

    -inf for a silent mix (see LoudnessMeter.integrated_lufs); StemMeter.figures takes it as no reference.
    """
    meter = LoudnessMeter(sample_rate)
    for start in range(0, mix.shape[1], MIX_BLOCK_FRAMES):
        meter.add(mix[:, start : start + MIX_BLOCK_FRAMES])
    return meter.integrated_lufs()
