"""Decoding uploads of every supported kind and refusing bad or hostile ones (separation.audio.decode).
Every fixture is generated in tmp_path with numpy, soundfile and the ffmpeg binary."""

import os
import socket
import struct
import subprocess
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fixtures.requests import MAX_DURATION_SECONDS
from fixtures.signals import (
    AMPLITUDE,
    LEFT_HZ,
    RIGHT_HZ,
    SECONDS,
    dominant_hz,
    ffmpeg,
    rms_db,
    stereo_wav,
    tones,
)
from separation.audio.decode import decode_audio, decode_timeout_seconds
from separation.audio.samplerate import SAMPLE_RATE
from separation.errors import AudioError

# ---------------------------------------------------------------------------------------------------------
# Decoding: every format round-trips


def _soundfile_writer(subtype: str, fmt: str = "WAV"):
    def build(tmp_path: Path) -> Path:
        path = tmp_path / f"in.{fmt.lower()}"
        sf.write(path, tones([LEFT_HZ, RIGHT_HZ]), SAMPLE_RATE, subtype=subtype, format=fmt)
        return path

    return build


def _ffmpeg_writer(name: str, *codec_args: str, video: tuple[str, ...] = ()):
    """Encode the stereo test WAV with ffmpeg, optionally beside a small test-pattern video track."""

    def build(tmp_path: Path) -> Path:
        source = stereo_wav(tmp_path / "source.wav")
        path = tmp_path / name
        video_input = ("-f", "lavfi", "-i", f"testsrc=d={SECONDS}:s=32x32:r=5") if video else ()
        ffmpeg("-i", str(source), *video_input, *codec_args, *video, str(path))
        return path

    return build


# (builder, tolerance on the length in 44.1 kHz samples: one codec frame, tolerance on the RMS in dB)
ROUND_TRIP_CASES = {
    "wav-u8": (_soundfile_writer("PCM_U8"), 0, 0.05),
    "wav-16": (_soundfile_writer("PCM_16"), 0, 0.01),
    "wav-24": (_soundfile_writer("PCM_24"), 0, 0.01),
    "wav-32": (_soundfile_writer("PCM_32"), 0, 0.01),
    "wav-float32": (_soundfile_writer("FLOAT"), 0, 0.01),
    "wav-float64": (_soundfile_writer("DOUBLE"), 0, 0.01),
    "flac-16": (_soundfile_writer("PCM_16", "FLAC"), 0, 0.01),
    "flac-24": (_soundfile_writer("PCM_24", "FLAC"), 0, 0.01),
    "aiff": (_soundfile_writer("PCM_24", "AIFF"), 0, 0.01),
    "mp3": (_ffmpeg_writer("in.mp3", "-c:a", "libmp3lame", "-b:a", "192k"), 1152, 0.3),
    "ogg-vorbis": (_ffmpeg_writer("in.ogg", "-c:a", "libvorbis", "-q:a", "5"), 2048, 0.3),
    "opus": (_ffmpeg_writer("in.opus", "-c:a", "libopus", "-b:a", "128k"), 882, 0.3),
    "m4a-aac": (_ffmpeg_writer("in.m4a", "-c:a", "aac", "-b:a", "192k"), 1024, 0.3),
    "mp4-video": (
        _ffmpeg_writer("in.mp4", "-c:a", "aac", "-b:a", "192k", video=("-c:v", "mpeg4", "-shortest")),
        1024,
        0.3,
    ),
    "mkv-video": (
        _ffmpeg_writer("in.mkv", "-c:a", "flac", video=("-c:v", "mpeg4", "-shortest")),
        0,
        0.01,
    ),
    "webm-video": (
        _ffmpeg_writer("in.webm", "-c:a", "libopus", "-b:a", "128k", video=("-c:v", "libvpx", "-shortest")),
        882,
        0.3,
    ),
}


@pytest.mark.parametrize("case", ROUND_TRIP_CASES)
def test_format_round_trip_keeps_length_channels_and_level(tmp_path, case):
    build, length_tolerance, level_tolerance_db = ROUND_TRIP_CASES[case]
    audio = decode_audio(build(tmp_path), max_duration_seconds=MAX_DURATION_SECONDS)
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[0] == 2
    expected_samples = round(SECONDS * SAMPLE_RATE)
    assert abs(audio.shape[1] - expected_samples) <= length_tolerance, audio.shape
    # Left and right stay distinct and in place.
    middle = audio[:, 4410:-4410]
    assert dominant_hz(middle[0]) == pytest.approx(LEFT_HZ, abs=1)
    assert dominant_hz(middle[1]) == pytest.approx(RIGHT_HZ, abs=1)
    expected_db = rms_db(np.array([AMPLITUDE, -AMPLITUDE]) / np.sqrt(2))
    for channel in middle:
        assert rms_db(channel) == pytest.approx(expected_db, abs=level_tolerance_db)


