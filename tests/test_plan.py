"""The stem plan: typed, checked when it is loaded, and in agreement with the weights manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from separation.errors import SettingsError
from separation.models.demucs.spec import DemucsSpec
from separation.models.roformer.spec import RoformerSpec
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan
from separation.request import Request
from separation.weights.manifest import load_manifest, package_file_path

EXPECTED_ORDER = {
    "vocals_instrumental": ["vocals", "instrumental"],
    "all_4": ["vocals", "instrumental", "drums", "bass", "other"],
    "all_6": ["vocals", "instrumental", "drums", "bass", "guitar", "piano", "other"],
    "guitar": ["vocals", "instrumental", "guitar", "no_guitar"],
    "guitar_only": ["guitar", "no_guitar"],
}
MEGA53_YAML = Path(__file__).parent / "data" / "mvsep_mega_model_bs_roformer_53_stems.yaml"
MEGA53_STEMS = yaml.load(MEGA53_YAML.read_text(), Loader=yaml.FullLoader)["training"]["instruments"]


@pytest.fixture
def plan() -> StemPlan:
    return StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)


def test_project_plan_orders_stems_as_documented(plan):
    assert {mode: plan.stems_of(mode) for mode in plan.modes} == EXPECTED_ORDER
    assert plan.models_loaded_at("lazy") == ["htdemucs_6s", "bs_roformer_mega53"]
    assert plan.complements == {"instrumental": "vocals", "no_guitar": "guitar"}
    assert plan.mode("all_6").complements == ("instrumental",)  # all_6 stays as the seed defined it


def test_unknown_mode_is_a_clear_error(plan):
    with pytest.raises(
        SettingsError,
        match="unknown stems mode 'karaoke'.*vocals_instrumental, all_4, all_6, guitar, guitar_only",
    ):
        plan.stems_of("karaoke")


def test_specs_are_typed_and_config_paths_resolved(plan):
    vocals = plan.models["bs_roformer_vocals"]
    assert isinstance(vocals, RoformerSpec) and vocals.chunking == "request" and vocals.config.is_file()
    assert vocals.stem_names() == ("vocals",)
    mega53 = plan.models["bs_roformer_mega53"]
    assert mega53.chunking == "config" and list(mega53.stem_names()) == MEGA53_STEMS
    assert mega53.stem_names()[20] == "guitar"
    assert isinstance(plan.models["htdemucs_ft"], DemucsSpec) and plan.models["htdemucs_ft"].batch_size == 8


def edited_plan(tmp_path: Path, edit) -> Path:
    """The project's plan with `edit(document)` applied, written to tmp_path (configs copied beside it)."""
    document = yaml.safe_load((CONFIG_DIR / PLAN_FILE_NAME).read_text())
    edit(document)
    for config in CONFIG_DIR.glob("config_*.yaml"):
        (tmp_path / config.name).write_text(config.read_text())
    path = tmp_path / PLAN_FILE_NAME
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda d: d["models"]["htdemucs_ft"].update(type="scnet"),
            "unknown type 'scnet'",
        ),
        (
            lambda d: d["modes"]["all_4"]["models"].update(htdemucs_v5=["drums"]),
            "undefined model 'htdemucs_v5'",
        ),
        (lambda d: d["output_order"].remove("piano"), "mode 'all_6' gives piano, not in output_order"),
        (
            lambda d: d["modes"]["all_6"]["models"]["htdemucs_6s"].append("ukulele"),
            "mode 'all_6': htdemucs_6s has no stem ukulele",
        ),
        (lambda d: d["modes"]["guitar"]["models"]["bs_roformer_mega53"].append("kazoo"), "has no stem kazoo"),
        (lambda d: d["output_order"].remove("instrumental"), "complement instrumental = mix - vocals"),
        (
            lambda d: d["modes"]["all_4"]["complements"].append("no_guitar"),
            "complement 'no_guitar' but not its",
        ),
        (lambda d: d["models"]["htdemucs_6s"].update(load="sometimes"), "load must be one of setup, lazy"),
        (lambda d: d["models"]["bs_roformer_vocals"].update(chunking="auto"), "chunking must be one of"),
        (lambda d: d["models"]["htdemucs_ft"].update(segment=7.8), "unknown keys \\['segment'\\]"),
        (lambda d: d.pop("output_order"), "malformed"),
        (
            lambda d: d["modes"]["all_6"]["models"].update(bs_roformer_mega53=["guitar"]),
            "mode 'all_6' takes guitar from both htdemucs_6s and bs_roformer_mega53",
        ),
        (
            lambda d: d["modes"]["guitar_only"]["models"].update(
                htdemucs_6s=["vocals"], bs_roformer_vocals=["vocals"]
            ),
            "mode 'guitar_only' takes vocals from both htdemucs_6s and bs_roformer_vocals",
        ),
        (
            lambda d: d["modes"]["guitar"]["models"]["bs_roformer_mega53"].append("no_guitar"),
            "has no stem no_guitar",
        ),
        (
            lambda d: d["modes"]["all_4"]["models"]["htdemucs_ft"].append("guitar"),
            "mode 'all_4': htdemucs_ft has no stem guitar",
        ),
        (lambda d: d["models"]["htdemucs_6s"].update(shifts=-1), "model 'htdemucs_6s': shifts must be"),
        (lambda d: d["models"]["htdemucs_6s"].update(overlap_fraction=1.5), "overlap_fraction must be"),
        (lambda d: d["models"]["htdemucs_6s"].update(seed="x"), "seed must be an integer"),
        (lambda d: d["models"]["htdemucs_6s"].update(overlap=0.25), "unknown keys \\['overlap'\\]"),
        (lambda d: d["models"]["htdemucs_6s"].pop("sources"), "sources must list the bag's sources"),
        (lambda d: d.update(extra_stems_from="htdemucs_v5"), "extra_stems_from names undefined model"),
        (lambda d: d.update(modes_extra={}), "unknown keys \\['modes_extra'\\]"),
        (lambda d: d["modes"]["all_4"].update(order=[]), "mode 'all_4' has unknown keys \\['order'\\]"),
    ],
)
def test_a_bad_plan_is_rejected_at_load_with_a_reason(tmp_path, edit, words):
    """Whatever mode a request would ask for: the plan is refused as it loads, in one line."""
    with pytest.raises(SettingsError, match=words) as error:
        StemPlan.load(edited_plan(tmp_path, edit))
    assert "\n" not in str(error.value)


