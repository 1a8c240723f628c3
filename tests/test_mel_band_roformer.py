"""Mel-Band RoFormer: its band table against librosa, its checkpoint listing and forward pass against MSST
0.1.0's `MelBandRoformer` (Kimberley Jensen's vocals config at full width, tiny ones for the options), the
traps where the two family members read the same config key differently, MSST's configs as published, and
a bring-your-own Mel-Band checkpoint running through the pipeline with no code change."""

from __future__ import annotations

import hashlib
import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from einops import repeat

import separation.models.roformer.memory as roformer_memory
from fixtures.msst_oracle import msst_bs_roformer, msst_mel_band_roformer, msst_roformer_module, published
from fixtures.spans import chunked_output
from fixtures.tiny_roformer import (
    KIM_MEL_CONFIG,
    VIPERX_CONFIG,
    noise_audio,
    randomize,
    tiny_config,
    write_tiny_roformer,
)
from fixtures.tiny_weights import write_tiny_weights
from separation.__main__ import main
from separation.audio.decode import decode_audio
from separation.errors import SettingsError, WeightsError
from separation.models.chunking import separate_chunked
from separation.models.roformer.bs_roformer import BSRoformer
from separation.models.roformer.checkpoint import RoformerCheckpoint, load_config
from separation.models.roformer.mel_band_roformer import MelBandRoformer, mel_band_table
from separation.models.roformer.spec import MelBandRoformerSpec
from separation.pipeline import Separator
from separation.plan import PLAN_FILE_NAME, StemPlan
from separation.request import Request

KIM_YAML_SHA256 = "f63f38eb1e6e40a7db0dade714a5ae257555dd8748f4e774eae8679275a81926"  # MSST 4a9f4d7
KIM_KEYS, KIM_SCALARS = 684, 228_203_172  # MSST's MelBandRoformer of that config, built on `meta`

# MSST's attention on the CPU warns that torch's sdp_kernel is deprecated
pytestmark = pytest.mark.filterwarnings("ignore:.*sdp_kernel.*:FutureWarning")


def tiny_mel(num_stems: int = 3, **options) -> dict:
    """Kim's `model` section (lists for tuples) with a tiny trunk, `num_stems` heads and `options`."""
    model = load_config(KIM_MEL_CONFIG)["model"]
    return model | {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "num_stems": num_stems} | options


def listing(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """A model's state_dict keys, in order, with their shapes."""
    return [(key, tuple(tensor.shape)) for key, tensor in model.state_dict().items()]


# -- the config as published -------------------------------------------------------------------------------


def test_kim_config_is_msst_file_and_loads_as_published():
    text = KIM_MEL_CONFIG.read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == KIM_YAML_SHA256
    assert "multi_stft_resolutions_window_sizes: !!python/tuple" in text
    with pytest.raises(yaml.constructor.ConstructorError, match="python/tuple"):
        yaml.safe_load(text)  # why load_config has its own loader

    config, upstream = load_config(KIM_MEL_CONFIG), published(KIM_MEL_CONFIG)
    assert config["model"] == upstream["model"]  # the tuple as a list, everything else as MSST reads it
    assert config["model"]["multi_stft_resolutions_window_sizes"] == [4096, 2048, 1024, 512, 256]
    assert "zero_dc" not in config["model"]  # Kim's checkpoint predates MSST's zero-DC default
    # the sections the plan reads, from MSST's: the target instrument, MSST's demix chunking
    assert config["stems"] == [upstream["training"]["target_instrument"]] == ["vocals"]
    chunk = upstream["audio"]["chunk_size"]
    assert config["inference"] == upstream["inference"] | {
        "chunk_samples": chunk,
        "overlap_samples": chunk - chunk // upstream["inference"]["num_overlap"],
    }
    assert (config["inference"]["chunk_samples"], config["inference"]["overlap_samples"]) == (
        352_800,
        176_400,
    )


@pytest.mark.parametrize(
    "document",
    [
        "model: !!python/object/apply:os.system ['echo unsafe']\n",
        "model: !!python/object:collections.OrderedDict {}\n",
        "model: !!python/name:os.system\n",
    ],
)
def test_config_loader_refuses_python_objects(tmp_path, document):
    path = tmp_path / "config.yaml"
    path.write_text(document)
    with pytest.raises(yaml.constructor.ConstructorError, match="could not determine a constructor"):
        load_config(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["training"].update(target_instrument=None), r"names 2 stems \['vocals', 'other'\]"),
        (lambda c: c["audio"].update(sample_rate=48000), "audio.sample_rate is 48000"),
        (lambda c: c["model"].update(sample_rate=22050), "model.sample_rate is 22050"),
    ],
)
def test_msst_config_that_the_project_cannot_run_is_refused(tmp_path, edit, message):
    config = tiny_config(base=KIM_MEL_CONFIG)
    edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.dump(config, Dumper=yaml.Dumper))
    with pytest.raises(SettingsError, match=message):
        load_config(path)