def test_mono_is_copied_to_both_channels_at_the_same_level(tmp_path):
    path = tmp_path / "memo.wav"
    sf.write(path, tones([LEFT_HZ]), SAMPLE_RATE, subtype="PCM_16")
    audio = decode_audio(path, max_duration_seconds=MAX_DURATION_SECONDS)
    np.testing.assert_array_equal(audio[0], audio[1])
    np.testing.assert_allclose(audio[0], tones([LEFT_HZ])[:, 0], atol=1 / 32768)


def test_surround_5_1_uses_the_standard_downmix(tmp_path):
    # Channel order of a 6-channel WAV without a mask, as ffmpeg reads it: FL FR FC LFE SL SR.
    surround = tones([300, 500, 700, 900, 1100, 1300], amplitude=0.2)  # [samples, 6]
    path = tmp_path / "surround.wav"
    sf.write(path, surround, SAMPLE_RATE, subtype="FLOAT")
    audio = decode_audio(path, max_duration_seconds=MAX_DURATION_SECONDS)
    fl, fr, fc, _lfe, sl, sr = surround.T
    expected_left = fl + np.sqrt(0.5) * fc + np.sqrt(0.5) * sl
    expected_right = fr + np.sqrt(0.5) * fc + np.sqrt(0.5) * sr
    np.testing.assert_allclose(audio[0], expected_left, atol=1e-5)
    np.testing.assert_allclose(audio[1], expected_right, atol=1e-5)


def test_resampling_48k_keeps_a_1khz_tone_and_removes_content_above_nyquist(tmp_path):
    rate = 48000
    tone = tones([1000], rate=rate)[:, 0]
    ultrasonic = tones([23000], rate=rate, amplitude=0.1)[:, 0]  # above 44.1 kHz's Nyquist: must vanish
    path = tmp_path / "48k.wav"
    sf.write(path, np.stack([tone, tone + ultrasonic], axis=1), rate, subtype="FLOAT")
    audio = decode_audio(path, max_duration_seconds=MAX_DURATION_SECONDS)
    assert audio.shape[1] == round(SECONDS * SAMPLE_RATE)
    middle = audio[:, 4410:-4410].astype(np.float64)
    assert rms_db(middle[0]) == pytest.approx(rms_db(tone), abs=0.1)
    # The 23 kHz tone would fold back to 21.1 kHz if it were not filtered out.
    spectrum = np.abs(np.fft.rfft(middle[1] * np.blackman(middle.shape[1])))
    freqs_hz = np.fft.rfftfreq(middle.shape[1], 1 / SAMPLE_RATE)
    away_from_tone = spectrum[np.abs(freqs_hz - 1000) > 200]
    assert 20 * np.log10(away_from_tone.max() / spectrum.max()) < -100


@pytest.mark.parametrize("rate", [8000, 192000])
def test_low_and_high_input_rates_come_out_at_44k_with_the_right_length(tmp_path, rate):
    path = stereo_wav(tmp_path / f"{rate}.wav", rate=rate)
    audio = decode_audio(path, max_duration_seconds=MAX_DURATION_SECONDS)
    assert abs(audio.shape[1] - round(SECONDS * SAMPLE_RATE)) <= 1
    assert dominant_hz(audio[0]) == pytest.approx(LEFT_HZ, abs=1)
    assert dominant_hz(audio[1]) == pytest.approx(RIGHT_HZ, abs=1)


# ---------------------------------------------------------------------------------------------------------
# Decoding: bad and hostile files


class Listener:
    """A TCP server on 127.0.0.1 whose thread accepts and closes every connection, recording each one."""

    def __init__(self):
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.05)
        self.port = self._server.getsockname()[1]
        self._addresses = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                connection, address = self._server.accept()
            except TimeoutError:
                continue
            self._addresses.append(address)
            connection.close()

    def stop(self) -> list:
        """Stop the thread, collect connections still waiting in the backlog, return every address seen."""
        if self._stop.is_set():
            return self._addresses
        self._stop.set()
        self._thread.join()
        self._server.setblocking(False)
        while True:
            try:
                connection, address = self._server.accept()
            except BlockingIOError:
                break
            self._addresses.append(address)
            connection.close()
        self._server.close()
        return self._addresses


