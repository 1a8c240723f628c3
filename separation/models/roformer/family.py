"""What BS-RoFormer and Mel-Band RoFormer share, inference only: the STFT, per-band input projections, the
axial stack of time and band transformers, per-band mask estimators run a bounded group of heads at a
time, the masked spectrum and the iSTFT.

A member differs in two places only: which spectrum bins feed each band (`band_inputs`), and how a head's
per-band outputs become one mask over the whole spectrum (`spectrum_mask`). It also says how deep its mask
MLPs are for a config's `mask_estimator_depth`, and whether each transformer or the stack as a whole ends
in an RMSNorm, because the two members' checkpoints were trained so.

The module tree reproduces the state_dict layout of the checkpoints trained with the
Music-Source-Separation-Training code (MSST), so they load strictly, and the forward pass computes what
that code computed when their published scores were measured.

Einops letters: b batch, s audio channel, f frequency bin, t STFT frame, c real/imag,
k band, n stem (mask head), d feature.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from itertools import pairwise

import torch
from einops import pack, rearrange, unpack
from torch import nn

from .memory import heads_per_group
from .transformer import RMSNorm, RotaryEmbedding, Transformer

# Config keys that only shape training (losses, regularisation, kernel choice): accepted so a
# config's `model` section can be passed as is, and ignored at inference.
TRAINING_ONLY_KEYS = frozenset(
    {
        "attn_dropout",
        "ff_dropout",
        "flash_attn",
        "dim_freqs_in",
        "multi_stft_resolution_loss_weight",
        "multi_stft_resolutions_window_sizes",
        "multi_stft_hop_size",
        "multi_stft_normalized",
        "use_torch_checkpoint",
    }
)


def check_options(model_name: str, extra: dict, allowed: frozenset[str], unsupported: dict) -> None:
    """TypeError for a config key the model does not know; ValueError for an option set that is not
    implemented (`unsupported`: {key: value}, any true value is refused)."""
    unknown = set(extra) - allowed
    if unknown:
        raise TypeError(f"{model_name} got unknown config keys: {sorted(unknown)}")
    refused = sorted(key for key, value in unsupported.items() if value)
    if refused:
        raise ValueError(
            f"{model_name}: {', '.join(refused)} not implemented (linear attention, skips, PoPE)"
        )


class BandSplit(nn.Module):
    """Per band: RMSNorm then a linear map from the band's packed spectrum to `dim` features."""

    def __init__(self, dim: int, band_widths: Sequence[int]):
        super().__init__()
        self.band_widths = list(band_widths)
        self.to_features = nn.ModuleList(nn.Sequential(RMSNorm(w), nn.Linear(w, dim)) for w in band_widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, t, sum(band_widths)] -> [b, t, bands, dim]"""
        bands = x.split(self.band_widths, dim=-1)
        return torch.stack(
            [to_feature(band) for band, to_feature in zip(bands, self.to_features, strict=True)], dim=-2
        )


def mask_mlp(dim: int, dim_out: int, dim_hidden: int, hidden_layers: int) -> nn.Sequential:
    """Linear layers dim -> hidden (x hidden_layers) -> dim_out with tanh between them."""
    dims = [dim, *[dim_hidden] * hidden_layers, dim_out]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(pairwise(dims)):
        if i > 0:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """Per band: an MLP from `dim` features to a gated (GLU) complex mask of the band's inputs."""

    def __init__(self, dim: int, band_widths: Sequence[int], hidden_layers: int, mlp_expansion_factor: int):
        super().__init__()
        self.band_widths = list(band_widths)
        self.to_freqs = nn.ModuleList(
            nn.Sequential(mask_mlp(dim, 2 * w, dim * mlp_expansion_factor, hidden_layers), nn.GLU(dim=-1))
            for w in band_widths
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, t, bands, dim] -> [b, t, sum(band_widths)]"""
        return torch.cat(
            [mlp(band) for band, mlp in zip(x.unbind(dim=-2), self.to_freqs, strict=True)], dim=-1
        )


class Roformer(nn.Module, ABC):
    """STFT -> bands -> axial (time, band) transformers -> a mask per head -> masked spectrum -> iSTFT.

    Members pass their band geometry and their checkpoints' conventions: `band_widths`, the packed
    input width of each band (bins x channels x 2); `mask_hidden_layers`, the hidden layers of each
    band's mask MLP; `norm_each_transformer`, an RMSNorm at the end of every transformer (Mel-Band)
    instead of one `final_norm` after the stack (BS). `zero_dc` sets the DC bin of the masked
    spectrum to 0 before the iSTFT, as MSST does since 2025-09.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        band_widths: Sequence[int],
        stereo: bool,
        num_stems: int,
        time_transformer_depth: int,
        freq_transformer_depth: int,
        dim_head: int,
        heads: int,
        stft_n_fft: int,
        stft_hop_length: int,
        stft_win_length: int,
        stft_normalized: bool,
        mask_hidden_layers: int,
        mlp_expansion_factor: int,
        norm_each_transformer: bool,
        zero_dc: bool,
    ):
        super().__init__()
        self.dim = dim
        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.n_fft, self.hop_length, self.win_length = stft_n_fft, stft_hop_length, stft_win_length
        self.stft_normalized = stft_normalized
        self.zero_dc = zero_dc

        # registration order = the checkpoint's key order: layers, (final_norm), band_split, mask_estimators
        time_rotary, freq_rotary = RotaryEmbedding(dim_head), RotaryEmbedding(dim_head)
        norm_output = norm_each_transformer
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Transformer(dim, time_transformer_depth, heads, dim_head, time_rotary, norm_output),
                    Transformer(dim, freq_transformer_depth, heads, dim_head, freq_rotary, norm_output),
                ]
            )
            for _ in range(depth)
        )
        self.final_norm = nn.Identity() if norm_each_transformer else RMSNorm(dim)
        self.band_split = BandSplit(dim, band_widths)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, band_widths, mask_hidden_layers, mlp_expansion_factor)
            for _ in range(num_stems)
        )

    @abstractmethod
    def band_inputs(self, spec: torch.Tensor) -> torch.Tensor:
        """The spectrum [b, s, f, t] complex -> the bands' inputs, packed band after band:
        [b, t, sum(band_widths)] float32, each bin's channels in turn as (real, imag) pairs."""

    @abstractmethod
    def spectrum_mask(self, estimate: torch.Tensor) -> torch.Tensor:
        """A head's per-band outputs [b, t, sum(band_widths)] -> its mask over the spectrum
        [b, s, f, t, c] float32 (a view where no arithmetic is needed)."""

    def _stft_kwargs(self, device: torch.device) -> dict:
        """The STFT's settings, shared by the analysis and the synthesis."""
        window = torch.hann_window(self.win_length, device=device)
        return dict(
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            normalized=self.stft_normalized,
        )

    def forward(self, audio: torch.Tensor, heads: Sequence[int] | None = None) -> torch.Tensor:
        """[batch, channels, samples] -> [batch, len(heads), channels, samples]

        `heads` are the mask estimators to run, by index, in the output's order (None: all of them);
        the others are not computed. The trunk runs once; then the heads run `heads_per_group` at a
        time (masks, masked spectrum, iSTFT), each group written into the output and freed before the
        next, so the memory in flight does not grow with the number of heads. Each group computes
        what one pass over all the heads computes.
        """
        heads = range(self.num_stems) if heads is None else heads
        batch, channels, samples = audio.shape
        if channels != self.audio_channels:
            raise ValueError(
                f"the model takes {self.audio_channels} audio channels, the input has {channels}"
            )
        stft_kwargs = self._stft_kwargs(audio.device)

        flat, packed_shape = pack([audio.float()], "* t")
        spec = torch.stft(flat, **stft_kwargs, return_complex=True)  # [(b s), f, t] complex
        (spec,) = unpack(spec, packed_shape, "* f t")  # [b, s, f, t]

        # the stream is copied from one axis to the other once (pack would reshape, then concatenate),
        # and the copy replaces it before a transformer runs (a view would keep it alive)
        x = rearrange(self.band_split(self.band_inputs(spec)), "b t k d -> (b t) k d")
        for time_transformer, freq_transformer in self.layers:
            x = rearrange(x, "(b t) k d -> (b k) t d", b=batch).contiguous()
            x = time_transformer(x)
            x = rearrange(x, "(b k) t d -> (b t) k d", b=batch).contiguous()
            x = freq_transformer(x)
        x = self.final_norm(rearrange(x, "(b t) k d -> b t k d", b=batch))  # [b, t, k, d]

        out = torch.empty(batch, len(heads), self.audio_channels, samples, device=audio.device)
        group_size = heads_per_group(self, batch, samples)
        for first in range(0, len(heads), group_size):
            group = heads[first : first + group_size]
            out[:, first : first + len(group)] = self._apply_heads(x, spec, group, stft_kwargs, samples)
        return out  # [b, n, s, t]

    def _apply_heads(
        self, x: torch.Tensor, spec: torch.Tensor, heads: Sequence[int], stft_kwargs: dict, samples: int
    ) -> torch.Tensor:
        """Features [b, t, k, d] and the spectrum [b, s, f, t] -> these heads' audio [b, n, s, samples].

        The iSTFT is given `length=samples`, as MSST gives it since 2024-09; code that passes no length
        returns the first hop x (frames - 1) of these samples, the same values (see `frames`).
        """
        masked = spec[:, None] * torch.view_as_complex(self._masks(x, heads))  # [b, n, s, f, t]
        if self.zero_dc:
            masked[..., 0, :] = 0  # the DC bin of every frame, after masking (MSST 0.1.0)

        flat, packed_shape = pack([masked], "* f t")
        out = torch.istft(flat, **stft_kwargs, length=samples)  # [(b n s), t]
        (out,) = unpack(out, packed_shape, "* t")
        return out  # [b, n, s, t]

    def _masks(self, x: torch.Tensor, heads: Sequence[int]) -> torch.Tensor:
        """Features [b, t, k, d] -> these heads' masks [b, n, s, f, t, c], float32, one head at a time.

        The caller multiplies the spectrum into a new tensor: into this buffer in place, the product
        rounds differently from the one the published scores were computed with.
        """
        batch, frames, _, _ = x.shape
        bins = self.n_fft // 2 + 1
        masks = torch.empty(batch, len(heads), self.audio_channels, bins, frames, 2, device=x.device)
        for mask, head in zip(masks.unbind(dim=1), heads, strict=True):
            mask.copy_(self.spectrum_mask(self.mask_estimators[head](x)))  # [b, s, f, t, c]
        return masks

    def frames(self, samples: int) -> int:
        """STFT frames of `samples` samples (centred): frame i is centred on sample i x hop.

        Without `length`, the centred iSTFT returns hop x (frames - 1) samples: those up to the last
        frame's centre. With `length=samples` it returns the same overlap-added values divided by the
        same window envelope there, and beyond them the samples up to `samples`, which the last frame
        still covers (hop <= n_fft / 2); it pads nothing.
        """
        return samples // self.hop_length + 1
