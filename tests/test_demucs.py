"""Demucs wrapper: offline loading, equality with demucs.api, the skipped specialist, laziness, errors."""

from __future__ import annotations

import hashlib
import importlib.abc
import itertools
import random
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
import yaml
from demucs.api import Separator
from demucs.apply import apply_model

import separation.models.demucs.apply as demucs_apply
from fixtures.requests import run_options
from fixtures.spans import progress_of, whole_stems
from fixtures.tiny_demucs import (
    FOUR_STEMS,
    SIX_STEMS,
    TINY_SEGMENT_SECONDS,
    bag_model,
    write_tiny_bag,
    write_tiny_demucs_weights,
)
from separation.errors import FETCH_COMMAND, AudioError, SettingsError, WeightsError
from separation.models.base import Progress, StemSpan
from separation.models.demucs.bag import bag_file_problems, load_bag
from separation.models.demucs.spec import DemucsSpec

SAMPLE_RATE = 44100
REAL_FT_SIGNATURES = ["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on 2 shared cores run several times faster on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every way out to the network raises, and the test fails afterwards if any was tried."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during a Demucs test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    yield
    assert attempts == [], f"network access attempted: {attempts}"


@pytest.fixture(scope="module")
def shared_bag_dir(tmp_path_factory) -> Path:
    """Tiny htdemucs_ft and htdemucs_6s, written once for the tests that only read them."""
    bag_dir = tmp_path_factory.mktemp("weights") / "demucs"
    write_tiny_demucs_weights(bag_dir)
    return bag_dir


@pytest.fixture
def bag_dir(shared_bag_dir, tmp_path) -> Path:
    """A private copy, for tests that damage files."""
    return Path(shutil.copytree(shared_bag_dir, tmp_path / "demucs"))


@pytest.fixture(scope="module")
def mix() -> torch.Tensor:
    """1.5 s of stereo noise with DC offsets and a gain far from 1, so normalisation matters. [2, samples]"""
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(2, int(1.5 * SAMPLE_RATE), generator=generator)
    return 0.3 * noise + torch.tensor([[0.05], [-0.02]])


def normalised(mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """demucs.api's normalisation, written out: (mix [1, 2, samples], mean, scale)."""
    reference = mix.mean(0)
    mean, scale = reference.mean(), reference.std() + 1e-8
    return ((mix - mean) / scale)[None], mean, scale


@pytest.fixture
def hooked_ft(shared_bag_dir, monkeypatch):
    """A loaded htdemucs_ft whose sub-models count their forward passes; separators get this bag.

    Returns (bag, forwards) with forwards[i] the number of forward passes of sub-model i so far.
    """
    bag = load_bag("htdemucs_ft", shared_bag_dir, "cpu")
    forwards = [0] * len(bag.models)
    for index, model in enumerate(bag.models):
        model.register_forward_pre_hook(
            lambda module, args, i=index: forwards.__setitem__(i, forwards[i] + 1)
        )
    monkeypatch.setattr(demucs_apply, "load_bag", lambda name, bag_dir, device: bag)
    return bag, forwards


def separate(bag_dir: Path, name: str, mix: torch.Tensor, wanted, sources=None, device="cpu", **entry):
    """{source: [2, samples]} of bag `name` loaded on `device` as a plan entry with these keys would load
    it."""
    model = bag_model(bag_dir, name, sources, device=device, **entry)
    return whole_stems(model.separate(mix, wanted, run_options()))


def max_abs_difference(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    return max((ours[source] - reference[source]).abs().max().item() for source in ours)


# --- the tiny fixture itself -------------------------------------------------------------------------------


def test_tiny_bags_are_saved_in_demucs_format(shared_bag_dir):
    ft = yaml.safe_load((shared_bag_dir / "htdemucs_ft.yaml").read_text())
    assert ft["weights"] == [[float(row == col) for col in range(4)] for row in range(4)]
    six = yaml.safe_load((shared_bag_dir / "htdemucs_6s.yaml").read_text())
    assert len(ft["models"]) == 4 and len(six["models"]) == 1 and "weights" not in six
    for sig in ft["models"] + six["models"]:
        (path,) = shared_bag_dir.glob(f"{sig}-*.th")
        assert len(sig) == 8 and set(sig) <= set("0123456789abcdef")
        assert path.stem.split("-")[1] == hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        package = torch.load(path, "cpu", weights_only=False)
        assert set(package) == {"klass", "args", "kwargs", "state", "training_args"}
        assert package["klass"].__name__ == "HTDemucs"
        assert package["kwargs"]["segment"] == TINY_SEGMENT_SECONDS
        assert {tensor.dtype for tensor in package["state"].values()} == {torch.float16}


# --- loading -----------------------------------------------------------------------------------------------


def test_sources_in_demucs_order(shared_bag_dir):
    assert load_bag("htdemucs_ft", shared_bag_dir, "cpu").sources == FOUR_STEMS
    assert load_bag("htdemucs_6s", shared_bag_dir, "cpu").sources == SIX_STEMS


def test_load_bag_gives_eval_models_on_the_device(shared_bag_dir, device):
    bag = load_bag("htdemucs_ft", shared_bag_dir, device)
    assert len(bag.models) == 4 and bag.weights[3] == [0.0, 0.0, 0.0, 1.0]
    assert not any(module.training for module in bag.modules())
    assert {(p.device.type, p.dtype) for p in bag.parameters()} == {(device.type, torch.float32)}


def test_loading_never_imports_huggingface_hub(shared_bag_dir, monkeypatch):
    requested = []

    class RecordHub(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "huggingface_hub":
                requested.append(name)
                raise ImportError("huggingface_hub must not be imported")
            return None

    for name in [m for m in sys.modules if m.split(".")[0] == "huggingface_hub"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [RecordHub(), *sys.meta_path])
    bag_model(shared_bag_dir, "htdemucs_ft")
    load_bag("htdemucs_6s", shared_bag_dir, "cpu")
    assert requested == [] and "huggingface_hub" not in sys.modules


def test_missing_model_file_is_named_with_the_fetch_command(bag_dir):
    sig = yaml.safe_load((bag_dir / "htdemucs_ft.yaml").read_text())["models"][2]
    next(bag_dir.glob(f"{sig}-*.th")).unlink()
    (bag_dir / "htdemucs_6s.yaml").unlink()
    [problem] = bag_file_problems("htdemucs_ft", bag_dir)
    assert f"missing {sig}-*.th" in problem
    [problem] = bag_file_problems("htdemucs_6s", bag_dir)
    assert "missing htdemucs_6s.yaml" in problem
    with pytest.raises(WeightsError, match=sig) as error:
        bag_model(bag_dir, "htdemucs_ft")
    assert str(error.value).count(FETCH_COMMAND) == 1


def test_missing_bag_yaml_lists_the_real_signatures(tmp_path):
    [message] = bag_file_problems("htdemucs_ft", tmp_path)
    assert "missing htdemucs_ft.yaml" in message
    assert all(f"missing {sig}-*.th" in message for sig in REAL_FT_SIGNATURES)
    [message] = bag_file_problems("htdemucs_ft", tmp_path / "absent")
    assert "does not exist" in message


def test_two_files_for_one_signature_are_reported(bag_dir):
    sig = yaml.safe_load((bag_dir / "htdemucs_6s.yaml").read_text())["models"][0]
    shutil.copy(next(bag_dir.glob(f"{sig}-*.th")), bag_dir / f"{sig}.th")
    with pytest.raises(WeightsError, match=f"several files for signature {sig}"):
        load_bag("htdemucs_6s", bag_dir, "cpu")


def test_tampered_file_is_rejected_by_name(bag_dir):
    sig = yaml.safe_load((bag_dir / "htdemucs_ft.yaml").read_text())["models"][1]
    path = next(bag_dir.glob(f"{sig}-*.th"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError) as error:
        load_bag("htdemucs_ft", bag_dir, "cpu")
    assert path.name in str(error.value) and FETCH_COMMAND in str(error.value)


def test_unreadable_file_without_checksum_is_rejected_by_name(bag_dir):
    sig = yaml.safe_load((bag_dir / "htdemucs_6s.yaml").read_text())["models"][0]
    next(bag_dir.glob(f"{sig}-*.th")).unlink()
    (bag_dir / f"{sig}.th").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError) as error:
        bag_model(bag_dir, "htdemucs_6s")
    assert f"{sig}.th" in str(error.value) and FETCH_COMMAND in str(error.value)


# --- separation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shifts", "overlap", "seconds"),
    [
        pytest.param("htdemucs_ft", 0, 0.25, 1.5, marks=pytest.mark.slow),
        ("htdemucs_ft", 1, 0.25, 1.5),
        pytest.param("htdemucs_6s", 2, 0.5, 1.5, marks=pytest.mark.slow),
    ],
)
def test_matches_demucs_api_separator(shared_bag_dir, mix, name, shifts, overlap, seconds):
    track = mix[:, : int(seconds * SAMPLE_RATE)]
    sources = load_bag(name, shared_bag_dir, "cpu").sources
    ours = separate(shared_bag_dir, name, track, sources, shifts=shifts, overlap_fraction=overlap, seed=7)
    api = Separator(model=name, repo=shared_bag_dir, device="cpu", shifts=shifts, overlap=overlap)
    random.seed(7)
    _, reference = api.separate_tensor(track)
    assert list(ours) == sources
    assert all(torch.equal(ours[source], reference[source]) for source in sources)


def test_output_is_the_wanted_sources_only(shared_bag_dir, mix, device):
    out = separate(shared_bag_dir, "htdemucs_6s", mix, ["piano", "drums", "piano"], device=device, shifts=0)
    assert list(out) == ["piano", "drums"]
    for stem in out.values():
        assert stem.shape == mix.shape and stem.dtype == torch.float32 and stem.device.type == "cpu"
        assert torch.isfinite(stem).all() and stem.abs().max() > 0


def test_normalisation_happens_around_apply_model(shared_bag_dir, mix):
    ours = separate(shared_bag_dir, "htdemucs_6s", mix, SIX_STEMS, shifts=0)
    bag = load_bag("htdemucs_6s", shared_bag_dir, "cpu")
    unnormalised = apply_model(bag, mix[None], shifts=0)[0]
    assert max(((ours[s] - unnormalised[k]).abs().max().item() for k, s in enumerate(SIX_STEMS))) > 1e-3


@pytest.mark.parametrize(
    ("wanted", "skipped", "shifts"),
    [
        pytest.param(["bass", "other", "vocals"], [0], 2, marks=pytest.mark.slow),
        pytest.param(["drums", "bass", "vocals"], [2], 2, marks=pytest.mark.slow),
        pytest.param(["drums", "bass", "other"], [3], 2, marks=pytest.mark.slow),
        pytest.param(["other"], [0, 1, 3], 2, marks=pytest.mark.slow),
        (["drums", "bass", "other"], [3], 1),  # the fast loop's case: a skipped specialist with shifts
        pytest.param(["other"], [0, 1, 3], 0, marks=pytest.mark.slow),
    ],
)
def test_skipping_any_specialist_equals_the_full_bag(shared_bag_dir, hooked_ft, mix, wanted, skipped, shifts):
    """A skipped specialist still draws its shift offsets, so the others get the full bag's offsets."""
    bag, forwards = hooked_ft
    ours = separate(shared_bag_dir, "htdemucs_ft", mix, wanted, shifts=shifts, seed=3)
    assert [i for i, count in enumerate(forwards) if count == 0] == skipped

    track, mean, scale = normalised(mix)
    random.seed(3)
    full = apply_model(bag, track, shifts=shifts)[0] * scale + mean  # [4, 2, samples]
    assert sorted(ours) == sorted(wanted)
    assert all(torch.equal(ours[source], full[FOUR_STEMS.index(source)]) for source in wanted)


SEGMENT_SAMPLES = int(TINY_SEGMENT_SECONDS * SAMPLE_RATE)


@pytest.mark.parametrize(
    ("shifts", "overlap", "seconds"),
    [
        pytest.param(shifts, overlap, seconds, marks=() if fast else pytest.mark.slow)
        for shifts in (0, 1, 2)
        for overlap, seconds in ((0.25, 0.5), (0.25, 1.5), (0.5, 0.5), (0.5, 1.5))
        # the fast loop keeps one short and one long track, with and without shifts
        for fast in [(shifts, overlap, seconds) in ((0, 0.5, 0.5), (2, 0.25, 1.5))]
    ],
)
def test_own_loop_is_bit_identical_to_apply_model(shared_bag_dir, mix, shifts, overlap, seconds):
    """One sub-model (htdemucs_6s), tracks shorter than a segment and of several segments."""
    track = mix[:, : int(seconds * SAMPLE_RATE)]
    bag = load_bag("htdemucs_6s", shared_bag_dir, "cpu")
    ours = separate(
        shared_bag_dir, "htdemucs_6s", track, SIX_STEMS, shifts=shifts, overlap_fraction=overlap, seed=11
    )
    normalised_track, mean, scale = normalised(track)
    random.seed(11)
    reference = apply_model(bag, normalised_track, shifts=shifts, overlap=overlap)[0]
    reference = reference * scale + mean  # [6, 2, samples]
    segments = len(range(0, track.shape[1], int((1 - overlap) * SEGMENT_SAMPLES)))
    assert (segments == 1) == (seconds < TINY_SEGMENT_SECONDS)
    assert all(torch.equal(ours[source], reference[k]) for k, source in enumerate(SIX_STEMS))


@pytest.mark.parametrize("wanted", [["drums", "vocals"], pytest.param(["other"], marks=pytest.mark.slow)])
def test_shared_sources_with_any_weights_match_the_bag(tmp_path, mix, wanted):
    """Sources several sub-models share, weights that are no powers of two, shifts=3: equal up to rounding."""
    weights = [[0.3, 1.0, 0.0, 2.0], [0.7, 1.0, 1.0, 0.5]]
    write_tiny_bag(tmp_path, "shared", FOUR_STEMS, 2, weights, seed=50)
    track = mix[:, : int(0.5 * SAMPLE_RATE)]
    ours = separate(tmp_path, "shared", track, wanted, FOUR_STEMS, shifts=3, seed=2)
    normalised_track, mean, scale = normalised(track)
    random.seed(2)
    full = apply_model(load_bag("shared", tmp_path, "cpu"), normalised_track, shifts=3)[0] * scale + mean
    assert max_abs_difference(ours, {s: full[FOUR_STEMS.index(s)] for s in wanted}) <= 1e-6


@pytest.mark.parametrize("shifts", [0, 2])
def test_progress_counts_segments_of_the_models_that_run(shared_bag_dir, hooked_ft, mix, shifts):
    _, forwards = hooked_ft
    separator = bag_model(shared_bag_dir, "htdemucs_ft", shifts=shifts)
    calls = progress_of(separator.separate(mix, ["drums", "bass", "other"], run_options()))
    assert calls[0][0] == 0
    calls = calls[1:]
    total = calls[-1][1]
    assert calls[-1] == (total, total) and {t for _, t in calls} == {total}
    assert all(later > earlier for (earlier, _), (later, _) in itertools.pairwise(calls))
    # up front, each shift is counted with the segment its random offset may add
    assert total - 3 * shifts <= sum(forwards) <= total
    if shifts == 0:
        assert [done for done, _ in calls] == list(range(1, sum(forwards) + 1))


def test_closing_the_run_stops_before_the_next_segment(shared_bag_dir, hooked_ft, mix):
    _, forwards = hooked_ft
    separator = bag_model(shared_bag_dir, "htdemucs_ft", shifts=1)
    state = random.getstate()
    run = separator.separate(mix, FOUR_STEMS, run_options())
    while not (isinstance(event := next(run), Progress) and event.done == 2):  # until the 2nd segment
        pass
    run.close()
    assert sum(forwards) == 2 and random.getstate() == state
    assert list(whole_stems(separator.separate(mix, ["bass"], run_options()))) == ["bass"]  # still usable


def test_each_source_is_handed_over_once_its_last_contributor_ran(shared_bag_dir, hooked_ft, mix):
    """htdemucs_ft: specialist k gives source k alone, so each source comes before the next one runs."""
    _, forwards = hooked_ft
    handed_over = []  # (source, forward passes of each specialist at that moment)
    for event in bag_model(shared_bag_dir, "htdemucs_ft", shifts=0).separate(
        mix, FOUR_STEMS[:3], run_options()
    ):
        if isinstance(event, StemSpan):
            (source,) = event.stems
            handed_over.append((source, list(forwards)))
    assert [source for source, _ in handed_over] == FOUR_STEMS[:3]
    for index, (_, counts) in enumerate(handed_over):
        assert all(counts[: index + 1]) and not any(counts[index + 1 :])


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [2, 3])
def test_batched_segments_equal_one_segment_at_a_time(shared_bag_dir, hooked_ft, batch_size):
    """Several segments per forward pass: same output up to rounding, same draws from `random` (a wrong draw
    count would move the later specialists' shift offsets by whole samples), fewer forward passes."""
    _, forwards = hooked_ft
    track = 0.3 * torch.randn(2, int(4.0 * SAMPLE_RATE), generator=torch.Generator().manual_seed(8))
    separator = bag_model(shared_bag_dir, "htdemucs_ft", shifts=2, seed=3)
    state = random.getstate()
    one_at_a_time = whole_stems(separator.separate(track, FOUR_STEMS, run_options()))
    single_passes, forwards[:] = sum(forwards), [0] * len(forwards)
    batched = whole_stems(separator.separate(track, FOUR_STEMS, run_options(batch_size=batch_size)))
    assert max_abs_difference(batched, one_at_a_time) <= 1e-5
    assert random.getstate() == state
    assert sum(forwards) < single_passes


def test_output_is_deterministic_and_random_state_is_restored(shared_bag_dir, mix, device):
    track = mix[:, : SAMPLE_RATE // 2]  # one segment: the shift offsets are drawn all the same
    separator = bag_model(shared_bag_dir, "htdemucs_ft", device=device, shifts=1, seed=5)
    random.seed(1234)
    state = random.getstate()
    first = whole_stems(separator.separate(track, ["drums", "other"], run_options()))
    assert random.getstate() == state
    random.random()  # a different global state must not matter
    second = whole_stems(separator.separate(track, ["drums", "other"], run_options()))
    assert all(torch.equal(first[s], second[s]) for s in first)
    other_seed = separate(shared_bag_dir, "htdemucs_ft", track, ["drums"], device=device, shifts=1, seed=6)
    assert not torch.equal(first["drums"], other_seed["drums"])


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("shifts", -1),
        ("shifts", 1.5),
        ("shifts", True),
        ("overlap_fraction", -0.1),
        ("overlap_fraction", 1.0),
        ("overlap_fraction", "0.25"),
        ("seed", None),
        ("batch_size", 0),
        ("batch_size", 1.5),
        ("sources", "drums"),
        ("sources", []),
    ],
)
def test_a_bad_plan_entry_is_refused_before_the_bag_loads(tmp_path, setting, value):
    """The plan checks every key when it loads: `tmp_path` holds no bag, and the error is the value's."""
    entry = {"bag": "htdemucs_ft", "folder": ".", "sources": FOUR_STEMS, setting: value}
    with pytest.raises(SettingsError, match=f"model 'htdemucs_ft': {setting}"):
        DemucsSpec.from_entry("htdemucs_ft", entry, tmp_path)


def test_sources_the_bag_does_not_give_are_refused_when_it_loads(shared_bag_dir):
    with pytest.raises(
        WeightsError, match="gives drums, bass, other, vocals; the plan's model htdemucs_ft says"
    ):
        bag_model(shared_bag_dir, "htdemucs_ft", ["drums", "bass", "vocals", "other"])


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (torch.zeros(1, 1000), r"\[2, samples\]"),
        (torch.zeros(2000), r"\[2, samples\]"),
        (torch.zeros(2, 1000, dtype=torch.float64), "float32"),
        (torch.zeros(2, 1), "at least 2"),
        (torch.zeros(2, 1000).numpy(), "ndarray"),
    ],
)
def test_bad_audio_is_refused(shared_bag_dir, audio, message):
    with pytest.raises(AudioError, match=message):
        separate(shared_bag_dir, "htdemucs_6s", audio, ["drums"])