# -- the band table ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "num_bands"),
    [(44100, 2048, 60), (44100, 2048, 48), (44100, 2048, 64), (44100, 4096, 60), (48000, 2048, 60),
     (44100, 1024, 32), (44100, 2048, 32)],
)  # fmt: skip
def test_band_table_is_librosas_mel_filter_support(sample_rate, n_fft, num_bands):
    from librosa.filters import mel

    expected = torch.from_numpy(mel(sr=sample_rate, n_fft=n_fft, n_mels=num_bands) > 0)
    assert not expected[0, 0]  # librosa leaves 0 Hz out of every band: the checkpoints' code puts it in
    expected[0, 0] = expected[-1, -1] = True
    table = mel_band_table(sample_rate, n_fft, num_bands)
    assert table.dtype == torch.bool and table.shape == (num_bands, n_fft // 2 + 1)
    assert torch.equal(table, expected)
    assert table.any(dim=0).all() and (table.sum(dim=0) <= 2).all()  # every bin in one band or two


def test_band_rows_gather_each_bands_bins_with_channels_interleaved():
    model = MelBandRoformer(
        **tiny_mel(num_stems=1) | {"num_bands": 8, "stft_n_fft": 64, "stft_win_length": 64}
    )
    table = model.band_table
    expected = [2 * f + s for band in table for f in band.nonzero().flatten().tolist() for s in (0, 1)]
    assert model.band_rows.tolist() == expected
    assert model.band_split.band_widths == [2 * 2 * int(n) for n in table.sum(dim=1)]
    assert model.bands_per_row.flatten().tolist() == [float(n) for n in table.sum(dim=0) for _ in (0, 1)]
    assert max(model.bands_per_row.flatten().tolist()) == 2  # neighbouring bands overlap


def test_band_tables_are_msst():
    config = tiny_mel()
    ours, reference = MelBandRoformer(**config), msst_mel_band_roformer(config)
    assert torch.equal(ours.band_table, reference.freqs_per_band)
    assert torch.equal(ours.band_rows, reference.freq_indices)
    denominators = repeat(reference.num_bands_per_freq, "f -> (f s) 1", s=2)
    assert torch.equal(ours.bands_per_row, denominators.float())


# -- checkpoint listing and strict load --------------------------------------------------------------------


def test_kim_listing_is_msst_and_a_checkpoint_of_it_loads_strictly(tmp_path):
    model_config = load_config(KIM_MEL_CONFIG)["model"]
    with torch.device("meta"):
        reference = msst_mel_band_roformer(published(KIM_MEL_CONFIG)["model"])
        ours = MelBandRoformer(**model_config)
    assert listing(ours) == listing(reference)
    state = reference.state_dict()
    assert len(state) == KIM_KEYS and sum(t.numel() for t in state.values()) == KIM_SCALARS

    # a checkpoint of that listing in the real format (a saved state_dict); each tensor is a view of a
    # one-element storage, so the file is small, and the full-width test below saves real values
    one = torch.zeros(())
    checkpoint_path = tmp_path / "MelBandRoformer.ckpt"
    torch.save({key: one.expand(tensor.shape) for key, tensor in state.items()}, checkpoint_path)
    loaded = RoformerCheckpoint(model_config, checkpoint_path, "cpu", network=MelBandRoformer).model
    assert isinstance(loaded, MelBandRoformer)
    assert listing(loaded) == listing(reference)
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}

    del state["layers.5.1.norm.gamma"]  # the last transformer's output norm
    torch.save({key: one.expand(tensor.shape) for key, tensor in state.items()}, checkpoint_path)
    with pytest.raises(WeightsError, match="1 missing keys: layers.5.1.norm.gamma"):
        RoformerCheckpoint(model_config, checkpoint_path, "cpu", network=MelBandRoformer)


