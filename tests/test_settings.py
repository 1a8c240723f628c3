"""Request settings: every range and choice is checked once, when a SeparationSettings is made, and the
service and the command line both go through that check before any work."""

from __future__ import annotations

import math

import pytest

from fixtures.requests import service_options
from separation.__main__ import main
from separation.errors import SettingsError
from separation.request import (
    BATCH_SIZE_RANGE,
    CHUNK_SECONDS_RANGE,
    MAX_DURATION_SECONDS_RANGE,
    OVERLAP_SECONDS_RANGE,
    OutputSettings,
    SeparationSettings,
    parse_stem_list,
)
from separation.serving import SeparationService

# (SeparationSettings keyword, a refused value, words of the message: the value and the allowed range)
OUT_OF_RANGE = {
    "chunk-below": ("chunk_seconds", 3.9, ["chunk_size", "from 4 to 30 s", "3.9"]),
    "chunk-above": ("chunk_seconds", 1000.0, ["chunk_size", "from 4 to 30 s", "1000.0"]),
    "chunk-nan": ("chunk_seconds", math.nan, ["chunk_size", "from 4 to 30 s", "nan"]),
    "chunk-text": ("chunk_seconds", "8", ["chunk_size", "'8'"]),
    "overlap-below": ("overlap_seconds", 0.5, ["overlap", "from 1 to 8 s", "0.5"]),
    "overlap-above": ("overlap_seconds", 9.0, ["overlap", "from 1 to 8 s", "9.0"]),
    "batch-below": ("batch_size", 0, ["batch_size", "integer from 1 to 16", "got 0"]),
    "batch-above": ("batch_size", 17, ["batch_size", "integer from 1 to 16", "got 17"]),
    "batch-fraction": ("batch_size", 1.5, ["batch_size", "integer", "1.5"]),
    "batch-bool": ("batch_size", True, ["batch_size", "integer", "True"]),
    "max-duration-below": ("max_duration_seconds", 0.0, ["max duration", "from 1 to 7200 s", "0.0"]),
    "max-duration-above": ("max_duration_seconds", 7201.0, ["max duration", "from 1 to 7200 s", "7201.0"]),
    "precision": ("precision", "int8", ["precision", "auto, fp32, fp16, bf16", "'int8'"]),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE)
def test_a_value_out_of_range_is_named_with_its_range(case):
    keyword, value, words = OUT_OF_RANGE[case]
    with pytest.raises(SettingsError) as error:
        SeparationSettings(**{keyword: value})
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_the_ends_of_every_range_are_allowed():
    for chunk, overlap in [(CHUNK_SECONDS_RANGE[0], OVERLAP_SECONDS_RANGE[0]), (CHUNK_SECONDS_RANGE[1], 8.0)]:
        SeparationSettings(chunk_seconds=chunk, overlap_seconds=overlap)
    for batch_size in BATCH_SIZE_RANGE:
        SeparationSettings(batch_size=batch_size)
    for seconds in MAX_DURATION_SECONDS_RANGE:
        SeparationSettings(max_duration_seconds=seconds)


@pytest.mark.parametrize(("chunk", "overlap"), [(4.0, 4.0), (4.0, 5.0), (8.0, 8.0)])
def test_overlap_must_be_below_chunk(chunk, overlap):
    with pytest.raises(SettingsError, match=r"overlap .* must be below chunk"):
        SeparationSettings(chunk_seconds=chunk, overlap_seconds=overlap)


@pytest.mark.parametrize(
    ("field", "value", "choices"),
    [
        ("format", "ogg", "wav, mp3, flac"),
        ("sample_rate", 22050, "44100, 48000"),
        ("wav_bit_depth", 24, "16, 24, 32-float"),  # an int where the choice is the string "24"
        ("mp3_bitrate", 64, "128, 192, 256, 320"),
    ],
)
def test_output_settings_name_the_value_and_the_choices(field, value, choices):
    with pytest.raises(SettingsError, match=f"{field}={value!r} is not supported; choose one of: {choices}"):
        OutputSettings(**{field: value})


