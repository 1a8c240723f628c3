"""Writing stems whole and block by block (separation.audio.stem_file)."""

import contextlib
import dataclasses
import itertools
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fixtures.processes import ffmpeg_children
from fixtures.requests import MAX_DURATION_SECONDS, output_settings
from fixtures.signals import (
    LEFT_HZ,
    SECONDS,
    dominant_hz,
    ffprobe_stream,
    resample_whole,
    rms_db,
    stem_signal,
)
from separation.audio.decode import decode_audio
from separation.audio.encoders import MP3_BITRATES, OutputSettings
from separation.audio.samplerate import SAMPLE_RATE
from separation.audio.stem_figures import StemMeter
from separation.audio.stem_file import RESCALE_PEAK_DBFS, StemStream, stem_file_name, write_stem

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
        stem, "vocals", tmp_path, output_settings(output_format=fmt, wav_bit_depth=depth, sample_rate=rate)
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


@pytest.mark.parametrize(
    "bitrate", [pytest.param(b, marks=() if b == 128 else pytest.mark.slow) for b in MP3_BITRATES]
)
def test_mp3_is_constant_bitrate_at_the_requested_rate_and_sounds_like_the_stem(tmp_path, bitrate):
    rate = 48000 if bitrate == 256 else 44100
    stem = stem_signal()
    path = write_stem(
        stem, "drums", tmp_path, output_settings(output_format="mp3", mp3_bitrate=bitrate, sample_rate=rate)
    )
    assert path.name == "drums.mp3"
    stream = ffprobe_stream(path)
    assert (stream["codec_name"], int(stream["sample_rate"]), int(stream["bit_rate"])) == (
        "mp3",
        rate,
        bitrate * 1000,
    )
    # back at 44.1 kHz; the LAME header trims encoder delay and padding
    decoded = decode_audio(path, max_duration_seconds=MAX_DURATION_SECONDS)
    assert decoded.shape == stem.shape
    for channel in range(2):
        assert np.corrcoef(decoded[channel], stem[channel])[0, 1] > 0.999


@pytest.mark.parametrize(
    "settings",
    [
        output_settings(output_format="wav", wav_bit_depth="16"),
        output_settings(output_format="wav", wav_bit_depth="24"),
        output_settings(output_format="flac", wav_bit_depth="24"),
        output_settings(output_format="mp3"),
    ],
    ids=lambda s: f"{s.output_format}-{s.wav_bit_depth}",
)
def test_rescale_scales_a_clipping_stem_down_and_keeps_its_shape(tmp_path, caplog, settings):
    stem = stem_signal(peak=1.5)
    with caplog.at_level(logging.INFO, logger="separation.audio.stem_file"):
        path = write_stem(stem, "bass", tmp_path, settings)
    written = decode_audio(path, max_duration_seconds=MAX_DURATION_SECONDS)
    target_peak = 10 ** (RESCALE_PEAK_DBFS / 20)
    gain = target_peak / np.abs(stem).max()
    tolerance = 0.02 if settings.output_format == "mp3" else 2**-15
    np.testing.assert_allclose(written, stem * gain, rtol=0, atol=tolerance)  # not wrapped, not clipped
    assert "'bass'" in caplog.text and f"{20 * np.log10(gain):.2f} dB" in caplog.text


def test_float_wav_keeps_values_above_full_scale(tmp_path):
    stem = stem_signal(peak=1.5)
    path = write_stem(stem, "piano", tmp_path, output_settings(wav_bit_depth="32-float"))
    np.testing.assert_array_equal(sf.read(path, dtype="float32")[0].T, stem)


def test_a_quiet_stem_is_written_unchanged(tmp_path):
    stem = stem_signal(peak=0.9)
    path = write_stem(stem, "guitar", tmp_path, output_settings())
    np.testing.assert_allclose(sf.read(path, dtype="float32")[0].T, stem, rtol=0, atol=2**-24 + 1e-9)


def test_a_cpu_torch_tensor_is_accepted(tmp_path):
    stem = stem_signal()
    path = write_stem(torch.from_numpy(stem), "instrumental", tmp_path, output_settings())
    assert sf.info(path).frames == stem.shape[1]


