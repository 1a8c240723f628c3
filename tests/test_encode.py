"""Writing stems whole and block by block (separation.encode)."""

import itertools
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from fixtures.processes import ffmpeg_children
from fixtures.signals import LEFT_HZ, SECONDS, dominant_hz, ffprobe_stream, rms_db, stem_signal
from separation.decode import decode_audio
from separation.encode import RESCALE_PEAK_DBFS, StemStream, write_stem
from separation.errors import SettingsError
from separation.samplerate import SAMPLE_RATE
from separation.settings import MP3_BITRATES, OutputSettings

# ---------------------------------------------------------------------------------------------------------
# Encoding


@pytest.mark.parametrize(
    ("fmt", "depth", "subtype"),
    [
        ("wav", "16", "PCM_16"),
        ("wav", "24", "PCM_24"),
        ("wav", "32-float", "FLOAT"),
        ("flac", "16", "PCM_16"),
        ("flac", "24", "PCM_24"),
        ("flac", "32-float", "PCM_24"),  # FLAC has no float samples
    ],
)
@pytest.mark.parametrize("rate", [44100, 48000])
def test_wav_and_flac_have_the_requested_depth_rate_and_content(tmp_path, fmt, depth, subtype, rate):
    stem = stem_signal()
    path = write_stem(
        stem, "vocals", tmp_path, OutputSettings(format=fmt, wav_bit_depth=depth, sample_rate=rate)
    )
    assert path == tmp_path / f"vocals.{fmt}"
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (fmt.upper(), subtype, rate, 2)
    assert info.frames == round(SECONDS * rate)
    written = sf.read(path, dtype="float32")[0].T  # [2, samples]
    if rate == SAMPLE_RATE:
        step = {"PCM_16": 2**-15, "PCM_24": 2**-23, "FLOAT": 0.0}[subtype]
        np.testing.assert_allclose(written, stem, rtol=0, atol=step / 2 + 1e-9)
    else:
        assert dominant_hz(written[0], rate) == pytest.approx(LEFT_HZ, abs=1)
        assert rms_db(written[1]) == pytest.approx(rms_db(stem[1]), abs=0.01)


@pytest.mark.parametrize("bitrate", MP3_BITRATES)
def test_mp3_is_constant_bitrate_at_the_requested_rate_and_sounds_like_the_stem(tmp_path, bitrate):
    rate = 48000 if bitrate == 256 else 44100
    stem = stem_signal()
    path = write_stem(
        stem, "drums", tmp_path, OutputSettings(format="mp3", mp3_bitrate=bitrate, sample_rate=rate)
    )
    assert path.name == "drums.mp3"
    stream = ffprobe_stream(path)
    assert (stream["codec_name"], int(stream["sample_rate"]), int(stream["bit_rate"])) == (
        "mp3",
        rate,
        bitrate * 1000,
    )
    decoded = decode_audio(path)  # back at 44.1 kHz; the LAME header trims encoder delay and padding
    assert decoded.shape == stem.shape
    for channel in range(2):
        assert np.corrcoef(decoded[channel], stem[channel])[0, 1] > 0.999


@pytest.mark.parametrize(
    "settings",
    [
        OutputSettings(format="wav", wav_bit_depth="16"),
        OutputSettings(format="wav", wav_bit_depth="24"),
        OutputSettings(format="flac", wav_bit_depth="24"),
        OutputSettings(format="mp3"),
    ],
    ids=lambda s: f"{s.format}-{s.wav_bit_depth}",
)
def test_rescale_scales_a_clipping_stem_down_and_keeps_its_shape(tmp_path, caplog, settings):
    stem = stem_signal(peak=1.5)
    with caplog.at_level(logging.INFO, logger="separation.encode"):
        path = write_stem(stem, "bass", tmp_path, settings)
    written = decode_audio(path)
    target_peak = 10 ** (RESCALE_PEAK_DBFS / 20)
    gain = target_peak / np.abs(stem).max()
    tolerance = 0.02 if settings.format == "mp3" else 2**-15
    np.testing.assert_allclose(written, stem * gain, rtol=0, atol=tolerance)  # not wrapped, not clipped
    assert "'bass'" in caplog.text and f"{20 * np.log10(gain):.2f} dB" in caplog.text