def test_the_plan_and_the_weights_manifest_agree(plan, tmp_path):
    """Every model of the plan has its files in the manifest, and every manifest file belongs to one: in a
    folder laid out as the manifest says (files shipped in a package copied, the others empty), each model
    lists exactly its manifest's files."""
    targets_by_model: dict[str, set[str]] = {}
    for file in load_manifest():
        targets_by_model.setdefault(file.model, set()).add(file.target)
        path = tmp_path / file.target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(package_file_path(file.package_file).read_bytes() if file.package_file else b"")
    assert set(targets_by_model) == set(plan.models)
    for name, spec in plan.models.items():
        assert set(spec.weight_files(tmp_path)) == targets_by_model[name], name


def request(mode: str, extra_stems=()) -> Request:
    return Request(stems=mode, extra_stems=",".join(extra_stems))


def test_extra_stems_follow_the_mode_and_share_its_mega53_run(plan):
    work = plan.resolve(request("guitar", ["piano", "electric-guitar", "kick"]))
    assert work.order == ["vocals", "instrumental", "guitar", "no_guitar", "piano", "electric-guitar", "kick"]
    assert work.uses == {
        "bs_roformer_vocals": ("vocals",),
        "bs_roformer_mega53": ("guitar", "piano", "electric-guitar", "kick"),  # one run, four heads
    }
    assert work.complements == {"instrumental": "vocals", "no_guitar": "guitar"}
    assert plan.resolve(request("all_4", ["snare"])).uses["bs_roformer_mega53"] == ("snare",)
    assert plan.extra_stem_names == tuple(MEGA53_STEMS)
    assert work.model_of == {
        "vocals": "bs_roformer_vocals",
        "instrumental": "bs_roformer_vocals",  # a complement comes from its source's model
        **dict.fromkeys(["guitar", "no_guitar", "piano", "electric-guitar", "kick"], "bs_roformer_mega53"),
    }


def test_guitar_only_runs_mega53_alone(plan):
    work = plan.resolve(request("guitar_only", ["acoustic-guitar"]))
    assert work.uses == {"bs_roformer_mega53": ("guitar", "acoustic-guitar")}
    assert work.order == ["guitar", "no_guitar", "acoustic-guitar"] and work.complements == {
        "no_guitar": "guitar"
    }


@pytest.mark.parametrize(
    ("mode", "extra", "words"),
    [
        ("all_4", ["gutar"], "unknown name 'gutar'"),
        ("all_4", ["piano", "piano"], "'piano' is given twice"),
        ("all_4", ["bass"], "'bass' is already returned by stems=all_4"),
        ("guitar", ["guitar"], "'guitar' is already returned by stems=guitar"),
    ],
)
def test_bad_extra_stems_are_one_line_listing_the_names(plan, mode, extra, words):
    with pytest.raises(SettingsError, match=words) as error:
        plan.resolve(request(mode, extra))
    message = str(error.value)
    assert "\n" not in message and "accordion, acoustic-guitar" in message and message.endswith("woodwind")
