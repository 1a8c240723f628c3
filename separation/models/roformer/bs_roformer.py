"""Band-Split RoFormer (Lu et al., 2023, arXiv 2309.02612), inference only.

The module tree reproduces the state_dict layout of the checkpoints trained with the
Music-Source-Separation-Training code (e.g. viperx `model_bs_roformer_ep_317_sdr_12.9755.ckpt`,
699 keys; MVSep Mega-53, 53 mask estimators, 13,595 keys), so they load strictly, and the forward
pass computes what that code computed when the published SDRs were measured (iSTFT trimmed to the
input length; the zero-DC step of MSST 0.1.0 where the config sets `zero_dc`).

`forward(audio, heads)` computes only the mask estimators ("heads") it is given, a bounded group at a
time (`roformer_memory.py` sizes the groups and bounds what one forward pass allocates). Loading a
checkpoint (the trunk, then each head on first use) is `roformer_checkpoint.py`'s.

Einops letters: b batch, s audio channel, f frequency bin, t STFT frame, c real/imag,
k band, n stem, h head, d feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from einops import pack, rearrange, unpack
from torch import nn

from .memory import heads_per_group

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

# Largest temporary of one group of sequences in the CPU transformer loop. glibc serves requests
# below its mmap threshold (at most 32 MiB) from a heap it reuses; larger ones get fresh pages
# each time, and faulting in and zeroing those took a fifth of a full-size forward's CPU time.
CPU_BLOCK_BYTES = 16 * 2**20


class RMSNorm(nn.Module):
    """x / ||x||_2 * sqrt(dim) * gamma, over the last dimension."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., dim] -> [..., dim]"""
        return F.normalize(x, dim=-1).mul_(self.gamma * self.scale)  # scaled where it was written


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over interleaved pairs of the head dimension.

    Each pair (x[2i], x[2i+1]) is rotated by the angle position * freqs[i], computed as a
    complex product. `freqs` is stored in the checkpoint (1 / 10000^(2i/dim_head)); the
    rotation table for a sequence length is derived from it once and cached.
    """

    def __init__(self, dim_head: int, theta: float = 10000.0):
        super().__init__()
        # computed on the CPU even under a meta-device build: a meta `pow` costs ~2 s of imports
        exponents = torch.arange(0, dim_head, 2, device="cpu")[: dim_head // 2].float() / dim_head
        freqs = (1.0 / theta**exponents).to(torch.get_default_device())
        self.freqs = nn.Parameter(freqs, requires_grad=False)  # [dim_head / 2]
        self._rotations: dict[tuple, torch.Tensor] = {}

    def _rotation(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """Unit complex numbers e^(i * position * freq): [seq_len, dim_head / 2] complex64."""
        key = (seq_len, device, self.freqs.data_ptr())
        if key not in self._rotations:
            positions = torch.arange(seq_len, device=device, dtype=torch.float32)
            angles = positions[:, None] * self.freqs.to(device=device, dtype=torch.float32)  # [n, d / 2]
            self._rotations = {key: torch.polar(torch.ones_like(angles), angles)}
        return self._rotations[key]

    def rotate_(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate queries and keys in place: [..., seq, dim_head], any strides with a contiguous last dim.

        One elementwise pass with float32 arithmetic and one rounding to the input's dtype: float16
        pairs are read as complex32 and the product is written back as complex32, so the fp16 path
        costs no float32 copies. bfloat16 has no complex type and goes through float32.
        """
        if x.dtype == torch.bfloat16:
            return x.copy_(self.rotate_(x.float()))
        rotation = self._rotation(x.shape[-2], x.device)  # [seq, dim_head / 2] complex64
        pairs = as_complex_pairs(x)
        torch.mul(pairs, rotation, out=pairs)
        return x


def as_complex_pairs(x: torch.Tensor) -> torch.Tensor:
    """View [..., dim] real as [..., dim / 2] complex, pairing neighbours (x[2i] + i x[2i+1])."""
    return torch.view_as_complex(rearrange(x, "... (d r) -> ... d r", r=2))


