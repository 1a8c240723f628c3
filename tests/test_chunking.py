"""The overlap-add chunk engine: exact reconstruction, batch independence, no seams, clear errors."""

from __future__ import annotations

import pytest
import torch

from fixtures.spans import chunked_output, progress_of
from fixtures.tiny_roformer import randomize, tiny_config
from separation.errors import SettingsError
from separation.models.base import Progress
from separation.models.chunking import (
    CROSSFADE_RAMP_FRACTION,
    FinalBlock,
    PaddedTrack,
    check_chunking,
    chunk_starts,
    chunk_window,
    crossfade,
    pad_reflect_then_zero,
    separate_chunked,
)
from separation.models.roformer.bs_roformer import BSRoformer

CHUNK, OVERLAP = 1000, 400  # samples: small numbers keep the tests fast, the logic is the same


def chunked(model, waveform, device, chunk_samples, overlap_samples, batch_size=4, precision="fp32"):
    """`separate_chunked`'s events, four chunks per batch in fp32 unless the test says otherwise."""
    return separate_chunked(model, waveform, device, chunk_samples, overlap_samples, batch_size, precision)


def vocals_of(model, waveform, device, chunk_samples, overlap_samples, **options) -> torch.Tensor:
    """The first stem of a chunked separation: [2, samples] -> [2, samples]."""
    return chunked_output(chunked(model, waveform, device, chunk_samples, overlap_samples, **options))[0]


class Identity(torch.nn.Module):
    """[b, c, t] -> [b, 1, c, t]"""

    def forward(self, x):
        return x[:, None]