@pytest.mark.parametrize(
    ("stem", "name", "words"),
    [
        (np.zeros((1, 100), np.float32), "vocals", "shape"),
        (np.zeros((2, 3, 4), np.float32), "vocals", "shape"),
        (np.zeros((2, 10), np.float32), "../escape", "file name"),
    ],
)
def test_write_stem_rejects_bad_stems_and_names(tmp_path, stem, name, words):
    with pytest.raises(ValueError, match=words):
        write_stem(stem, name, tmp_path, output_settings())


def test_stem_files_are_named_stem_dot_format():
    names = [stem_file_name("no_guitar", f) for f in ("wav", "flac", "mp3")]
    assert names == ["no_guitar.wav", "no_guitar.flac", "no_guitar.mp3"]


# ---------------------------------------------------------------------------------------------------------
# Streaming: the file does not depend on how the stem arrives


STREAMED_FORMATS = [
    output_settings(output_format="wav", wav_bit_depth="16"),
    output_settings(output_format="wav", wav_bit_depth="24"),
    output_settings(output_format="wav", wav_bit_depth="32-float"),
    output_settings(output_format="flac", wav_bit_depth="16"),
    output_settings(output_format="flac", wav_bit_depth="24"),
    output_settings(output_format="mp3", mp3_bitrate=192),
]
FORMAT_IDS = [f"{s.output_format}-{s.wav_bit_depth}" for s in STREAMED_FORMATS]
CUTTINGS = {  # cut before each index
    "one block": (),
    "uneven": (1, 500, 4410, 30_000, 60_001),
    "small blocks": tuple(range(7, 20_000, 997)),
}
QUIET_OR_RESCALED = pytest.mark.parametrize("peak", [0.9, 1.5], ids=["quiet", "rescaled"])
# 48 kHz (resampled as the stem streams) in the fast loop; 44.1 kHz, the rate most other tests write at, slow
BOTH_RATES = pytest.mark.parametrize("rate", [pytest.param(44100, marks=pytest.mark.slow), 48000])


def is_float_wav(settings: OutputSettings) -> bool:
    return settings.output_format == "wav" and settings.wav_bit_depth == "32-float"


def rescale_gain(audio: np.ndarray, full_scale: float) -> float:
    """The gain a stem gets from the whole of `audio` [2, samples] at the output rate."""
    peak = float(np.abs(audio).max())
    return 10 ** (RESCALE_PEAK_DBFS / 20) / peak if peak > full_scale else 1.0


def stream_in_blocks(
    stem: np.ndarray, out_dir, settings: OutputSettings, cuts=CUTTINGS["uneven"], meter=None
) -> Path:
    """Write `stem` [2, samples] through a StemStream in blocks cut before each index in `cuts`."""
    with StemStream("bass", out_dir, settings, stem.shape[1], meter) as stream:
        for start, end in itertools.pairwise([0, *cuts, stem.shape[1]]):
            stream.write(stem[:, start:end])
        return stream.close()


def file_bytes(path: Path) -> bytes:
    """The file's bytes, less the time of writing that libsndfile puts in a float WAV's PEAK chunk."""
    data = bytearray(path.read_bytes())
    peak_chunk = data.find(b"PEAK", 0, 100)
    if peak_chunk >= 0:
        data[peak_chunk + 12 : peak_chunk + 16] = bytes(4)
    return bytes(data)


def whole_stem_file(stem: np.ndarray, path: Path, settings: OutputSettings) -> Path:
    """The WAV or FLAC file of `stem` made in one go, as the whole-stem writer made it before streaming:
    the whole stem resampled, scaled by the gain from its whole peak, clipped, rounded to nearest."""
    audio = resample_whole(stem, SAMPLE_RATE, settings.sample_rate).T  # [samples, 2]
    if is_float_wav(settings):
        samples, subtype = audio, "FLOAT"
    else:
        bits = 16 if settings.wav_bit_depth == "16" else 24
        steps = 2 ** (bits - 1)
        full_scale = (steps - 1) / steps
        scaled = np.clip(audio * np.float32(rescale_gain(audio, full_scale)), -full_scale, full_scale)
        rounded = np.clip(np.rint(scaled * np.float32(steps)), -steps, steps - 1)
        samples = rounded.astype(np.int16) if bits == 16 else rounded.astype(np.int32) << 8
        subtype = f"PCM_{bits}"
    sf.write(path, samples, settings.sample_rate, subtype=subtype, format=settings.output_format.upper())
    return path


