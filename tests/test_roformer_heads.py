"""Multi-stem BS-RoFormer (MVSep Mega-53): zero-DC against MSST 0.1.0, head selection, heads in bounded
groups and the memory of a forward pass (of both family members), partial loading."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import torch

import separation.models.roformer.memory as roformer_memory
from fixtures.msst_oracle import msst_bs_roformer, published
from fixtures.tiny_roformer import (
    KIM_MEL_CONFIG,
    MEGA53_CHECKPOINT,
    MEGA53_CONFIG,
    forward_peaks,
    loaded_heads,
    noise_audio,
    randomize,
    tiny_config,
    tiny_mega53_config,
    write_tiny_mega53,
)
from separation.errors import WeightsError
from separation.models.roformer.bs_roformer import BSRoformer
from separation.models.roformer.checkpoint import RoformerCheckpoint, load_config, split_heads
from separation.models.roformer.mel_band_roformer import MelBandRoformer
from separation.models.roformer.memory import forward_bytes, head_bytes, heads_per_group
from separation.models.roformer.transformer import RotaryEmbedding
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan
from separation.request import Request

DATA = Path(__file__).parent / "data"
MEGA53_YAML = DATA / "mvsep_mega_model_bs_roformer_53_stems.yaml"  # MSST's file, byte for byte
MEGA53_YAML_SHA256 = "7e198062a251587088adb91215a4f44ab59e67bd62fcc805cf54d6e7dfc51103"


@pytest.fixture(scope="module")
def tiny_mega53(tiny_weights_dir) -> tuple[Path, Path]:
    """(config_path, checkpoint_path) of a tiny 53-head float16 checkpoint: the tiny weights folder's
    Mega-53, written once per run (saving its 13k tensors takes seconds)."""
    checkpoint_path = tiny_weights_dir / MEGA53_CHECKPOINT
    return checkpoint_path.with_suffix(".yaml"), checkpoint_path


@pytest.fixture(scope="module")
def tiny_mega53_saved(tiny_mega53) -> dict[str, torch.Tensor]:
    """The tiny checkpoint's state_dict as saved (float16)."""
    return torch.load(tiny_mega53[1], weights_only=True)


@pytest.fixture(scope="module")
def full_tiny_mega53(tiny_mega53) -> BSRoformer:
    """The tiny checkpoint with all 53 heads loaded (float32)."""
    return RoformerCheckpoint(load_config(tiny_mega53[0])["model"], tiny_mega53[1]).model


@pytest.mark.filterwarnings("ignore:.*sdp_kernel.*:FutureWarning")  # MSST's attention on the CPU
@pytest.mark.parametrize(
    ("zero_dc", "samples", "group_bytes"),
    [
        (True, 2 * 44100, 1),  # 2 s (172.3 hops), one head per group: the fast loop's oracle case
        pytest.param(False, 2 * 44100, 2**62, marks=pytest.mark.slow),  # all heads in one group
        pytest.param(False, 160 * 512, 1, marks=pytest.mark.slow),  # a whole number of hops
        pytest.param(True, 160 * 512, 2**62, marks=pytest.mark.slow),
    ],
)
def test_forward_equals_msst(monkeypatch, zero_dc, samples, group_bytes):
    monkeypatch.setattr(roformer_memory, "HEAD_GROUP_BYTES", group_bytes)
    config = tiny_config(dim=32, depth=2, heads=2, dim_head=16, base=MEGA53_CONFIG)["model"]
    config |= {"num_stems": 3, "zero_dc": zero_dc}
    torch.manual_seed(0)
    ours = randomize(BSRoformer(**config)).eval()
    reference = msst_bs_roformer(config).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    audio = noise_audio(samples)
    with torch.inference_mode():
        expected = reference(audio)  # [b, n, s, t]
        actual = ours(audio)
        expected_selected = reference(audio, active_stem_ids=[2, 0])
        actual_selected = ours(audio, heads=[2, 0])
    assert actual.shape == expected.shape == (1, 3, 2, samples)
    assert (actual - expected).abs().max().item() <= 1e-5
    assert (actual_selected - expected_selected).abs().max().item() <= 1e-5
    assert expected.abs().max().item() > 1e-3  # the comparison is not between two silences


def test_config_model_is_the_published_one_with_zero_dc():
    assert hashlib.sha256(MEGA53_YAML.read_bytes()).hexdigest() == MEGA53_YAML_SHA256
    ours, upstream = load_config(MEGA53_CONFIG), published(MEGA53_YAML)
    assert ours["model"] == upstream["model"] | {"zero_dc": True}
    assert ours["stems"] == upstream["training"]["instruments"]
    assert len(ours["stems"]) == ours["model"]["num_stems"] == 53
    assert ours["stems"][20] == "guitar"