class FifoTrap:
    """A named pipe posing as a local file; a thread holds its write end and notes whether anyone reads it."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path = path
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._wait_for_reader, daemon=True)
        self._thread.start()

    def _wait_for_reader(self):
        with open(self.path, "wb"):  # blocks until some process opens the pipe to read it
            self._opened.set()

    def stop(self) -> bool:
        """True if something opened the pipe before this call."""
        if not self._thread.is_alive():
            return self._opened.is_set()
        opened = self._opened.is_set()
        release = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer thread finish
        self._thread.join()
        os.close(release)
        return opened


class Sentinels:
    """What a safe decoder never touches: a listener on 127.0.0.1 and local files it was not given."""

    def __init__(self):
        self.listener = Listener()
        self._traps = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.port}"

    def local_file(self, path: Path) -> Path:
        """A named pipe at `path` that records being opened."""
        self._traps.append(FifoTrap(path))
        return path

    def touched(self) -> list[str]:
        """Stop watching; describe every connection made and every trap opened."""
        touched = [f"connection from {address}" for address in self.listener.stop()]
        return touched + [f"opened {trap.path.name}" for trap in self._traps if trap.stop()]


@pytest.fixture
def sentinels():
    watcher = Sentinels()
    yield watcher
    watcher.touched()


def test_sentinels_notice_a_connection_and_a_read(tmp_path, sentinels):
    trap = sentinels.local_file(tmp_path / "trap.wav")
    socket.create_connection(("127.0.0.1", sentinels.listener.port)).close()
    subprocess.run(["cat", str(trap)], check=True)
    assert len(sentinels.touched()) == 2


def _write(name: str, content: bytes):
    def build(tmp_path: Path, sentinels: Sentinels) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return build


def _missing(tmp_path, sentinels):
    return tmp_path / "nowhere.wav"


def _directory(tmp_path, sentinels):
    (tmp_path / "folder.wav").mkdir()
    return tmp_path / "folder.wav"


def _zip(tmp_path, sentinels):
    path = tmp_path / "songs.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("song.txt", "la " * 1000)
    return path


def _png(tmp_path, sentinels):
    path = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", str(path))
    return path


def _truncated(codec_args: tuple[str, ...], name: str):
    def build(tmp_path, sentinels):
        source = stereo_wav(tmp_path / "source.wav", seconds=3.0)
        whole = tmp_path / f"whole.{name}"
        ffmpeg("-i", str(source), *codec_args, str(whole))
        path = tmp_path / f"half.{name}"
        path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        return path

    return build


def _wav_with_patched_header(field: str):
    """A valid 16-bit stereo WAV with one header field made to lie."""

    def build(tmp_path, sentinels):
        path = stereo_wav(tmp_path / f"{field}.wav")
        data = bytearray(path.read_bytes())
        fmt_at, data_at = data.find(b"fmt "), data.find(b"data")
        if field == "data_size":  # claims four times the audio that is there
            struct.pack_into("<I", data, data_at + 4, 4 * struct.unpack_from("<I", data, data_at + 4)[0])
        elif field == "channels":  # claims 8 channels, frames still 4 bytes
            struct.pack_into("<H", data, fmt_at + 10, 8)
        elif field == "codec":  # a format tag no decoder knows
            struct.pack_into("<H", data, fmt_at + 8, 0x1234)
        path.write_bytes(bytes(data))
        return path

    return build


def _video_only(tmp_path, sentinels):
    path = tmp_path / "silent_film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=1:s=32x32:r=5", "-c:v", "mpeg4", str(path))
    return path


def _zero_samples(tmp_path, sentinels):
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 2)), SAMPLE_RATE)
    return path


def _float_wav_with(value: float):
    def build(tmp_path, sentinels):
        audio = tones([LEFT_HZ, RIGHT_HZ])
        audio[1000, 1] = value
        path = tmp_path / "broken_float.wav"
        sf.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
        return path

    return build


def _ten_hour_flac(tmp_path, sentinels):
    # 10 hours of silence; 1 kHz keeps the file (16 kB) and its making (~0.4 s) small.
    path = tmp_path / "ten_hours.flac"
    ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=1000:cl=mono:n=65535", "-t", "36000",
        "-c:a", "flac", "-compression_level", "0", "-frame_size", "65535", str(path),
    )  # fmt: skip
    return path


def _flac_understating_its_length(tmp_path, sentinels):
    """3 s of FLAC whose STREAMINFO says 1 s: only the decode itself can see the real length."""
    path = tmp_path / "liar.flac"
    sf.write(path, tones([LEFT_HZ, RIGHT_HZ], seconds=3.0), SAMPLE_RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    # STREAMINFO starts at byte 8; bytes 18..25 hold rate(20 bits) channels(3) bits(5) total samples(36).
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | SAMPLE_RATE
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def _hls(name: str):
    """An HLS playlist listing a local file (a trap) and a segment on the test listener."""

    def build(tmp_path, sentinels):
        sentinels.local_file(tmp_path / "beside.mp3")
        path = tmp_path / name
        path.write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:2.0,\nbeside.mp3\n#EXTINF:2.0,\n{sentinels.url}/segment.ts\n#EXT-X-ENDLIST\n"
        )
        return path

    return build


def _ffconcat(tmp_path, sentinels):
    """A concat list naming a local file (a trap; relative, as ffmpeg's safe mode allows) and the listener."""
    sentinels.local_file(tmp_path / "beside.wav")
    path = tmp_path / "list.ffconcat"
    path.write_text(f"ffconcat version 1.0\nfile 'beside.wav'\nfile '{sentinels.url}/part.wav'\n")
    return path


# case: (builder(tmp_path, sentinels) -> path, decode_audio keyword arguments, words the message must contain)
MALFORMED_CASES = {
    "missing": (_missing, {}, ["not found"]),
    "directory": (_directory, {}, ["not a regular file"]),
    "empty": (_write("empty.wav", b""), {}, ["empty"]),
    "text-named-mp3": (_write("notes.mp3", b"this is not music\n" * 50), {}, ["not a supported audio"]),
    "zip": (_zip, {}, ["not a supported audio"]),
    "png": (_png, {}, ["png_pipe", "not accepted"]),
    "random-bytes": (
        _write("noise.bin", np.random.default_rng(0).bytes(20000)),
        {},
        ["not a supported audio"],
    ),
    "truncated-mp3": (_truncated(("-c:a", "libmp3lame"), "mp3"), {}, ["truncated"]),
    "truncated-flac": (_truncated(("-c:a", "flac"), "flac"), {}, ["truncated"]),
    "wav-data-size-lies": (_wav_with_patched_header("data_size"), {}, ["truncated", "header"]),
    "wav-channel-count-lies": (_wav_with_patched_header("channels"), {}, ["inconsistent", "8 channel"]),
    "wav-unknown-codec": (_wav_with_patched_header("codec"), {}, ["unknown codec", "0x1234"]),
    "video-without-audio": (_video_only, {}, ["no audio track"]),
    "zero-samples": (_zero_samples, {}, ["no audio samples"]),
    "nan-samples": (_float_wav_with(np.nan), {}, ["NaN"]),
    "inf-samples": (_float_wav_with(np.inf), {}, ["infinite"]),
    "ten-hours": (_ten_hour_flac, {}, ["10:00:00", "limit is 30:00"]),  # rejected from the header alone
    "length-understated": (_flac_understating_its_length, {"max_duration_seconds": 2.0}, ["limit", "passed"]),
    "hls-playlist": (_hls("playlist.m3u8"), {}, ["'hls'", "not accepted"]),
    "hls-disguised-as-mp3": (_hls("playlist.mp3"), {}, ["'hls'", "not accepted"]),
    "ffconcat": (_ffconcat, {}, ["'concat'", "not accepted"]),
}


@pytest.mark.parametrize("case", MALFORMED_CASES)
def test_malformed_input_gives_a_clear_audio_error(tmp_path, sentinels, case):
    build, kwargs, words = MALFORMED_CASES[case]
    path = build(tmp_path, sentinels)
    with pytest.raises(AudioError) as raised:
        decode_audio(path, **{"max_duration_seconds": MAX_DURATION_SECONDS, **kwargs})
    message = str(raised.value)
    for word in words:
        assert word in message, message
    assert str(tmp_path) not in message  # names the file, never the server's paths
    assert sentinels.touched() == []  # anything ffmpeg touched, it touched before decode_audio returned


def test_the_decode_deadline_grows_with_the_length_limit():
    assert decode_timeout_seconds(1800.0) == 510.0 and decode_timeout_seconds(60.0) == 75.0


def test_stated_length_check_ignores_a_video_track_longer_than_the_audio(tmp_path):
    source = stereo_wav(tmp_path / "source.wav", seconds=1.0)
    path = tmp_path / "long_video.mkv"
    ffmpeg(
        "-i",
        str(source),
        "-f",
        "lavfi",
        "-i",
        "testsrc=d=3:s=32x32:r=5",
        "-c:a",
        "flac",
        "-c:v",
        "mpeg4",
        str(path),
    )
    assert decode_audio(path, max_duration_seconds=MAX_DURATION_SECONDS).shape[1] == SAMPLE_RATE
