"""Mel-Band RoFormer (Wang et al., 2023, arXiv 2310.01809), inference only: the family member whose bands
are the supports of a mel filter bank, so neighbouring bands share bins.

It loads the checkpoints trained with the Music-Source-Separation-Training code (MSST) strictly (e.g.
Kimberley Jensen's vocals model, configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml) and
computes what MSST 0.1.0's `MelBandRoformer` computes, to float32 rounding. What it shares with BS-RoFormer
(transformers, STFT, heads in groups) is `family.py`'s.

Band k takes the bins where the k-th triangle of librosa's Slaney mel filter bank (`librosa.filters.mel`
with its defaults) is positive, every audio channel of them. A head's outputs for a bin that several bands
share are averaged: summed over the bands, divided by their number.

Einops letters: b batch, s audio channel, f frequency bin, t STFT frame, c real/imag, k band,
i a (band, bin) pair of the band table, in band order, bins ascending within a band.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange, repeat

from .family import TRAINING_ONLY_KEYS, Roformer, check_options

# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above
SLANEY_HZ_PER_MEL = 200.0 / 3  # the linear part's slope
SLANEY_LOG_START_HZ = 1000.0  # where the logarithmic part starts
SLANEY_LOG_START_MEL = SLANEY_LOG_START_HZ / SLANEY_HZ_PER_MEL
SLANEY_LOG_STEP = np.log(6.4) / 27.0  # natural log of the frequency ratio of one mel above 1 kHz


def slaney_mel_of_hz(hz: float) -> float:
    """A frequency in Hz on Slaney's mel scale (float64, librosa's arithmetic for a scalar)."""
    if hz < SLANEY_LOG_START_HZ:
        return hz / SLANEY_HZ_PER_MEL
    return SLANEY_LOG_START_MEL + np.log(hz / SLANEY_LOG_START_HZ) / SLANEY_LOG_STEP


def slaney_hz_of_mels(mels: np.ndarray) -> np.ndarray:
    """Slaney mels [n] -> Hz [n] (float64, librosa's arithmetic for an array)."""
    hz = SLANEY_HZ_PER_MEL * mels
    logarithmic = mels >= SLANEY_LOG_START_MEL
    hz[logarithmic] = SLANEY_LOG_START_HZ * np.exp(
        SLANEY_LOG_STEP * (mels[logarithmic] - SLANEY_LOG_START_MEL)
    )
    return hz


def mel_band_table(sample_rate_hz: int, n_fft: int, num_bands: int) -> torch.Tensor:
    """Which STFT bins each band takes: [num_bands, n_fft // 2 + 1] bool.

    `librosa.filters.mel(sr=sample_rate_hz, n_fft=n_fft, n_mels=num_bands) > 0`, computed here without
    librosa: triangle k rises from mel edge k to edge k + 1 and falls to edge k + 2 (num_bands + 2 edges
    evenly spaced in mels from 0 Hz to Nyquist), so it is positive exactly strictly between edges k and
    k + 2. Then, as the checkpoints were trained: bin 0 (0 Hz, on band 0's lower edge) is put in band 0
    and the Nyquist bin (on the last band's upper edge) in the last band.
    """
    bin_hz = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate_hz)  # [f]
    edge_mels = np.linspace(0.0, slaney_mel_of_hz(sample_rate_hz / 2), num_bands + 2)
    edge_hz = slaney_hz_of_mels(edge_mels)  # [k + 2]
    table = (edge_hz[:-2, None] < bin_hz) & (bin_hz < edge_hz[2:, None])  # [k, f]
    table[0, 0] = table[-1, -1] = True
    return torch.from_numpy(table)