# -- the traps: one config key, two meanings ---------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_mask_estimator_depth_counts_hidden_layers_in_mel_and_all_layers_in_bs(depth):
    """MSST builds `mask_estimator_depth` hidden layers per band MLP for Mel-Band RoFormer but
    depth - 1 for BS-RoFormer: the same config value, different checkpoints (MSST issue #59)."""
    bs_config = tiny_config(base=VIPERX_CONFIG)["model"] | {"mask_estimator_depth": depth}
    mel_config = tiny_mel(num_stems=1, mask_estimator_depth=depth)
    with torch.device("meta"):
        members = [
            (BSRoformer(**bs_config), msst_bs_roformer(bs_config), depth),
            (MelBandRoformer(**mel_config), msst_mel_band_roformer(mel_config), depth + 1),
        ]
    for ours, reference, linear_layers in members:
        mlp = ours.mask_estimators[0].to_freqs[0][0]  # band 0's MLP (then the GLU)
        assert sum(isinstance(layer, torch.nn.Linear) for layer in mlp) == linear_layers
        assert listing(ours) == listing(reference)


def test_mel_checkpoint_read_with_one_hidden_layer_less_names_the_layers(tmp_path):
    _, checkpoint_path = write_tiny_roformer(
        tmp_path, "mel.ckpt", {"model": tiny_mel(num_stems=1)}, network=MelBandRoformer
    )
    with pytest.raises(WeightsError) as error:
        RoformerCheckpoint(
            tiny_mel(num_stems=1, mask_estimator_depth=1), checkpoint_path, network=MelBandRoformer
        )
    message = str(error.value)
    assert "unexpected keys: mask_estimators.0.to_freqs.0.0.4.bias" in message
    assert "mask_estimators.0.to_freqs.0.0.2.weight: checkpoint (128, 128), model (56, 128)" in message


def test_transformer_output_norms_are_per_transformer_in_mel_and_final_in_bs():
    """MSST's Mel-Band transformers end in an RMSNorm (`norm_output=True`) and the stack has no final
    norm; its BS-RoFormer's have none (`norm_output=False`) and the stack ends in `final_norm`."""
    bs_config, mel_config = tiny_config(depth=2)["model"], tiny_mel(num_stems=1)
    with torch.device("meta"):
        bs, mel = BSRoformer(**bs_config), MelBandRoformer(**mel_config)
        bs_reference, mel_reference = msst_bs_roformer(bs_config), msst_mel_band_roformer(mel_config)
    output_norms = [f"layers.{layer}.{axis}.norm.gamma" for layer in range(2) for axis in (0, 1)]
    assert set(output_norms) <= mel.state_dict().keys() and "final_norm.gamma" not in mel.state_dict()
    assert not set(output_norms) & bs.state_dict().keys() and "final_norm.gamma" in bs.state_dict()
    assert listing(mel) == listing(mel_reference) and listing(bs) == listing(bs_reference)
    assert all(t.norm is not None for pair in mel.layers for t in pair)
    assert all(t.norm is None for pair in bs.layers for t in pair)


def test_zero_dc_is_off_unless_the_config_sets_it_though_msst_defaults_it_on():
    msst_default = inspect.signature(msst_roformer_module("mel_band_roformer").MelBandRoformer).parameters
    assert msst_default["zero_dc"].default is True  # MSST 0.1.0; Kim's checkpoint was scored before it
    with torch.device("meta"):
        assert MelBandRoformer(**load_config(KIM_MEL_CONFIG)["model"]).zero_dc is False
        assert MelBandRoformer(**tiny_mel(zero_dc=True)).zero_dc is True


def test_options_that_are_not_implemented_are_refused():
    with pytest.raises(ValueError, match="use_pope"):
        MelBandRoformer(**tiny_mel(use_pope=True))
    with pytest.raises(TypeError, match="freqs_per_bands"):
        MelBandRoformer(**tiny_mel(freqs_per_bands=[1025]))