def test_float_wav_keeps_values_above_full_scale(tmp_path):
    stem = stem_signal(peak=1.5)
    path = write_stem(stem, "piano", tmp_path, OutputSettings(wav_bit_depth="32-float"))
    np.testing.assert_array_equal(sf.read(path, dtype="float32")[0].T, stem)


def test_a_quiet_stem_is_written_unchanged(tmp_path):
    stem = stem_signal(peak=0.9)
    path = write_stem(stem, "guitar", tmp_path, OutputSettings())
    np.testing.assert_allclose(sf.read(path, dtype="float32")[0].T, stem, rtol=0, atol=2**-24 + 1e-9)


def test_a_cpu_torch_tensor_is_accepted(tmp_path):
    stem = stem_signal()
    path = write_stem(torch.from_numpy(stem), "instrumental", tmp_path, OutputSettings())
    assert sf.info(path).frames == stem.shape[1]


@pytest.mark.parametrize(
    ("stem", "name", "words"),
    [
        (np.zeros((1, 100), np.float32), "vocals", "shape"),
        (np.zeros((2, 3, 4), np.float32), "vocals", "shape"),
        (np.full((2, 10), np.nan, np.float32), "vocals", "NaN"),
        (np.zeros((2, 10), np.float32), "../escape", "file name"),
    ],
)
def test_write_stem_rejects_bad_stems_and_names(tmp_path, stem, name, words):
    with pytest.raises(ValueError, match=words):
        write_stem(stem, name, tmp_path, OutputSettings())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "ogg"),
        ("sample_rate", 22050),
        ("sample_rate", "44100"),
        ("wav_bit_depth", 24),
        ("wav_bit_depth", "8"),
        ("mp3_bitrate", 64),
    ],
)
def test_output_settings_name_the_bad_field_and_the_choices(field, value):
    with pytest.raises(SettingsError, match=field) as raised:
        OutputSettings(**{field: value})
    assert "choose one of" in str(raised.value)


def test_output_settings_extension_follows_the_format():
    assert [OutputSettings(format=f).extension for f in ("wav", "flac", "mp3")] == ["wav", "flac", "mp3"]


@pytest.mark.parametrize(
    "settings",
    [
        OutputSettings(format="wav", wav_bit_depth="24"),
        OutputSettings(format="wav", wav_bit_depth="32-float"),
        OutputSettings(format="flac", wav_bit_depth="16"),
        OutputSettings(format="mp3"),
    ],
    ids=lambda s: f"{s.format}-{s.wav_bit_depth}",
)
def test_stems_longer_than_one_write_block_are_written_whole_and_in_order(tmp_path, monkeypatch, settings):
    monkeypatch.setattr("separation.encode._WRITE_BLOCK_FRAMES", 10_000)  # the stem spans 14 blocks
    stem = stem_signal(peak=1.5)[:, : 13 * 10_000 + 777]
    path = write_stem(stem, "drums", tmp_path, settings)
    written = decode_audio(path)
    assert written.shape == stem.shape
    gain = (
        1.0 if settings.wav_bit_depth == "32-float" else 10 ** (RESCALE_PEAK_DBFS / 20) / np.abs(stem).max()
    )
    tolerance = {"mp3": 0.02, "flac": 2**-14}.get(settings.format, 2**-22)
    np.testing.assert_allclose(written, stem * np.float32(gain), rtol=0, atol=tolerance)


# ---------------------------------------------------------------------------------------------------------
# Streaming