@pytest.mark.parametrize("settings", STREAMED_FORMATS, ids=FORMAT_IDS)
@BOTH_RATES
@QUIET_OR_RESCALED
def test_a_stem_file_does_not_depend_on_how_the_stem_is_cut(tmp_path, settings, rate, peak):
    """Byte for byte, MP3 included: ffmpeg's raw-PCM demuxer reads the pipe in fixed-size packets and
    LAME's header holds only settings and lengths; soxr's stream gives the same samples however its input
    is cut."""
    settings = dataclasses.replace(settings, sample_rate=rate)
    stem = stem_signal(peak)
    files = [
        file_bytes(stream_in_blocks(stem, tmp_path / name, settings, cuts)) for name, cuts in CUTTINGS.items()
    ]
    assert files[1:] == files[:-1]


@pytest.mark.parametrize("settings", STREAMED_FORMATS[:-1], ids=FORMAT_IDS[:-1])
@BOTH_RATES
@QUIET_OR_RESCALED
def test_a_streamed_file_is_the_whole_stem_resampled_scaled_and_rounded(tmp_path, settings, rate, peak):
    settings = dataclasses.replace(settings, sample_rate=rate)
    stem = stem_signal(peak)
    path = stream_in_blocks(stem, tmp_path / "streamed", settings)
    expected = whole_stem_file(stem, tmp_path / f"expected.{settings.output_format}", settings)
    assert file_bytes(path) == file_bytes(expected)


@pytest.mark.parametrize("settings", STREAMED_FORMATS, ids=FORMAT_IDS)
def test_a_rescaled_stem_is_the_file_of_the_stem_scaled_beforehand(tmp_path, caplog, settings):
    """The second pass, from the spool, encodes exactly the scaled samples; float WAV is never rescaled."""
    stem = stem_signal(peak=1.5)
    gain = 1.0 if is_float_wav(settings) else rescale_gain(stem, 1.0)
    with caplog.at_level(logging.INFO, logger="separation.audio.stem_file"):
        rescaled = stream_in_blocks(stem, tmp_path / "rescaled", settings)
    scaled = stream_in_blocks(stem * np.float32(gain), tmp_path / "scaled", settings)
    assert file_bytes(rescaled) == file_bytes(scaled)
    assert ("scaled by" in caplog.text) == (gain != 1.0)


@pytest.mark.parametrize("settings", [STREAMED_FORMATS[1], STREAMED_FORMATS[-1]], ids=["wav", "mp3"])
@BOTH_RATES
def test_the_internal_block_size_does_not_show_in_the_file(tmp_path, monkeypatch, settings, rate):
    """A whole stem given at once is resampled, encoded, spooled and read back in blocks."""
    settings = dataclasses.replace(settings, sample_rate=rate)
    stem = stem_signal(peak=1.5)
    expected = file_bytes(write_stem(stem, "drums", tmp_path / "default", settings))
    for module in ("separation.audio.stem_file", "separation.audio.encoders"):
        monkeypatch.setattr(f"{module}.BLOCK_FRAMES", 10_000)  # the stem spans 9 blocks
    assert file_bytes(write_stem(stem, "drums", tmp_path / "small", settings)) == expected


@pytest.mark.parametrize(
    "settings",
    [STREAMED_FORMATS[1], STREAMED_FORMATS[2], STREAMED_FORMATS[-1]],
    ids=FORMAT_IDS[1:3] + ["mp3"],
)
@BOTH_RATES
def test_the_meter_measures_what_goes_to_the_encoder(tmp_path, settings, rate):
    """The samples at the output rate, with the gain the stem was scaled by (none for float WAV)."""
    settings = dataclasses.replace(settings, sample_rate=rate)
    stem = stem_signal(peak=1.5)
    meter = StemMeter(rate)
    stream_in_blocks(stem, tmp_path, settings, CUTTINGS["small blocks"], meter)
    encoded = resample_whole(stem, SAMPLE_RATE, rate)  # [2, samples]: what goes to the encoder
    expected = StemMeter(rate)
    expected.add(encoded)
    expected.gain = 1.0 if is_float_wav(settings) else rescale_gain(encoded, 1.0)  # peaks at 1.5
    got, wanted = meter.figures(-20.0), expected.figures(-20.0)
    assert got.as_dict() == wanted.as_dict()
    for field in ("peak_dbfs", "loudness_lufs", "active_fraction"):
        assert getattr(got, field) == pytest.approx(getattr(wanted, field), abs=1e-9)