class MelBandRoformer(Roformer):
    """Mel-Band RoFormer: band k is the bins of mel triangle k (`mel_band_table`), all channels.

    The keyword arguments are the `model` section of an MSST-style config; defaults are those of MSST
    0.1.0's `MelBandRoformer` except `zero_dc`, off as when the published checkpoints were scored (MSST
    zeroes the DC bin by default since 2025-09). Each transformer ends in an RMSNorm and there is no
    final norm; a mask MLP has `mask_estimator_depth` hidden layers (one more than BS-RoFormer's for the
    same value: MSST counts the depth differently in the two models).
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        stereo: bool = False,
        num_stems: int = 1,
        time_transformer_depth: int = 2,
        freq_transformer_depth: int = 2,
        linear_transformer_depth: int = 0,
        num_bands: int = 60,
        dim_head: int = 64,
        heads: int = 8,
        sample_rate: int = 44100,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        mask_estimator_depth: int = 1,
        mlp_expansion_factor: int = 4,
        skip_connection: bool = False,
        use_pope: bool = False,
        zero_dc: bool = False,
        **training_only,
    ):
        check_options(
            "MelBandRoformer",
            training_only,
            # our output always has the input's length (see `Roformer.frames`)
            TRAINING_ONLY_KEYS | {"match_input_audio_length"},
            {
                "linear_transformer_depth": linear_transformer_depth,
                "skip_connection": skip_connection,
                "use_pope": use_pope,
            },
        )
        table = mel_band_table(sample_rate, stft_n_fft, num_bands)  # [k, f] bool, on the CPU
        if not table.any(dim=0).all() or not table.any(dim=1).all():
            raise ValueError(
                f"{num_bands} mel bands of a {stft_n_fft}-point STFT leave a band or a bin empty"
            )
        audio_channels = 2 if stereo else 1
        super().__init__(
            dim=dim,
            depth=depth,
            band_widths=[2 * audio_channels * bins for bins in table.sum(dim=1).tolist()],
            stereo=stereo,
            num_stems=num_stems,
            time_transformer_depth=time_transformer_depth,
            freq_transformer_depth=freq_transformer_depth,
            dim_head=dim_head,
            heads=heads,
            stft_n_fft=stft_n_fft,
            stft_hop_length=stft_hop_length,
            stft_win_length=stft_win_length,
            stft_normalized=stft_normalized,
            mask_hidden_layers=mask_estimator_depth,
            mlp_expansion_factor=mlp_expansion_factor,
            norm_each_transformer=True,
            zero_dc=zero_dc,
        )
        self.band_table = table
        # Plain CPU tensors, not buffers: the model may be built on the meta device and given its weights
        # later; `_on` keeps a copy per device.
        _, bins = table.nonzero(as_tuple=True)  # [i]: band by band, bins ascending
        channel = torch.arange(audio_channels, device="cpu")
        # rows of the spectrum packed as (f s): bin-major, channels interleaved (f * channels + s)
        self.band_rows = rearrange(bins[:, None] * audio_channels + channel, "i s -> (i s)")
        self.bands_per_row = repeat(table.sum(dim=0).float(), "f -> (f s) 1", s=audio_channels)
        self._device_copies: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(band_rows, bands_per_row) on `device`."""
        if device not in self._device_copies:
            self._device_copies[device] = (self.band_rows.to(device), self.bands_per_row.to(device))
        return self._device_copies[device]

    def band_inputs(self, spec: torch.Tensor) -> torch.Tensor:
        """[b, s, f, t] complex -> [b, t, (i s c)]: each band's rows gathered, band after band."""
        band_rows, _ = self._on(spec.device)
        rows = rearrange(torch.view_as_real(spec), "b s f t c -> b t (f s) c")  # a view
        return rearrange(rows.index_select(2, band_rows), "b t r c -> b t (r c)")

    def spectrum_mask(self, estimate: torch.Tensor) -> torch.Tensor:
        """[b, t, (i s c)] -> [b, s, f, t, c]: each row's outputs summed over the bands that take it,
        divided by their number."""
        band_rows, bands_per_row = self._on(estimate.device)
        batch, frames, _ = estimate.shape
        summed = estimate.new_zeros(batch, frames, len(bands_per_row), 2)  # [b, t, (f s), c]
        summed.index_add_(2, band_rows, rearrange(estimate, "b t (r c) -> b t r c", c=2))
        summed /= bands_per_row
        return rearrange(summed, "b t (f s) c -> b s f t c", s=self.audio_channels)
