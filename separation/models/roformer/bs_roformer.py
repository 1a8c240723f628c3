"""Band-Split RoFormer (Lu et al., 2023, arXiv 2309.02612), inference only: the family member whose bands
are contiguous runs of STFT bins, `freqs_per_bands` bins each.

It loads the checkpoints trained with the Music-Source-Separation-Training code strictly (e.g. viperx
`model_bs_roformer_ep_317_sdr_12.9755.ckpt`, 699 keys; MVSep Mega-53, 53 mask estimators, 13,595 keys)
and computes what that code computed when their SDRs were published (iSTFT trimmed to the input length;
the zero-DC step of MSST 0.1.0 where the config sets `zero_dc`). What it shares with Mel-Band RoFormer
(transformers, STFT, heads in groups) is `family.py`'s.

Einops letters: b batch, s audio channel, f frequency bin, t STFT frame, c real/imag.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from .family import TRAINING_ONLY_KEYS, Roformer, check_options


class BSRoformer(Roformer):
    """Band-Split RoFormer: band k is the next `freqs_per_bands[k]` bins of the spectrum, all channels.

    The keyword arguments are the `model` section of an MSST-style config. Its transformers end without
    a norm and the stack with one `final_norm`; a mask MLP has `mask_estimator_depth - 1` hidden layers
    (MSST's BS-RoFormer counts the output layer in the depth, its Mel-Band RoFormer does not). `zero_dc`
    is off by default, as when the viperx checkpoint was scored (Mega-53's config sets it).
    """

    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        freqs_per_bands: Sequence[int],
        stereo: bool = True,
        num_stems: int = 1,
        time_transformer_depth: int = 1,
        freq_transformer_depth: int = 1,
        linear_transformer_depth: int = 0,
        dim_head: int = 64,
        heads: int = 8,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 441,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        mask_estimator_depth: int = 2,
        mlp_expansion_factor: int = 4,
        skip_connection: bool = False,
        zero_dc: bool = False,
        **training_only,
    ):
        check_options(
            "BSRoformer",
            training_only,
            TRAINING_ONLY_KEYS,
            {"linear_transformer_depth": linear_transformer_depth, "skip_connection": skip_connection},
        )
        num_bins = stft_n_fft // 2 + 1
        if sum(freqs_per_bands) != num_bins:
            raise ValueError(f"freqs_per_bands sum to {sum(freqs_per_bands)}, the STFT has {num_bins} bins")
        audio_channels = 2 if stereo else 1
        super().__init__(
            dim=dim,
            depth=depth,
            band_widths=[2 * audio_channels * f for f in freqs_per_bands],  # (bin, channel, real/imag)
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
            mask_hidden_layers=mask_estimator_depth - 1,
            mlp_expansion_factor=mlp_expansion_factor,
            norm_each_transformer=False,
            zero_dc=zero_dc,
        )

    def band_inputs(self, spec: torch.Tensor) -> torch.Tensor:
        """[b, s, f, t] complex -> [b, t, (f s c)]: the bands are consecutive slices of this packing."""
        return rearrange(torch.view_as_real(spec), "b s f t c -> b t (f s c)")

    def spectrum_mask(self, estimate: torch.Tensor) -> torch.Tensor:
        """[b, t, (f s c)] -> [b, s, f, t, c]: the bands' outputs tile the spectrum, a view."""
        return rearrange(estimate, "b t (f s c) -> b s f t c", s=self.audio_channels, c=2)