@pytest.mark.parametrize(
    ("model", "upstream_path"),
    [
        ("bs_roformer_vocals", DATA / "model_bs_roformer_ep_317_sdr_12.9755.yaml"),
        ("bs_roformer_mega53", MEGA53_YAML),
    ],
)
def test_default_chunking_is_msst_chunking_in_samples(model, upstream_path):
    """What a default request runs each model at (the vocals model at the request's default chunk, Mega-53 at
    its config's) is MSST's demix setting for the checkpoint."""
    spec, upstream = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME).models[model], published(upstream_path)
    # MSST's demix: inference.chunk_size where given, else audio.chunk_size; step chunk // num_overlap
    chunk = upstream["inference"].get("chunk_size", upstream["audio"]["chunk_size"])
    step = chunk // upstream["inference"]["num_overlap"]
    default = Request().run_options
    assert spec.chunking_samples(default) == (chunk, chunk - step)
    assert spec.batch_size(default) == upstream["inference"]["batch_size"]


@pytest.mark.slow
def test_meta_build_has_the_checkpoints_listing():
    with torch.device("meta"):
        model = BSRoformer(**load_config(MEGA53_CONFIG)["model"])
    state = model.state_dict()
    assert len(state) == 13_595
    assert sum(t.numel() for t in state.values()) == 681_663_596
    trunk, heads = split_heads(state)
    assert sum(t.numel() for t in trunk.values()) == 26_328_772
    assert sorted(heads) == list(range(53))
    assert {sum(t.numel() for t in head.values()) for head in heads.values()} == {12_364_808}
    assert list(state) == [*trunk, *(key for head in heads.values() for key in head)]


def test_tiny_mega53_checkpoint_has_the_real_format(tiny_mega53, tiny_mega53_saved):
    config = load_config(tiny_mega53[0])
    assert config["stems"] == load_config(MEGA53_CONFIG)["stems"]
    model = config["model"]
    assert (model["num_stems"], model["stft_hop_length"], model["mlp_expansion_factor"]) == (53, 512, 2)
    assert model["zero_dc"] is True
    assert {tensor.dtype for tensor in tiny_mega53_saved.values()} == {torch.float16}
    _, heads = split_heads(tiny_mega53_saved)
    assert sorted(heads) == list(range(53))
    weights = [tiny_mega53_saved[f"mask_estimators.{head}.to_freqs.0.0.0.weight"] for head in (0, 1)]
    assert not torch.equal(*weights)  # heads differ