# -- the forward pass against MSST -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zero_dc", "match_length", "samples", "group_bytes"),
    [
        # the fast loop's oracle case: MSST 0.1.0's defaults (zero-DC on, the iSTFT given no length)
        (True, False, 11025 + 123, 1),
        pytest.param(False, True, 22050 + 123, 2**62, marks=pytest.mark.slow),
        pytest.param(False, False, 50 * 441, 1, marks=pytest.mark.slow),  # a whole number of hops
        pytest.param(True, True, 44100 + 7, 2**62, marks=pytest.mark.slow),
    ],
)
def test_forward_equals_msst(monkeypatch, zero_dc, match_length, samples, group_bytes):
    """Our output has the input's length: MSST's with `match_input_audio_length`, and where MSST gives the
    iSTFT no length, its output is ours up to the last frame's centre, hop x (frames - 1)."""
    monkeypatch.setattr(roformer_memory, "HEAD_GROUP_BYTES", group_bytes)
    config = tiny_mel(zero_dc=zero_dc)
    torch.manual_seed(0)
    ours = randomize(MelBandRoformer(**config)).eval()
    reference = msst_mel_band_roformer(config, match_input_audio_length=match_length).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    audio = noise_audio(samples)
    with torch.inference_mode():
        expected = reference(audio)  # [b, n, s, t]; its heads are independent: a selection is a slice
        actual, selected, one = ours(audio), ours(audio, heads=[2, 0]), ours(audio, heads=[1])
    defined = samples if match_length else samples // ours.hop_length * ours.hop_length
    assert actual.shape == (1, 3, 2, samples) and expected.shape == (1, 3, 2, defined)
    assert one.shape == (1, 1, 2, samples)  # MSST would drop the stem axis for one stem
    assert (actual[..., :defined] - expected).abs().max().item() <= 1e-5
    assert (selected[..., :defined] - expected[:, [2, 0]]).abs().max().item() <= 1e-5
    assert torch.equal(one, actual[:, [1]])
    assert expected.abs().max().item() > 1e-3  # the comparison is not between two silences
    if zero_dc:  # the comparison sees the zero-DC step: without it, the output is another one
        ours.zero_dc = False
        with torch.inference_mode():
            assert (ours(audio)[..., :defined] - expected).abs().max().item() > 1e-4


@pytest.mark.slow
def test_full_width_kim_forward_equals_msst(tmp_path):
    """Kim's geometry at full width, random weights saved in float16 and loaded through our checkpoint code,
    MSST's model given the same values: one second (and 200 samples past MSST's last frame centre)."""
    model_config = load_config(KIM_MEL_CONFIG)["model"]
    torch.manual_seed(0)
    reference = randomize(msst_mel_band_roformer(published(KIM_MEL_CONFIG)["model"], zero_dc=False)).eval()
    state = {key: tensor.half() for key, tensor in reference.state_dict().items()}
    checkpoint_path = tmp_path / "MelBandRoformer.ckpt"
    torch.save(state, checkpoint_path)
    reference.load_state_dict({key: tensor.float() for key, tensor in state.items()}, strict=True)
    del state
    ours = RoformerCheckpoint(model_config, checkpoint_path, "cpu", network=MelBandRoformer).model

    samples = 44100 + 200
    audio = noise_audio(samples, seed=3)
    with torch.inference_mode():
        expected = reference(audio)  # [b, s, t], one stem; 44,100 samples: no iSTFT length given
        actual = ours(audio)  # [b, n, s, t]
    assert actual.shape == (1, 1, 2, samples) and expected.shape == (1, 2, 44100)
    assert (actual[:, 0, :, :44100] - expected).abs().max().item() <= 1e-5
    assert expected.abs().max().item() > 1e-3


# -- a Mel-Band checkpoint brought by its user -------------------------------------------------------------


@pytest.fixture(scope="module")
def mel_weights_dir(tmp_path_factory) -> Path:
    """A weights folder with a tiny Mel-Band checkpoint, its config in MSST's form (Kim's, narrowed), and
    the folder's own stems.yaml and weights.yaml: what a user writes for their checkpoint."""
    plan_dir = tmp_path_factory.mktemp("plan")
    shutil.copy(KIM_MEL_CONFIG, plan_dir)
    plan = {
        "models": {
            "mel_vocals": {
                "type": "mel_band_roformer",
                "config": KIM_MEL_CONFIG.name,
                "checkpoint": "MelBandRoformer.ckpt",
                "load": "setup",
                "chunking": "config",
            }
        },
        "complements": {"instrumental": "vocals"},
        "modes": {"mel_vocals": {"models": {"mel_vocals": ["vocals"]}, "complements": ["instrumental"]}},
        "output_order": ["vocals", "instrumental"],
    }
    (plan_dir / PLAN_FILE_NAME).write_text(yaml.safe_dump(plan, sort_keys=False))
    return write_tiny_weights(tmp_path_factory.mktemp("mel-weights"), plan_dir / PLAN_FILE_NAME)


