"""The transformer both RoFormers stack along time and along bands: RMSNorm, rotary positions, gated
attention, feed-forward, in the module layout of the Music-Source-Separation-Training (MSST) checkpoints.

The residual stream is updated in place: a block adds its output into it (one GEMM with beta = 1), and on
the CPU the sequences go through in groups small enough for the allocator to reuse its heap.

Einops letters: b batch, n sequence position, h attention head, d feature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

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
    """`depth` residual blocks of attention then feed-forward, then an RMSNorm of the output where
    `norm_output` (Mel-Band RoFormer's transformers have one, BS-RoFormer's do not)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        rotary_embed: RotaryEmbedding,
        norm_output: bool = False,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head, rotary_embed), FeedForward(dim)])
            for _ in range(depth)
        )
        self.norm = RMSNorm(dim) if norm_output else None  # registered after the layers: the key order
        self.hidden_dim = self.layers[0][1].net[1].out_features  # the feed-forward's widest layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, dim] -> [batch, seq, dim]; the residual stream is updated in place.

        On the CPU the sequences go through in groups whose largest temporary (the feed-forward
        hidden layer) stays within CPU_BLOCK_BYTES: memory the allocator reuses from its heap
        and the caches still hold, instead of fresh pages the kernel must fault in and zero.
        The output norm is per position, so it is applied group by group too, written back.
        """
        x = x.contiguous()
        batch, seq, _ = x.shape
        for sequences in x.split(self.sequences_per_group(batch, seq, x.element_size(), x.device.type)):
            for attention, feed_forward in self.layers:
                feed_forward(attention(sequences))
            if self.norm is not None:
                sequences.copy_(self.norm(sequences))
        return x

    def sequences_per_group(self, batch: int, seq: int, element_bytes: int, device_type: str) -> int:
        """How many of `batch` sequences `forward` processes together: all of them, or on the CPU as
        many as keep the feed-forward hidden layer within CPU_BLOCK_BYTES (at least one)."""
        if device_type != "cpu":
            return batch
        return max(1, min(batch, CPU_BLOCK_BYTES // (seq * self.hidden_dim * element_bytes)))