@pytest.mark.slow
def test_selected_heads_are_the_full_models_outputs(full_tiny_mega53):
    audio = noise_audio(44100 // 2 + 123)
    with torch.inference_mode():
        everything = full_tiny_mega53(audio)  # [1, 53, 2, samples]
        for heads in ([20], [33, 1, 20]):
            selected = full_tiny_mega53(audio, heads=heads)
            assert selected.shape == (1, len(heads), 2, audio.shape[-1])
            assert torch.equal(selected, everything[:, heads])


@pytest.mark.parametrize("group_size", [1, 2, 5])
def test_heads_in_groups_equal_all_heads_at_once(monkeypatch, group_size, device):
    torch.manual_seed(0)
    model = randomize(BSRoformer(**tiny_mega53_config(num_stems=7)["model"])).eval().to(device)
    batch, samples, heads = 2, 30_000, [6, 0, 3, 2, 5]
    audio = torch.cat([noise_audio(samples, seed) for seed in range(batch)]).to(device)
    with torch.inference_mode():
        monkeypatch.setattr(roformer_memory, "HEAD_GROUP_BYTES", 2**62)
        at_once = model(audio, heads=heads)
        monkeypatch.setattr(
            roformer_memory, "HEAD_GROUP_BYTES", group_size * head_bytes(model, batch, samples)
        )
        assert heads_per_group(model, batch, samples) == group_size
        grouped = model(audio, heads=heads)
    assert grouped.shape == (batch, len(heads), 2, samples)
    assert torch.equal(grouped, at_once)


@pytest.mark.slow
def test_forward_bytes_grow_with_the_heads_by_their_output_at_most():
    with torch.device("meta"):
        model = BSRoformer(**load_config(MEGA53_CONFIG)["model"])
    samples = load_config(MEGA53_CONFIG)["inference"]["chunk_samples"]
    output_per_head = 2 * samples * 4 * 17 / 16  # [s, t] float32, and the estimate's margin of 1/16
    group = heads_per_group(model, 1, samples)
    for dtype, device_type in [(torch.float32, "cpu"), (torch.float16, "cuda")]:
        one_group = forward_bytes(model, 1, samples, group, dtype, device_type)
        for heads in (group + 1, 21, 53):
            more = forward_bytes(model, 1, samples, heads, dtype, device_type)
            assert one_group <= more <= one_group + (heads - group) * output_per_head, (dtype, heads)


def forward_bytes_cases(network: type[torch.nn.Module]) -> list[tuple[dict, list]]:
    """(model config, [(batch, samples, heads)]) to measure: a tiny and a wider trunk of the member's
    published geometry (Mega-53's for BS, Kim's vocals for Mel-Band), one head and many."""
    if network is BSRoformer:
        tiny = tiny_mega53_config(num_stems=24)["model"]
        mid = tiny_config(dim=64, depth=2, heads=4, dim_head=16, base=MEGA53_CONFIG)["model"] | {
            "num_stems": 8
        }
        return [
            (tiny, [(1, 4 * 44100, [20]), (1, 4 * 44100, list(range(24)))]),
            (mid, [(2, 3 * 44100, [0]), (2, 3 * 44100, list(range(8)))]),
        ]
    tiny = tiny_config(dim=8, heads=1, dim_head=8, base=KIM_MEL_CONFIG)["model"] | {"num_stems": 12}
    mid = tiny_config(dim=64, depth=2, heads=4, dim_head=16, base=KIM_MEL_CONFIG)["model"] | {"num_stems": 8}
    return [
        (tiny, [(1, 4 * 44100, [7]), (1, 4 * 44100, list(range(12)))]),
        (mid, [(2, 3 * 44100, [0]), (2, 3 * 44100, list(range(8)))]),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("network", [BSRoformer, MelBandRoformer])
def test_forward_bytes_bounds_the_measured_peak(network):
    """Resident-memory growth of a forward on the CPU, measured in a fresh process (see `forward_peaks`):
    the estimate is above it, by at most half of it, for any number of heads, for both members."""
    for config, runs in forward_bytes_cases(network):
        with torch.device("meta"):
            model = network(**config)
        assert len(runs[-1][2]) > heads_per_group(model, *runs[-1][:2])  # several groups
        for (batch, samples, heads), measured in zip(runs, forward_peaks(config, runs, network), strict=True):
            estimate = forward_bytes(model, batch, samples, len(heads))
            assert measured <= estimate <= 1.5 * measured, (batch, samples, len(heads), measured, estimate)


@pytest.mark.slow
def test_partial_load_leaves_the_other_heads_on_meta_and_adds_them_on_request(
    tiny_mega53, tiny_mega53_saved, full_tiny_mega53, device
):
    model_config = load_config(tiny_mega53[0])["model"]
    checkpoint = RoformerCheckpoint(model_config, tiny_mega53[1], device, heads=[20])
    saved = tiny_mega53_saved
    model = checkpoint.model
    assert loaded_heads(model) == [20]
    trunk, heads = split_heads(dict(model.named_parameters(remove_duplicate=False)))
    assert all(p.device.type == device.type and p.dtype == torch.float32 for p in trunk.values())
    for head, params in heads.items():
        assert {p.device.type for p in params.values()} == {device.type if head == 20 else "meta"}, head

    # the rotary frequencies are the checkpoint's float16-rounded ones, not recomputed
    freqs_key = "layers.0.0.layers.0.0.rotary_embed.freqs"
    assert torch.equal(trunk[freqs_key].cpu(), saved[freqs_key].float())
    assert not torch.equal(trunk[freqs_key].cpu(), RotaryEmbedding(model_config["dim_head"]).freqs)

    kept = heads[20]["mask_estimators.20.to_freqs.0.0.0.weight"]
    checkpoint.ensure_heads([33, 20])
    assert loaded_heads(model) == [20, 33]
    assert model.mask_estimators[20].to_freqs[0][0][0].weight is kept  # loaded once, kept
    loaded = {key: p for key, p in model.named_parameters() if key.startswith("mask_estimators.33.")}
    assert len(loaded) == 62 * 4
    assert all(torch.equal(p.cpu(), saved[key].float()) for key, p in loaded.items())

    audio = noise_audio(44100 // 2 + 123).to(device)
    everything = copy.deepcopy(full_tiny_mega53).to(device)  # all 53 heads, on the same device
    with torch.inference_mode():
        expected = everything(audio, heads=[33, 20])
        actual = model(audio, heads=[33, 20])
    assert torch.equal(actual, expected)
    with pytest.raises(IndexError, match="head 53 out of range"):
        checkpoint.ensure_heads([53])


def edit_missing(state: dict) -> None:
    del state["mask_estimators.3.to_freqs.61.0.2.bias"]


def edit_unexpected(state: dict) -> None:
    state["mask_estimators.4.to_freqs.0.0.0.bias"] = state["mask_estimators.3.to_freqs.0.0.0.bias"]


def edit_shape(state: dict) -> None:
    state["mask_estimators.2.to_freqs.5.0.0.weight"] = state["mask_estimators.2.to_freqs.5.0.0.weight"][:-1]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (edit_missing, "1 missing keys: mask_estimators.3.to_freqs.61.0.2.bias"),
        pytest.param(
            edit_unexpected,
            "1 unexpected keys: mask_estimators.4.to_freqs.0.0.0.bias",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            edit_shape,
            r"mask_estimators.2.to_freqs.5.0.0.weight: checkpoint \(15, 8\), model \(16, 8\)",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_partial_load_checks_the_heads_it_does_not_load(tmp_path, edit, message):
    config_path, checkpoint_path = write_tiny_mega53(tmp_path, num_stems=4)
    state = torch.load(checkpoint_path, weights_only=True)
    edit(state)
    torch.save(state, checkpoint_path)
    with pytest.raises(WeightsError, match=message):
        RoformerCheckpoint(load_config(config_path)["model"], checkpoint_path, "cpu", heads=[0])