@pytest.mark.slow
def test_a_mel_band_checkpoint_separates_through_the_pipeline(mel_weights_dir, tmp_path):
    config_text = (mel_weights_dir / "MelBandRoformer.yaml").read_text()  # MSST's form: tuples, no `stems`
    assert "!!python/tuple" in config_text and "\nstems:" not in config_text
    separator = Separator(mel_weights_dir, "cpu")
    spec = separator.plan.models["mel_vocals"]
    assert isinstance(spec, MelBandRoformerSpec) and separator.loaded_models == ["mel_vocals"]
    assert isinstance(separator.model("mel_vocals").checkpoint.model, MelBandRoformer)

    song_path = tmp_path / "song.wav"
    mix = 0.1 * np.random.default_rng(0).standard_normal((3 * 44100, 2)).astype(np.float32)
    sf.write(song_path, mix, 44100, subtype="FLOAT")
    request = Request(stems="mel_vocals", output_format="wav", wav_bit_depth="32-float")
    written = list(separator.stems_as_written(song_path, tmp_path / "out", request))
    assert [stem.path.name for stem in written] == ["vocals.wav", "instrumental.wav"]
    vocals, instrumental = (sf.read(stem.path, dtype="float32")[0] for stem in written)
    np.testing.assert_allclose(vocals + instrumental, mix, atol=1e-6)

    # the stem is the checkpoint's network run at MSST's chunking of the config (8 s, half overlap)
    chunk, overlap = spec.chunking_samples(request.run_options)
    assert (chunk, overlap, spec.batch_size(request.run_options)) == (352_800, 176_400, 4)
    model = RoformerCheckpoint(
        spec.settings["model"], mel_weights_dir / spec.checkpoint, network=MelBandRoformer
    )
    waveform = torch.from_numpy(decode_audio(song_path, max_duration_seconds=request.max_duration_seconds))
    expected = chunked_output(separate_chunked(model.model, waveform, "cpu", chunk, overlap, 4, "fp32"))[0]
    np.testing.assert_allclose(vocals.T, expected.numpy(), atol=1e-6)
    assert np.abs(vocals).max() > 1e-4


def test_a_mel_band_checkpoint_runs_from_the_command_line(mel_weights_dir, tmp_path):
    song_path = tmp_path / "song.wav"
    sf.write(song_path, 0.1 * np.random.default_rng(1).standard_normal((44100, 2)), 44100)
    out = tmp_path / "separated"
    arguments = [
        str(song_path),
        "--weights",
        str(mel_weights_dir),
        "--stems",
        "mel_vocals",
        "--out",
        str(out),
    ]
    assert main(arguments) == 0
    (folder,) = out.iterdir()
    assert sorted(path.name for path in folder.iterdir()) == ["instrumental.wav", "vocals.wav"]


def test_kim_config_passes_the_plans_request_checks(tmp_path):
    """The published config in a plan as it is: parsed, its stems known, a request's memory checked
    (the largest batch a request may ask for fits at Kim's 8 s chunks)."""
    shutil.copy(KIM_MEL_CONFIG, tmp_path)
    plan = {
        "models": {
            "kim": {"type": "mel_band_roformer", "config": KIM_MEL_CONFIG.name, "checkpoint": "x.ckpt"}
        },
        "modes": {"vocals": {"models": {"kim": ["vocals"]}}},
        "output_order": ["vocals"],
    }
    (tmp_path / PLAN_FILE_NAME).write_text(yaml.safe_dump(plan))
    loaded = StemPlan.load(tmp_path / PLAN_FILE_NAME)
    assert loaded.models["kim"].stem_names() == ("vocals",)
    assert loaded.resolve(Request(stems="vocals", batch_size=16)).uses == {"kim": ("vocals",)}
