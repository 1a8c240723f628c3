"""How much one forward pass of a RoFormer of the family (BS-RoFormer, Mel-Band RoFormer) allocates, from a
built model's shapes (on any device, `meta` included): the size of the head groups `Roformer.forward`
computes at once, and `forward_bytes`, the upper estimate a request's chunk and batch size are checked
against before any model loads.

Each function follows the allocations of the `family.py` / `transformer.py` code it names; a change there is
a change here (tests/test_roformer_heads.py measures the estimate against the resident memory of real
forwards, for both members). This module reads a model's attributes and imports none of the model modules:
`model` is a `family.Roformer` (dim, audio_channels, n_fft, hop_length, frames(), layers, band_split,
mask_estimators), `transformer` a `transformer.Transformer`, and so on.
"""

from __future__ import annotations

import torch
from torch import nn

# What one forward pass of a model may allocate (chunk x batch x the model's geometry, estimated in fp32): a
# T4's 16 GB less the loaded models, and what a 16 GB laptop can give the command line. A request whose
# chunk and batch size need more is refused before any model loads, naming a batch size that fits.
MAX_FORWARD_BYTES = 12 * 2**30

# What the mask heads of one forward pass may hold at once (masks, masked spectra, iSTFT buffers): the
# heads run in groups that fit, at least one head per group. A head's buffers scale with batch x chunk,
# like the trunk's activations; grouping them costs no arithmetic (each head's work is the same), and
# larger groups only batch the iSTFT, which gains little.
HEAD_GROUP_BYTES = 256 * 2**20

COMPLEX_BYTES = 8  # complex64: the spectrum, the masks and the masked spectrum
FLOAT_BYTES = 4  # float32: STFT frames, iSTFT buffers, the output, and what F.normalize returns


def attention_bytes_per_token(attention: nn.Module, element_bytes: int) -> int:
    """The most `Attention.forward`'s temporaries hold at once, per token, for a stream of `element_bytes`.

    Below 4 bytes (autocast) the fp32 norm is cast for each projection, and the rotation may go through
    fp32 (bf16; fp16 on the CPU). The attention kernel is a fused one (no seq x seq matrix).
    """
    dim, inner = attention.to_qkv.in_features, attention.to_qkv.out_features // 3  # inner: heads x dim_head
    low_precision = element_bytes < FLOAT_BYTES
    normed = (FLOAT_BYTES + low_precision * element_bytes) * dim  # F.normalize is fp32, and its cast
    qkv = 3 * inner * element_bytes
    rotation = low_precision * 2 * inner * FLOAT_BYTES  # queries and keys in fp32
    attended = (2 * inner + 2 * attention.heads) * element_bytes  # output and gated output; gates
    return normed + qkv + max(rotation, attended)


def feed_forward_bytes_per_token(feed_forward: nn.Module, element_bytes: int) -> int:
    """The most `FeedForward.forward`'s temporaries hold at once, per token, for a stream of
    `element_bytes`."""
    project_in = feed_forward.net[1]
    low_precision = element_bytes < FLOAT_BYTES
    normed = (FLOAT_BYTES + low_precision * element_bytes) * project_in.in_features  # fp32, its cast
    return normed + project_in.out_features * element_bytes


def transformer_group_bytes(
    transformer: nn.Module, batch: int, seq: int, element_bytes: int, device_type: str
) -> int:
    """The most the temporaries of one group of sequences of `Transformer.forward` hold at once, in bytes."""
    tokens = transformer.sequences_per_group(batch, seq, element_bytes, device_type) * seq
    attention, feed_forward = transformer.layers[0]
    return tokens * max(
        attention_bytes_per_token(attention, element_bytes),
        feed_forward_bytes_per_token(feed_forward, element_bytes),
    )


def mask_estimator_bytes_per_frame(estimator: nn.Module, element_bytes: int) -> int:
    """The most `MaskEstimator.forward` holds at once per (batch, frame) for outputs of `element_bytes`: the
    bands' masks and their concatenation, plus the widest band's MLP (its fp32 input copied, and cast).

    It also bounds what a member's `spectrum_mask` holds after it: Mel-Band RoFormer's concatenation and
    the rows it is summed into, which are fewer than the bands' inputs (every row is in a band)."""
    first = estimator.to_freqs[0][0][0]  # dim -> hidden
    dim, hidden = first.in_features, first.out_features
    widest = max(estimator.band_widths)
    band = (FLOAT_BYTES + element_bytes) * dim + (2 * hidden + 3 * widest) * element_bytes
    return 2 * sum(estimator.band_widths) * element_bytes + band