def deleted_files() -> dict[int, int]:
    """{descriptor: size in bytes} of the files this process holds open that are gone from their folder:
    anonymous temporary files."""
    files = {}
    for link in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(link).endswith(" (deleted)"):
                files[int(link.name)] = os.fstat(int(link.name)).st_size
    return files


@pytest.mark.parametrize(
    ("settings", "spooled"), [(STREAMED_FORMATS[1], True), (STREAMED_FORMATS[2], False)], ids=FORMAT_IDS[1:3]
)
@BOTH_RATES
def test_a_stream_spools_eight_bytes_a_frame_where_it_may_need_a_rescale(tmp_path, settings, spooled, rate):
    settings = dataclasses.replace(settings, sample_rate=rate)
    stem = stem_signal()
    before = deleted_files()
    with StemStream("vocals", tmp_path, settings, stem.shape[1]) as stream:
        stream.write(stem)
        spools = [size for fd, size in deleted_files().items() if fd not in before]
        stream.close()
    assert deleted_files().keys() <= before.keys()
    if not spooled:
        assert spools == []
    else:  # every frame at the output rate but those soxr holds back until the end (its filter's delay)
        [size] = spools
        frames = round(stem.shape[1] * rate / SAMPLE_RATE)
        assert size % 8 == 0 and frames - 2000 < size // 8 <= frames


@pytest.mark.parametrize("settings", [STREAMED_FORMATS[1], STREAMED_FORMATS[-1]], ids=["wav", "mp3"])
@BOTH_RATES
def test_an_abandoned_stream_leaves_no_file_no_spool_and_no_encoder(tmp_path, settings, rate):
    stem = stem_signal(peak=1.5)
    before = deleted_files()
    with pytest.raises(RuntimeError, match="model failed"):
        with StemStream("vocals", tmp_path, dataclasses.replace(settings, sample_rate=rate), 44100) as stream:
            stream.write(stem[:, :10_000])
            raise RuntimeError("model failed")
    assert not list(tmp_path.iterdir()) and not ffmpeg_children()
    assert deleted_files().keys() <= before.keys()


def test_closing_a_stream_short_of_its_length_is_an_error(tmp_path):
    stem = stem_signal()
    before = deleted_files()
    stream = StemStream("vocals", tmp_path, output_settings(output_format="mp3"), stem.shape[1])
    stream.write(stem[:, :1000])
    with pytest.raises(ValueError, match=f"1000 frames were streamed, not {stem.shape[1]}"):
        stream.close()
    assert not list(tmp_path.iterdir()) and not ffmpeg_children()
    assert deleted_files().keys() <= before.keys()


@pytest.mark.parametrize("settings", [STREAMED_FORMATS[1], STREAMED_FORMATS[-1]], ids=["wav", "mp3"])
def test_aborting_a_closed_stream_keeps_its_file(tmp_path, settings):
    """A stem handed to the client stays when a later step of the request fails."""
    stem = stem_signal(peak=1.5)
    stream = StemStream("vocals", tmp_path, settings, stem.shape[1])
    stream.write(stem)
    path = stream.close()
    stream.abort()
    assert path.is_file() and path.stat().st_size > 0


def test_encoding_at_gain_1_stops_once_the_stem_goes_beyond_full_scale(tmp_path):
    """That file would be thrown away: the stem is encoded from its spool at close."""
    stem = stem_signal(peak=0.5)
    stem[:, 20_000:] *= 3  # [2, samples], beyond full scale from sample 20,000 on
    with StemStream("vocals", tmp_path, output_settings(output_format="mp3"), stem.shape[1]) as stream:
        stream.write(stem[:, :20_000])
        assert ffmpeg_children()
        stream.write(stem[:, 20_000:])
        assert not ffmpeg_children() and not stream.path.exists()
        path = stream.close()
    assert decode_audio(path, max_duration_seconds=MAX_DURATION_SECONDS).max() == pytest.approx(
        10 ** (RESCALE_PEAK_DBFS / 20), abs=0.02
    )