@pytest.mark.parametrize("text", [" , ", "piano,,kick", "piano,", ",kick"])
def test_a_blank_extra_stem_is_an_error(text):
    with pytest.raises(SettingsError, match="empty item"):
        parse_stem_list(text)


@pytest.mark.parametrize(("text", "names"), [("", ()), ("  ", ()), (" piano , kick", ("piano", "kick"))])
def test_extra_stems_are_comma_separated_names(text, names):
    assert parse_stem_list(text) == names


def test_extra_stems_given_directly_must_be_names():
    with pytest.raises(SettingsError, match="extra_stems must be instrument names"):
        SeparationSettings(extra_stems=("piano", " "))


# --- every entry point refuses through the same check, before any work --------------------------------

# (command-line arguments, words of the one error line)
CLI_CASES = {
    "chunk-above": (["--chunk-size", "1000", "--overlap", "500"], ["chunk_size", "from 4 to 30 s"]),
    "chunk-below": (["--chunk-size", "2"], ["chunk_size", "from 4 to 30 s", "2.0"]),
    "overlap-above": (["--overlap", "9"], ["overlap", "from 1 to 8 s", "9.0"]),
    "overlap-below": (["--overlap", "0"], ["overlap", "from 1 to 8 s", "0.0"]),
    "overlap-not-below-chunk": (["--chunk-size", "5", "--overlap", "5"], ["overlap (5.0 s)", "chunk_size"]),
    "batch-above": (["--batch-size", "100"], ["batch_size", "from 1 to 16", "100"]),
    "batch-below": (["--batch-size", "0"], ["batch_size", "from 1 to 16", "got 0"]),
    "max-minutes-above": (["--max-minutes", "1000"], ["max duration", "7200 s", "60000.0"]),
    "max-minutes-below": (["--max-minutes", "0"], ["max duration", "from 1", "0.0"]),
    "blank-extra-stem": (["--extra-stems", "piano,,kick"], ["empty item", "'piano,,kick'"]),
    "unknown-mode": (["--stems", "karaoke"], ["unknown stems mode 'karaoke'", "all_4"]),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_command_line_refuses_a_bad_setting_before_loading_anything(case, song, tmp_path, capsys):
    """The weights folder does not exist: the settings error comes first, so nothing was loaded."""
    args, words = CLI_CASES[case]
    assert main([str(song), "--weights", str(tmp_path / "no-weights"), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert all(word in err for word in words), err
    assert "no-weights" not in err


@pytest.fixture(scope="module")
def service(tiny_weights_dir) -> SeparationService:
    return SeparationService(tiny_weights_dir, "cpu")


SERVICE_OPTIONS = service_options()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"chunk_size": 31.0}, ["chunk_size", "from 4 to 30 s", "31.0"]),
        ({"chunk_size": 3.0}, ["chunk_size", "from 4 to 30 s", "3.0"]),
        ({"overlap": 8.5}, ["overlap", "from 1 to 8 s", "8.5"]),
        ({"overlap": 0.5}, ["overlap", "from 1 to 8 s", "0.5"]),
        ({"chunk_size": 4.0, "overlap": 5.0}, ["overlap (5.0 s) must be below chunk_size (4.0 s)"]),
        ({"extra_stems": " , "}, ["empty item"]),
        ({"output_format": "ogg"}, ["format='ogg'", "wav, mp3, flac"]),
        ({"sample_rate": 22050}, ["sample_rate=22050", "44100, 48000"]),
    ],
)
def test_the_service_refuses_a_bad_setting_before_any_work(service, song, change, words):
    """`song` is a file of the server's own disk, which the service refuses to read: the settings error
    comes first, before the upload is looked at."""
    with pytest.raises(SettingsError) as error:
        next(service.predict(song, **{**SERVICE_OPTIONS, **change}))
    assert all(word in str(error.value) for word in words), str(error.value)