def head_bytes(model: nn.Module, batch: int, samples: int) -> int:
    """The most one head of a group holds at once, in bytes (its outputs counted as float32, the widest).

    Its mask, then its masked spectrum, and the larger of: its estimator's temporaries; its share of the
    iSTFT (a contiguous copy of the spectrum, the inverse FFT's frames and their windowed copy, the
    overlap-added signal and window envelope, their quotient, its padded copy).
    """
    channels, frames = batch * model.audio_channels, model.frames(samples)
    spectrum = channels * (model.n_fft // 2 + 1) * frames * COMPLEX_BYTES
    istft_frames = channels * frames * model.n_fft * FLOAT_BYTES
    signal = channels * (model.n_fft + model.hop_length * (frames - 1)) * FLOAT_BYTES
    istft = spectrum + 2 * istft_frames + 4 * signal
    estimator = batch * frames * mask_estimator_bytes_per_frame(model.mask_estimators[0], FLOAT_BYTES)
    return spectrum + max(estimator, istft)


def heads_per_group(model: nn.Module, batch: int, samples: int) -> int:
    """How many heads `Roformer.forward` computes at once: as many as fit in HEAD_GROUP_BYTES, at least
    one."""
    return max(1, HEAD_GROUP_BYTES // head_bytes(model, batch, samples))


def forward_bytes(
    model: nn.Module,
    batch: int,
    chunk_samples: int,
    heads: int,
    dtype: torch.dtype = torch.float32,
    device_type: str = "cpu",
) -> int:
    """An upper estimate of the peak bytes one `forward` of `heads` heads allocates (inference mode).

    `batch` x `chunk_samples` is the input, `dtype` the activations' (torch.float16 under fp16 autocast),
    `device_type` where it runs (on the CPU the transformers take their sequences in groups). Counted: the
    output, and the largest of the phases' live tensors: the STFT, the band split, the transformers, the
    final norm, a group of heads; plus 1/16 for what the list leaves out (measured on the CPU, peaks came
    up to 0.1 % above the list). Not counted: the input, the weights and autocast's cached casts of them,
    a GPU allocator's caching and fragmentation.
    """
    element_bytes = dtype.itemsize
    channels, frames = batch * model.audio_channels, model.frames(chunk_samples)
    band_widths = model.band_split.band_widths
    bands = len(band_widths)
    spectrum = channels * (model.n_fft // 2 + 1) * frames * COMPLEX_BYTES
    band_inputs = batch * frames * sum(band_widths) * FLOAT_BYTES  # BS: the spectrum repacked; Mel: more
    features = batch * frames * bands * model.dim  # [b, t, k, d] elements

    padded_audio = channels * (chunk_samples + model.n_fft) * FLOAT_BYTES
    stft = padded_audio + channels * frames * model.n_fft * FLOAT_BYTES + spectrum
    widest_band = batch * frames * max(band_widths) * (FLOAT_BYTES + element_bytes)
    band_split = spectrum + band_inputs + 2 * features * element_bytes + widest_band  # outputs, their stack
    time_transformer, freq_transformer = model.layers[0]
    transformers = spectrum + max(
        2 * features * element_bytes,  # the stream and its rearranged copy
        features * element_bytes
        + transformer_group_bytes(time_transformer, batch * bands, frames, element_bytes, device_type),
        features * element_bytes
        + transformer_group_bytes(freq_transformer, batch * frames, bands, element_bytes, device_type),
    )
    final_norm = spectrum + features * (element_bytes + FLOAT_BYTES)
    group = min(heads, heads_per_group(model, batch, chunk_samples))
    head_groups = spectrum + features * FLOAT_BYTES + group * head_bytes(model, batch, chunk_samples)
    output = heads * channels * chunk_samples * FLOAT_BYTES
    listed = max(stft, band_split, transformers, final_norm, output + head_groups)
    return listed + listed // 16  # what the list leaves out: small tensors, page rounding, libraries