class Constant(torch.nn.Module):
    """Every sample of every chunk becomes `value`, whatever the input (even padding)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full_like(x[:, None], self.value)


class ChunkRecorder(Identity):
    def __init__(self):
        super().__init__()
        self.batch_shapes = []

    def forward(self, x):
        self.batch_shapes.append(tuple(x.shape))
        return super().forward(x)


LENGTHS = {
    "one sample": 1,
    "shorter than the overlap": OVERLAP - 7,
    "shorter than one chunk": CHUNK - 1,
    "exactly one chunk": CHUNK,
    "not a multiple of the step": 7 * (CHUNK - OVERLAP) + 123,
    "a multiple of the step": 9 * (CHUNK - OVERLAP),
}


@pytest.mark.parametrize("num_samples", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("overlap", [0, OVERLAP, CHUNK // 2, 800])
def test_identity_model_reconstructs_any_length(num_samples, overlap, device):
    waveform = torch.randn(2, num_samples, generator=torch.Generator().manual_seed(num_samples))
    vocals = vocals_of(Identity(), waveform, device, CHUNK, overlap, batch_size=3)
    assert vocals.shape == waveform.shape
    assert (vocals - waveform).abs().max().item() <= 1e-6


@pytest.mark.parametrize("num_samples", [5, CHUNK, 11 * CHUNK + 17])
def test_constant_model_gives_the_constant_everywhere(num_samples, device):
    out = vocals_of(Constant(0.25), torch.zeros(2, num_samples), device, CHUNK, OVERLAP)
    assert (out - 0.25).abs().max().item() <= 1e-6  # no seams between chunks, no dips at the edges


def test_windows_sum_to_one_in_the_interior():
    step = CHUNK - OVERLAP
    window = chunk_window(CHUNK, OVERLAP)
    total = torch.zeros(10 * step + CHUNK)
    for k in range(11):
        total[k * step : k * step + CHUNK] += window
    interior = total[OVERLAP : 10 * step + CHUNK - OVERLAP]
    assert (interior - 1).abs().max().item() <= 1e-6
    assert window.min().item() > 0 and window.max().item() == 1


@pytest.mark.parametrize("fade_samples", [1, 2, 7, 400, 176400])
def test_crossfades_are_complementary_and_mostly_an_equal_mean(fade_samples):
    fade_in = crossfade(fade_samples)
    assert (fade_in + fade_in.flip(0) - 1).abs().max().item() <= 1e-6
    assert bool((fade_in[1:] >= fade_in[:-1]).all()) and 0 < fade_in.min() and fade_in.max() <= 1
    ramp_samples = round(CROSSFADE_RAMP_FRACTION * fade_samples)
    middle = fade_in[ramp_samples : fade_samples - ramp_samples]
    assert (middle - 0.5).abs().max().item() <= 1e-6  # both chunks count equally there


def test_output_is_independent_of_batch_size(device):
    torch.manual_seed(0)
    model = randomize(BSRoformer(**tiny_config()["model"])).eval().to(device)
    chunk, overlap = 8820, 4410  # 0.2 s and 0.1 s
    waveform = 0.1 * torch.randn(2, 2 * chunk + 1234, generator=torch.Generator().manual_seed(3))  # 6 chunks
    outputs = [vocals_of(model, waveform, device, chunk, overlap, batch_size=b) for b in (1, 2, 4)]
    assert outputs[0].abs().max().item() > 1e-3
    for other in outputs[1:]:
        assert (other - outputs[0]).abs().max().item() <= 1e-6


def test_batches_hold_at_most_batch_size_chunks_and_progress_counts_them(device):
    recorder = ChunkRecorder()
    events = list(chunked(recorder, torch.randn(2, 10 * CHUNK), device, CHUNK, OVERLAP, batch_size=4))
    total = sum(shape[0] for shape in recorder.batch_shapes)
    assert all(shape[0] <= 4 and shape[1:] == (2, CHUNK) for shape in recorder.batch_shapes)
    calls = progress_of(events)
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert len(calls) == len(recorder.batch_shapes) + 1
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_progress_ticks_as_each_batch_finishes_on_the_cpu(device):
    """The tick of a batch comes before the next batch is computed (not one batch late)."""
    recorder = ChunkRecorder()
    for event in chunked(recorder, torch.randn(2, 10 * CHUNK), device, CHUNK, OVERLAP, batch_size=2):
        if isinstance(event, Progress):
            assert sum(shape[0] for shape in recorder.batch_shapes) == event.done


def whole_track_overlap_add(model, waveform, chunk_samples, overlap_samples, batch_size):
    """The overlap-add over one track-sized buffer, divided by the window sum at the end: the reference
    the bounded-memory engine must equal bit for bit."""
    samples = waveform.shape[-1]
    starts = chunk_starts(samples, chunk_samples, chunk_samples - overlap_samples, overlap_samples)
    padded_samples = starts[-1] + chunk_samples
    padded = pad_reflect_then_zero(waveform, overlap_samples, padded_samples - samples - overlap_samples)
    window = chunk_window(chunk_samples, overlap_samples)
    output, weight = None, torch.zeros(padded_samples)
    for first in range(0, len(starts), batch_size):
        batch = starts[first : first + batch_size]
        estimates = model(torch.stack([padded[:, s : s + chunk_samples] for s in batch])).float()
        if output is None:
            output = torch.zeros(estimates.shape[1], waveform.shape[0], padded_samples)
        for start, estimate in zip(batch, estimates, strict=True):
            output[..., start : start + chunk_samples] += estimate * window
            weight[start : start + chunk_samples] += window
    span = slice(overlap_samples, overlap_samples + samples)
    return output[..., span] / weight[span]


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("overlap", [0, OVERLAP, 800])
def test_bounded_buffer_equals_a_whole_track_buffer_bit_for_bit(batch_size, overlap):
    waveform = torch.randn(2, 9 * CHUNK + 321, generator=torch.Generator().manual_seed(4))
    model = ChunkDependent()
    events = chunked(model, waveform, "cpu", CHUNK, overlap, batch_size=batch_size)
    with torch.inference_mode():
        reference = whole_track_overlap_add(model, waveform, CHUNK, overlap, batch_size)
    assert torch.equal(chunked_output(events), reference)


def test_multi_stem_models_keep_their_stems(device):
    class TwoStems(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x, -2 * x], dim=1)

    waveform = torch.randn(2, 3 * CHUNK + 5)
    stems = chunked_output(chunked(TwoStems(), waveform, device, CHUNK, OVERLAP))
    assert stems.shape == (2, 2, waveform.shape[1])
    torch.testing.assert_close(stems[1], -2 * waveform, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("chunk", "overlap"), [(CHUNK, CHUNK), (CHUNK, CHUNK + 1), (CHUNK, -1), (0, 0)])
def test_impossible_overlap_is_a_clear_error(chunk, overlap):
    """The one check of the chunking, used by the request and by a config's `inference` section."""
    with pytest.raises(SettingsError, match="overlap (.* must be below chunk_size|must not be negative)"):
        check_chunking(chunk, overlap)


