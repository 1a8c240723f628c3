"""BS-RoFormer: checkpoint geometry, numerical equality with the bs-roformer 0.4.1 oracle, loading."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from einops import rearrange

from fixtures.tiny_roformer import MEGA53_CONFIG, VIPERX_CONFIG, randomize, tiny_config, write_tiny_roformer
from separation.errors import WeightsError
from separation.models.roformer import transformer as roformer_transformer
from separation.models.roformer.bs_roformer import BSRoformer
from separation.models.roformer.checkpoint import RoformerCheckpoint, load_config
from separation.models.roformer.transformer import RotaryEmbedding, Transformer

DATA = Path(__file__).parent / "data"


def reference_model(model_config: dict) -> torch.nn.Module:
    """bs-roformer 0.4.1 (bit-identical to the code the viperx SDR was measured with)."""
    from bs_roformer.bs_roformer import BSRoformer as ReferenceBSRoformer

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items()}
    kwargs.pop("linear_transformer_depth")  # 0.4.1 has no linear transformer and no such argument
    return ReferenceBSRoformer(**kwargs)


def test_config_geometry_is_the_published_one():
    ours = load_config(VIPERX_CONFIG)["model"]
    with open(DATA / "model_bs_roformer_ep_317_sdr_12.9755.yaml") as f:
        published = yaml.load(f, Loader=yaml.FullLoader)["model"]
    assert ours == {k: list(v) if isinstance(v, tuple) else v for k, v in published.items()}


@pytest.mark.parametrize(
    ("published", "ours"),
    [
        ("model_bs_roformer_ep_317_sdr_12.9755.yaml", VIPERX_CONFIG),
        ("mvsep_mega_model_bs_roformer_53_stems.yaml", MEGA53_CONFIG),
    ],
)
def test_msst_configs_as_published_load_as_ours_do(published, ours):
    """A BS-RoFormer's MSST config, `!!python/tuple`s and all, gives the model and stems of our config of the
    same checkpoint (ours states Mega-53's `zero_dc`, which MSST's leaves to MSST's default), and Mega-53's
    config chunking."""
    upstream, config = load_config(DATA / published), load_config(ours)
    assert "zero_dc" not in upstream["model"]
    assert upstream["model"] == {key: value for key, value in config["model"].items() if key != "zero_dc"}
    assert upstream["stems"] == config["stems"]
    if "chunk_samples" in config["inference"]:
        chunking = ("chunk_samples", "overlap_samples", "batch_size")
        assert [upstream["inference"][key] for key in chunking] == [
            config["inference"][key] for key in chunking
        ]


def test_meta_model_matches_the_viperx_state_dict_listing():
    with torch.device("meta"):
        model = BSRoformer(**load_config(VIPERX_CONFIG)["model"])
    state = model.state_dict()
    with open(DATA / "viperx_1297_state_dict.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 699
    assert list(state) == [row["key"] for row in rows]
    for row in rows:
        tensor = state[row["key"]]
        assert list(tensor.shape) == yaml.safe_load(row["shape"]), row["key"]
        assert str(tensor.dtype) == f"torch.{row['dtype']}", row["key"]
        assert tensor.numel() == int(row["numel"])
    assert sum(t.numel() for t in state.values()) == 159_758_796
    # one rotary table for time and one for frequency, shared by all 12 layers
    time_rotary = {id(layer[0].layers[0][0].rotary_embed) for layer in model.layers}
    freq_rotary = {id(layer[1].layers[0][0].rotary_embed) for layer in model.layers}
    assert len(time_rotary) == len(freq_rotary) == 1 and time_rotary != freq_rotary
    frozen = [row["key"] for row in rows if row["kind"] == "param_frozen"]
    assert all(key.endswith("rotary_embed.freqs") for key in frozen) and len(frozen) == 24


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_rotary_rounds_the_float32_rotation_once(dtype):
    rotary = RotaryEmbedding(16)
    qk = torch.randn(2, 3, 4, 50, 16).to(dtype)  # [q/k, batch, heads, seq, dim_head]
    expected = rotary.rotate_(qk.float()).to(dtype)
    rotated = rotary.rotate_(qk)
    assert rotated is qk and rotated.dtype == dtype
    assert torch.equal(rotated, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rotary_rotates_a_strided_view_in_place_and_leaves_the_rest(dtype):
    rotary = RotaryEmbedding(8)
    # [batch, seq, (qkv heads dim_head)], as the projection writes it
    qkv = torch.randn(2, 5, 3 * 2 * 8).to(dtype)
    heads = rearrange(qkv.clone(), "b n (qkv h d) -> qkv b h n d", qkv=3, h=2)
    expected = rotary.rotate_(heads[:2].contiguous())
    rotary.rotate_(heads[:2])
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(heads[:2], expected, atol=8 * ulp, rtol=0)  # strided: another loop, 1 ulp
    assert torch.equal(heads[2], rearrange(qkv, "b n (qkv h d) -> qkv b h n d", qkv=3, h=2)[2])


def test_rotary_rotates_interleaved_pairs_by_position_times_frequency():
    rotary = RotaryEmbedding(4)
    x = torch.randn(1, 7, 4)  # [batch, seq, dim_head]
    angles = torch.arange(7.0)[:, None] * rotary.freqs  # [seq, dim_head / 2]
    even, odd = x[..., 0::2], x[..., 1::2]
    expected = torch.stack(
        [even * angles.cos() - odd * angles.sin(), even * angles.sin() + odd * angles.cos()], dim=-1
    ).flatten(-2)
    torch.testing.assert_close(rotary.rotate_(x.clone()), expected, atol=1e-6, rtol=0)


def test_rotary_frequencies_are_the_checkpoints():
    model = BSRoformer(**tiny_config(dim_head=64)["model"])
    freqs = model.layers[0][0].layers[0][0].rotary_embed.freqs
    expected = 1.0 / 10000 ** (torch.arange(32, dtype=torch.float64) * 2 / 64)
    torch.testing.assert_close(freqs.double(), expected, rtol=1e-6, atol=0)


def assert_matches_reference(model_config: dict, seconds: float, seed: int = 0) -> None:
    torch.manual_seed(seed)
    ours = randomize(BSRoformer(**model_config), seed).eval()
    reference = reference_model(model_config).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    # the reference trims its output to whole hops: compare on a whole number of hops
    samples = int(seconds * 44100) // 441 * 441
    audio = torch.randn(1, 2, samples, generator=torch.Generator().manual_seed(seed)) * 0.1
    with torch.inference_mode():
        expected = reference(audio)  # [b, s, t]
        actual = ours(audio)  # [b, n, s, t]
    assert actual.shape == (1, 1, 2, samples)
    assert (actual[:, 0] - expected).abs().max().item() <= 1e-5
    assert expected.abs().max().item() > 1e-3  # the comparison is not between two silences


@pytest.mark.slow
def test_full_width_viperx_forward_equals_reference():
    assert_matches_reference(load_config(VIPERX_CONFIG)["model"], seconds=0.2)


@pytest.mark.slow
def test_reduced_depth_forward_equals_reference_beyond_one_chunk():
    config = tiny_config(dim=64, depth=2, heads=4, dim_head=16)["model"]
    assert_matches_reference(config, seconds=8.5, seed=1)


@pytest.mark.parametrize("block_bytes", [1, 3 * 10 * 128 * 4])  # one sequence per group; groups of 3, 3, 1
def test_cpu_sequence_groups_update_the_batch_in_place_as_one_pass_would(monkeypatch, block_bytes):
    torch.manual_seed(0)
    transformer = randomize(Transformer(32, depth=2, heads=2, dim_head=16, rotary_embed=RotaryEmbedding(16)))
    x = torch.randn(7, 10, 32)  # [sequences, seq, dim]; the feed-forward is 128 wide
    with torch.inference_mode():
        monkeypatch.setattr(roformer_transformer, "CPU_BLOCK_BYTES", 2**40)
        whole = transformer(x.clone())
        monkeypatch.setattr(roformer_transformer, "CPU_BLOCK_BYTES", block_bytes)
        grouped = x.clone()
        returned = transformer(grouped)
    assert returned is grouped  # the residual stream is updated in place
    torch.testing.assert_close(grouped, whole, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(grouped, x)


def test_unknown_config_key_is_rejected():
    config = tiny_config()["model"] | {"no_such_option": 1}
    with pytest.raises(TypeError, match="no_such_option"):
        BSRoformer(**config)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "state", "model"])
def test_checkpoint_round_trip(tmp_path, wrapper):
    config_path, checkpoint_path = write_tiny_roformer(tmp_path, "tiny.ckpt", wrapper=wrapper)
    model = RoformerCheckpoint(load_config(config_path)["model"], checkpoint_path, "cpu").model
    assert not model.training
    saved = torch.load(checkpoint_path, weights_only=True)
    saved = saved[wrapper] if wrapper else saved
    loaded = model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    audio = torch.randn(1, 2, 44100 // 4)
    with torch.inference_mode():
        assert torch.isfinite(model(audio)).all()


def test_truncated_checkpoint_is_rejected(tmp_path):
    config_path, checkpoint_path = write_tiny_roformer(tmp_path, "tiny.ckpt")
    data = checkpoint_path.read_bytes()
    checkpoint_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="tiny.ckpt.*truncated"):
        RoformerCheckpoint(load_config(config_path)["model"], checkpoint_path, "cpu")


def test_non_checkpoint_file_is_rejected(tmp_path):
    config_path, _ = write_tiny_roformer(tmp_path, "tiny.ckpt")
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_text("<html>404 Not Found</html>")
    with pytest.raises(WeightsError, match="bogus.ckpt is not a PyTorch checkpoint"):
        RoformerCheckpoint(load_config(config_path)["model"], bogus, "cpu")


def test_corrupted_tensor_data_is_rejected(tmp_path):
    config_path, checkpoint_path = write_tiny_roformer(tmp_path, "tiny.ckpt")
    with zipfile.ZipFile(checkpoint_path) as archive:
        names = archive.namelist()
        contents = {name: archive.read(name) for name in names}
    pickle_name = next(name for name in names if name.endswith("data.pkl"))
    contents[pickle_name] = b"\x80\x02garbage"
    with zipfile.ZipFile(checkpoint_path, "w") as archive:
        for name in names:
            archive.writestr(name, contents[name])
    with pytest.raises(WeightsError, match="cannot be read"):
        RoformerCheckpoint(load_config(config_path)["model"], checkpoint_path, "cpu")


def test_missing_checkpoint_names_the_path_only(tmp_path):
    config_path, _ = write_tiny_roformer(tmp_path, "tiny.ckpt")
    # the caller (the model plan) adds how to fetch it, once for all missing files
    with pytest.raises(WeightsError, match="checkpoint file missing: .*absent.ckpt$"):
        RoformerCheckpoint(load_config(config_path)["model"], tmp_path / "absent.ckpt", "cpu")


def test_wrong_geometry_lists_keys_and_file(tmp_path):
    _, checkpoint_path = write_tiny_roformer(tmp_path, "deep.ckpt", config=tiny_config(depth=2))
    config_path, _ = write_tiny_roformer(tmp_path / "shallow", "shallow.ckpt", config=tiny_config(dim=48))
    with pytest.raises(WeightsError) as error:
        RoformerCheckpoint(load_config(config_path)["model"], checkpoint_path, "cpu")
    message = str(error.value)
    assert "deep.ckpt does not match the model config" in message
    assert "unexpected keys: layers.1.0.layers.0.0.norm.gamma" in message
    assert "wrong shape keys" in message
    assert "band_split.to_features.0.1.weight: checkpoint (32, 8), model (48, 8)" in message


def test_partial_state_dict_lists_missing_keys(tmp_path):
    config_path, checkpoint_path = write_tiny_roformer(tmp_path, "tiny.ckpt")
    state = torch.load(checkpoint_path, weights_only=True)
    del state["final_norm.gamma"]
    torch.save(state, checkpoint_path)
    with pytest.raises(WeightsError, match="1 missing keys: final_norm.gamma"):
        RoformerCheckpoint(load_config(config_path)["model"], checkpoint_path, "cpu")
