"""The request: every input declared once (separation.request), the Cog signature and the command line in
agreement with the declaration, and one check of every value, the same from every entry point."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from cog._inspector import create_predictor

from separation.__main__ import main, parse_args
from separation.errors import QUOTED_CHARACTERS, SettingsError
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan
from separation.request import REQUIRED, Request, declared_inputs
from separation.weights.manifest import REPO_ROOT

PLAN = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)
COG_INPUTS = [spec for spec in PLAN.declared_inputs() if spec.cog]

# --- the Cog model's signature is the declaration --------------------------------------------------------


def cog_view() -> dict:
    """{input: (type, default, choices, ge, le, max_length, description)} as the cog SDK reads predict.py."""
    predictor = create_predictor("predict", "Runner")
    view = {}
    for name, field in sorted(predictor.inputs.items(), key=lambda item: item[1].order):
        default = field.default.default if hasattr(field.default, "default") else field.default
        choices = None if field.choices is None else tuple(field.choices)
        kind = field.type.primitive.name.lower()
        view[name] = (kind, default, choices, field.ge, field.le, field.max_length, field.description)
    return view


def declared_view() -> dict:
    """The same tuple for every input of the declaration that the Cog model takes."""
    kinds = {str: "string", float: "float", int: "integer", Path: "path"}
    view = {}
    for spec in COG_INPUTS:
        default = None if spec.default is REQUIRED else spec.default
        low, high = spec.bounds or (None, None)
        choices = spec.choices or None
        view[spec.name] = (kinds[spec.type], default, choices, low, high, spec.max_length, spec.description)
    return view


def test_the_cog_signature_states_the_declaration(monkeypatch):
    """Name, order, type, default, choices, range, longest text and description of every input."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    got, wanted = cog_view(), declared_view()
    assert list(got) == list(wanted)
    for name in wanted:
        assert got[name] == wanted[name], f"predict.py's {name} differs from separation.request: {got[name]}"


def test_every_input_argument_in_predict_py_is_a_literal():
    """Cog writes the schema from predict.py's source without running it (its static parser resolves
    literals only: a name imported from elsewhere becomes a null default or a build error)."""
    tree = ast.parse((REPO_ROOT / "predict.py").read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Input"
    ]
    assert len(calls) == len(COG_INPUTS)
    for call in calls:
        for keyword in call.keywords:
            ast.literal_eval(keyword.value)  # raises ValueError for anything but a literal


def test_predict_passes_every_input_on_to_the_request():
    """run() builds the Request from its own arguments: each one but the audio is a Request field."""
    request_fields = {spec.name for spec in declared_inputs()[1:]}
    assert {spec.name for spec in COG_INPUTS[1:]} <= request_fields