STREAMED_FORMATS = [
    OutputSettings(format="wav", wav_bit_depth="16"),
    OutputSettings(format="wav", wav_bit_depth="24"),
    OutputSettings(format="wav", wav_bit_depth="32-float"),
    OutputSettings(format="flac", wav_bit_depth="16"),
    OutputSettings(format="flac", wav_bit_depth="24"),
    OutputSettings(format="mp3", mp3_bitrate=192),
]


def stream_in_blocks(stream: StemStream, stem: np.ndarray, cuts=(1, 500, 4410, 30_000, 60_001)) -> None:
    """Write `stem` [2, samples] to `stream` in blocks of uneven sizes (cut before each index in `cuts`)."""
    edges = [0, *cuts, stem.shape[1]]
    for start, end in itertools.pairwise(edges):
        stream.write(stem[:, start:end])


@pytest.mark.parametrize("settings", STREAMED_FORMATS, ids=lambda s: f"{s.format}-{s.wav_bit_depth}")
@pytest.mark.parametrize("peak", [0.9, 1.5], ids=["quiet", "rescaled"])
def test_a_streamed_stem_is_the_file_write_stem_writes(tmp_path, settings, peak):
    """Byte for byte, MP3 included: ffmpeg's raw-PCM demuxer reads the pipe in fixed-size packets and
    LAME's header holds only settings and lengths, so how the samples arrive does not show. The whole stem
    is asked for only where it must be rescaled."""
    stem = stem_signal(peak)
    expected = write_stem(stem, "bass", tmp_path / "whole", settings)
    asked = []
    with StemStream("bass", tmp_path / "streamed", settings, stem.shape[1]) as stream:
        stream_in_blocks(stream, stem)
        path = stream.close(lambda: asked.append(True) or stem)
    assert path == tmp_path / "streamed" / expected.name
    assert path.read_bytes() == expected.read_bytes()
    float_wav = settings.format == "wav" and settings.wav_bit_depth == "32-float"  # no full scale
    assert asked == ([True] if peak > 1 and not float_wav else [])


def test_streams_at_other_output_rates_are_refused(tmp_path):
    with pytest.raises(SettingsError, match="44100 Hz only"):
        StemStream("vocals", tmp_path, OutputSettings(sample_rate=48000), 100)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("settings", [STREAMED_FORMATS[1], STREAMED_FORMATS[-1]], ids=["wav", "mp3"])
def test_an_abandoned_stream_leaves_no_file_and_no_encoder(tmp_path, settings):
    stem = stem_signal()
    with pytest.raises(RuntimeError, match="model failed"):
        with StemStream("vocals", tmp_path, settings, 44100) as stream:
            stream.write(stem[:, :10_000])
            raise RuntimeError("model failed")
    assert not list(tmp_path.iterdir()) and not ffmpeg_children()


def test_closing_a_stream_short_of_its_length_is_an_error(tmp_path):
    stem = stem_signal()
    stream = StemStream("vocals", tmp_path, OutputSettings(format="mp3"), stem.shape[1])
    stream.write(stem[:, :1000])
    with pytest.raises(ValueError, match=f"1000 frames were streamed, not {stem.shape[1]}"):
        stream.close(lambda: stem)
    assert not list(tmp_path.iterdir()) and not ffmpeg_children()


def test_a_streamed_block_with_nan_is_refused(tmp_path):
    block = stem_signal()[:, :100].copy()
    block[1, 7] = np.nan
    with StemStream("vocals", tmp_path, OutputSettings(), 100) as stream:
        with pytest.raises(ValueError, match="NaN"):
            stream.write(block)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("settings", [STREAMED_FORMATS[1], STREAMED_FORMATS[-1]], ids=["wav", "mp3"])
def test_aborting_a_closed_stream_keeps_its_file(tmp_path, settings):
    """A stem handed to the client stays when a later step of the request fails."""
    stem = stem_signal()
    stream = StemStream("vocals", tmp_path, settings, stem.shape[1])
    stream_in_blocks(stream, stem)
    path = stream.close(lambda: stem)
    stream.abort()
    assert path.is_file() and path.stat().st_size > 0