def add_linear_(residual: torch.Tensor, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """residual += linear(x), in place: [..., dim_out] contiguous, x [..., dim_in] -> residual.

    The product accumulates straight into the residual stream (one GEMM with beta = 1): no output
    tensor, no separate add pass. Autocast does not reach in-place ops, so the weights are cast
    to the stream's dtype here (a no-op in fp32).
    """
    flat = residual.view(-1, residual.shape[-1])  # must alias the residual: .view raises rather than copy
    flat.addmm_(rearrange(x, "... d -> (...) d").to(residual.dtype), linear.weight.to(residual.dtype).t())
    if linear.bias is not None:
        flat.add_(linear.bias.to(residual.dtype))
    return residual


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions and a sigmoid gate per head."""

    def __init__(self, dim: int, heads: int, dim_head: int, rotary_embed: RotaryEmbedding):
        super().__init__()
        self.heads = heads
        self.rotary_embed = rotary_embed
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x += attention(x), in place: [batch, seq, dim] contiguous -> the same tensor."""
        normed = self.norm(x)
        qkv = rearrange(self.to_qkv(normed), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
        self.rotary_embed.rotate_(qkv[:2])  # queries and keys together, in the projection's buffer
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [b, h, n, d]
        gates = rearrange(self.to_gates(normed), "b n h -> b n h 1").sigmoid()
        # gate and bring heads next to features in one pass: in place where the kernel wrote that layout
        merged = rearrange(out, "b h n d -> b n h d")
        gated = (
            merged
            if merged.is_contiguous()
            else torch.empty_like(merged, memory_format=torch.contiguous_format)
        )
        torch.mul(merged, gates, out=gated)
        (to_out,) = self.to_out
        return add_linear_(x, rearrange(gated, "b n h d -> b n (h d)"), to_out)


class FeedForward(nn.Module):
    """Pre-norm MLP with exact GELU (applied in place). The GELU and dropout slots keep the
    checkpoint's module indices."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            RMSNorm(dim),
            nn.Linear(dim, dim * mult),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(dim * mult, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x += feed_forward(x), in place: [batch, seq, dim] contiguous -> the same tensor."""
        norm, project_in, _, _, project_out = self.net
        hidden = torch.ops.aten.gelu_(project_in(norm(x)))  # [batch, seq, mult * dim], exact GELU in place
        return add_linear_(x, hidden, project_out)


class Transformer(nn.Module):
    """`depth` residual blocks of attention then feed-forward, no output norm."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, rotary_embed: RotaryEmbedding):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head, rotary_embed), FeedForward(dim)])
            for _ in range(depth)
        )
        self.hidden_dim = self.layers[0][1].net[1].out_features  # the feed-forward's widest layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, dim] -> [batch, seq, dim]; the residual stream is updated in place.

        On the CPU the sequences go through in groups whose largest temporary (the feed-forward
        hidden layer) stays within CPU_BLOCK_BYTES: memory the allocator reuses from its heap
        and the caches still hold, instead of fresh pages the kernel must fault in and zero.
        """
        x = x.contiguous()
        batch, seq, _ = x.shape
        for sequences in x.split(self.sequences_per_group(batch, seq, x.element_size(), x.device.type)):
            for attention, feed_forward in self.layers:
                feed_forward(attention(sequences))
        return x

    def sequences_per_group(self, batch: int, seq: int, element_bytes: int, device_type: str) -> int:
        """How many of `batch` sequences `forward` processes together: all of them, or on the CPU as
        many as keep the feed-forward hidden layer within CPU_BLOCK_BYTES (at least one)."""
        if device_type != "cpu":
            return batch
        return max(1, min(batch, CPU_BLOCK_BYTES // (seq * self.hidden_dim * element_bytes)))


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


def mask_mlp(dim: int, dim_out: int, dim_hidden: int, depth: int) -> nn.Sequential:
    """Linear layers dim -> hidden (x depth-1) -> dim_out with tanh between them."""
    dims = [dim, *[dim_hidden] * (depth - 1), dim_out]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(pairwise(dims)):
        if i > 0:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """Per band: an MLP from `dim` features to a gated (GLU) complex mask of the band."""

    def __init__(self, dim: int, band_widths: Sequence[int], depth: int, mlp_expansion_factor: int):
        super().__init__()
        self.band_widths = list(band_widths)
        self.to_freqs = nn.ModuleList(
            nn.Sequential(mask_mlp(dim, 2 * w, dim * mlp_expansion_factor, depth), nn.GLU(dim=-1))
            for w in band_widths
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[b, t, bands, dim] -> [b, t, sum(band_widths)]"""
        return torch.cat(
            [mlp(band) for band, mlp in zip(x.unbind(dim=-2), self.to_freqs, strict=True)], dim=-1
        )


class BSRoformer(nn.Module):
    """Band-Split RoFormer: STFT -> band split -> axial (time, band) transformers -> masks -> iSTFT.

    The keyword arguments are the `model` section of an MSST-style config. `zero_dc` sets the DC bin
    of the masked spectrum to 0 before the iSTFT, as MSST does since 2025-09 (Mega-53 was scored so);
    off by default, as when the viperx checkpoint was scored.
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
        super().__init__()
        unknown = set(training_only) - TRAINING_ONLY_KEYS
        if unknown:
            raise TypeError(f"BSRoformer got unknown config keys: {sorted(unknown)}")
        if linear_transformer_depth or skip_connection:
            raise ValueError("linear-attention transformers and skip connections are not implemented")

        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.n_fft, self.hop_length, self.win_length = stft_n_fft, stft_hop_length, stft_win_length
        self.stft_normalized = stft_normalized
        self.zero_dc = zero_dc
        num_bins = stft_n_fft // 2 + 1
        if sum(freqs_per_bands) != num_bins:
            raise ValueError(f"freqs_per_bands sum to {sum(freqs_per_bands)}, the STFT has {num_bins} bins")
        # a band's input packs (bin, channel, real/imag)
        band_widths = [2 * self.audio_channels * f for f in freqs_per_bands]

        # registration order = the checkpoint's key order: layers, final_norm, band_split, mask_estimators
        time_rotary, freq_rotary = RotaryEmbedding(dim_head), RotaryEmbedding(dim_head)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Transformer(dim, time_transformer_depth, heads, dim_head, time_rotary),
                    Transformer(dim, freq_transformer_depth, heads, dim_head, freq_rotary),
                ]
            )
            for _ in range(depth)
        )
        self.final_norm = RMSNorm(dim)
        self.band_split = BandSplit(dim, band_widths)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, band_widths, mask_estimator_depth, mlp_expansion_factor)
            for _ in range(num_stems)
        )

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
        batch, _, samples = audio.shape
        stft_kwargs = self._stft_kwargs(audio.device)

        flat, packed_shape = pack([audio.float()], "* t")
        spec = torch.stft(flat, **stft_kwargs, return_complex=True)  # [(b s), f, t] complex
        (spec,) = unpack(spec, packed_shape, "* f t")  # [b, s, f, t]
        x = rearrange(torch.view_as_real(spec), "b s f t c -> b t (f s c)")

        # the stream is copied from one axis to the other once (pack would reshape, then concatenate),
        # and the copy replaces it before a transformer runs (a view would keep it alive)
        x = rearrange(self.band_split(x), "b t k d -> (b t) k d")
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
        """Features [b, t, k, d] and the spectrum [b, s, f, t] -> these heads' audio [b, n, s, samples]."""
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
            estimate = self.mask_estimators[head](x)  # [b, t, (f s c)]
            mask.copy_(rearrange(estimate, "b t (f s c) -> b s f t c", s=self.audio_channels, c=2))
        return masks

    def frames(self, samples: int) -> int:
        """STFT frames of `samples` samples (centred)."""
        return samples // self.hop_length + 1