def test_bf16_path_runs_on_cpu(device):
    torch.manual_seed(0)
    model = randomize(BSRoformer(**tiny_config()["model"])).eval().to(device)
    waveform = 0.1 * torch.randn(2, 8820)
    fp32 = vocals_of(model, waveform, device, 4410, 2205, precision="fp32")
    bf16 = vocals_of(model, waveform, device, 4410, 2205, precision="bf16")
    assert bf16.dtype == torch.float32
    snr_db = 10 * torch.log10(fp32.pow(2).sum() / (bf16 - fp32).pow(2).sum())
    assert snr_db > 20


class ChunkDependent(torch.nn.Module):
    """[b, c, t] -> [b, 2, c, t]: each chunk scaled by its own mean, so every chunk counts differently."""

    def forward(self, x):
        scaled = x * (1 + x.mean(dim=-1, keepdim=True))
        return torch.stack([scaled, -scaled], dim=1)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("overlap", [0, OVERLAP, 800])
def test_final_blocks_cover_the_track_once_in_order_and_never_change(batch_size, overlap, device):
    waveform = torch.randn(2, 12 * (CHUNK - OVERLAP) + 123, generator=torch.Generator().manual_seed(1))
    received = []  # (first sample, the block as it was when received, the block itself)
    for event in chunked(ChunkDependent(), waveform, device, CHUNK, overlap, batch_size=batch_size):
        if isinstance(event, FinalBlock):
            received.append((event.first_sample, event.block.clone(), event.block))
    assert len(received) > 1
    firsts = [first for first, _, _ in received]
    ends = [first + block.shape[-1] for first, block, _ in received]
    assert firsts == [0, *ends[:-1]] and ends[-1] == waveform.shape[1]  # contiguous, complete, in order
    assert all(block.shape[:2] == (2, 2) and block.shape[-1] > 0 for _, block, _ in received)
    assert all(torch.equal(copy, block) for _, copy, block in received)  # nothing changed them later


@pytest.mark.parametrize("batch_size", [1, 2])
def test_finalising_batch_by_batch_gives_the_same_bits_as_finalising_once(batch_size):
    """With one batch the whole track is divided by its weight at the end."""
    waveform = torch.randn(2, 5 * CHUNK + 17, generator=torch.Generator().manual_seed(2))
    once = list(chunked(ChunkDependent(), waveform, "cpu", CHUNK, 800, batch_size=100))
    streamed = list(chunked(ChunkDependent(), waveform, "cpu", CHUNK, 800, batch_size))
    assert len(streamed) > len(once) and torch.equal(chunked_output(streamed), chunked_output(once))


@pytest.mark.parametrize("samples", [1, 5, 3 * CHUNK, 3 * CHUNK + 1, 40 * CHUNK + 7])
@pytest.mark.parametrize(("left", "right"), [(0, 0), (400, 400), (400, 1399), (800, 5)])
def test_padded_track_windows_are_the_padded_tracks(samples, left, right):
    """Read a window at a time, the padded track is the one padded whole, wherever the window lies."""
    waveform = torch.randn(2, samples, generator=torch.Generator().manual_seed(samples))
    whole = pad_reflect_then_zero(waveform, left, right)
    track = PaddedTrack(waveform, left, right, CHUNK)
    for start in range(0, whole.shape[-1] - CHUNK + 1, 97):
        assert torch.equal(track.window(start, CHUNK), whole[:, start : start + CHUNK]), start