def test_the_command_line_takes_every_input_under_its_own_name(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = capsys.readouterr().out
    for spec in PLAN.declared_inputs()[1:]:
        assert "--" + spec.name.replace("_", "-") in help_text
    args = parse_args(["song.wav"])
    assert {spec.name: getattr(args, spec.name) for spec in declared_inputs()[1:]} == vars(Request())
    assert parse_args(["song.wav", "--format", "flac"]).output_format == "flac"  # the older name


def test_the_longest_extra_stems_is_all_the_names():
    (extra,) = [spec for spec in COG_INPUTS if spec.name == "extra_stems"]
    assert extra.max_length == len(", ".join(PLAN.extra_stem_names))
    every_name = ", ".join(name for name in PLAN.extra_stem_names if name not in PLAN.stems_of("all_4"))
    PLAN.resolve(
        Request(stems="all_4", extra_stems=every_name)
    )  # the longest valid text in all_4 is accepted


# --- one check of every value ----------------------------------------------------------------------------

# (Request keyword, a refused value, words of the message: the value and what is allowed)
REFUSED = {
    "chunk-below": ("chunk_size", 3.9, ["chunk_size", "from 4 to 30 s", "3.9"]),
    "chunk-above": ("chunk_size", 1000.0, ["chunk_size", "from 4 to 30 s", "1000.0"]),
    "chunk-nan": ("chunk_size", math.nan, ["chunk_size", "from 4 to 30 s", "nan"]),
    "chunk-text": ("chunk_size", "8", ["chunk_size", "'8'"]),
    "overlap-below": ("overlap", 0.5, ["overlap", "from 1 to 8 s", "0.5"]),
    "overlap-above": ("overlap", 9.0, ["overlap", "from 1 to 8 s", "9.0"]),
    "batch-below": ("batch_size", 0, ["batch_size", "integer from 1 to 16", "got 0"]),
    "batch-above": ("batch_size", 17, ["batch_size", "integer from 1 to 16", "got 17"]),
    "batch-fraction": ("batch_size", 1.5, ["batch_size", "integer", "1.5"]),
    "batch-bool": ("batch_size", True, ["batch_size", "integer", "True"]),
    "max-minutes-below": ("max_minutes", 0.0, ["max_minutes", "from 0.1 to 120 min", "0.0"]),
    "max-minutes-above": ("max_minutes", 121.0, ["max_minutes", "from 0.1 to 120 min", "121.0"]),
    "precision": ("precision", "int8", ["precision", "auto, fp32, fp16, bf16", "'int8'"]),
    "format": ("output_format", "ogg", ["output_format", "wav, mp3, flac", "'ogg'"]),
    "rate": ("sample_rate", 22050, ["sample_rate", "44100, 48000", "22050"]),
    "depth-int": ("wav_bit_depth", 24, ["wav_bit_depth", "16, 24, 32-float", "got 24"]),  # not "24"
    "bitrate": ("mp3_bitrate", 64, ["mp3_bitrate", "128, 192, 256, 320", "64"]),
    "extra-not-text": ("extra_stems", ["piano"], ["extra_stems must be str", "['piano']"]),
    "stems-not-text": ("stems", 4, ["stems must be str", "4"]),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_value_is_one_line_naming_what_is_allowed(case):
    keyword, value, words = REFUSED[case]
    with pytest.raises(SettingsError) as error:
        Request(**{keyword: value})
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_the_ends_of_every_range_are_allowed():
    for spec in declared_inputs():
        if spec.bounds is not None:
            for end in spec.bounds:
                value = spec.type(end)
                changes = {spec.name: value}
                if spec.name == "overlap":
                    changes["chunk_size"] = 30.0
                if spec.name == "chunk_size" and value < Request().overlap + 1:
                    changes["overlap"] = 1.0
                Request(**changes)


@pytest.mark.parametrize(("chunk", "overlap"), [(4.0, 4.0), (4.0, 5.0), (8.0, 8.0), (4.0, 3.99999999)])
def test_overlap_must_be_below_chunk_in_samples(chunk, overlap):
    """The last case is below in seconds, equal in samples: it is the samples the engine steps by."""
    with pytest.raises(SettingsError, match=r"overlap \(.* s\) must be below chunk_size"):
        Request(chunk_size=chunk, overlap=overlap)


@pytest.mark.parametrize("text", [" , ", "piano,,kick", "piano,", ",kick"])
def test_a_blank_extra_stem_is_an_error(text):
    with pytest.raises(SettingsError, match="empty item"):
        Request(extra_stems=text)


@pytest.mark.parametrize(("text", "names"), [("", ()), ("  ", ()), (" piano , kick", ("piano", "kick"))])
def test_extra_stems_are_comma_separated_names(text, names):
    assert Request(extra_stems=text).extra_stem_names == names


@pytest.mark.parametrize(
    "request_",
    [
        Request(extra_stems="x" * 1_200_000),
        Request(extra_stems="piano," + "y" * 5000),
        Request(stems="z" * 100_000),
    ],
    ids=["too-long", "a-long-unknown-name", "a-long-mode"],
)
def test_an_error_quotes_at_most_a_hundred_characters_of_what_was_sent(request_):
    """A megabyte of extra_stems must not come back as a megabyte of error (a Worker reads 1 MiB)."""
    with pytest.raises(SettingsError) as error:
        PLAN.resolve(request_)
    message = str(error.value)
    sent = max(request_.extra_stems, request_.stems, key=len)
    assert "\n" not in message and "characters" in message, message
    longest_run = max(len(run) for run in message.replace("'", " ").split(" "))
    assert longest_run <= QUOTED_CHARACTERS + 10 and len(message) < 1500 < len(sent), message


# --- the command line refuses through the same check, before anything loads ------------------------------

# (command-line arguments, words of the one error line)
CLI_CASES = {
    "chunk-above": (["--chunk-size", "1000", "--overlap", "500"], ["chunk_size", "from 4 to 30 s"]),
    "chunk-below": (["--chunk-size", "2"], ["chunk_size", "from 4 to 30 s", "2.0"]),
    "overlap-above": (["--overlap", "9"], ["overlap", "from 1 to 8 s", "9.0"]),
    "overlap-below": (["--overlap", "0"], ["overlap", "from 1 to 8 s", "0.0"]),
    "overlap-not-below-chunk": (["--chunk-size", "5", "--overlap", "5"], ["overlap (5 s)", "chunk_size"]),
    "batch-above": (["--batch-size", "100"], ["batch_size", "from 1 to 16", "100"]),
    "batch-below": (["--batch-size", "0"], ["batch_size", "from 1 to 16", "got 0"]),
    "max-minutes-above": (["--max-minutes", "1000"], ["max_minutes", "120 min", "1000.0"]),
    "format": (["--output-format", "ogg"], ["output_format must be one of wav, mp3, flac", "'ogg'"]),
    "blank-extra-stem": (["--extra-stems", "piano,,kick"], ["empty item", "'piano,,kick'"]),
    "unknown-mode": (["--stems", "karaoke"], ["stems must be one of", "guitar_only", "'karaoke'"]),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_command_line_refuses_a_bad_value_before_loading_anything(case, song, tmp_path, capsys):
    """The weights folder does not exist: the request's error comes first, so nothing was loaded."""
    args, words = CLI_CASES[case]
    assert main([str(song), "--weights", str(tmp_path / "no-weights"), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert all(word in err for word in words), err
    assert "no-weights" not in err
