"""The Replicate contract, end to end: the real Cog server (coglet) serving predict.py on tiny weights.

Each server configuration starts once per module: the main server, one with `--upload-url`
pointing at the local receiver, and one whose weights folder lacks its checkpoint. Predictions
use a 2.5 s stereo test song; the chunk settings are the smallest allowed, to keep the run short.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fixtures.cog_server import CogServer, Receiver, data_url, decode_data_url, read_audio
from fixtures.requests import MAX_DURATION_SECONDS
from fixtures.signals import resample_whole
from fixtures.songs import write_song
from separation.audio.decode import decode_audio
from separation.audio.samplerate import SAMPLE_RATE
from separation.errors import AudioError
from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan

SETUP_TIMEOUT_SECONDS = 240
SONG_SECONDS = 2.5
FAST = {"chunk_size": 4, "overlap": 1}  # BS-RoFormer chunking: the least work the schema allows
DOCUMENTED_ORDER = {
    "vocals_instrumental": ["vocals", "instrumental"],
    "all_4": ["vocals", "instrumental", "drums", "bass", "other"],
    "all_6": ["vocals", "instrumental", "drums", "bass", "guitar", "piano", "other"],
    "guitar": ["vocals", "instrumental", "guitar", "no_guitar"],
    "guitar_only": ["guitar", "no_guitar"],
}
REPORT_NAME = "stems.json"  # the last file of every prediction
MIME_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
MP3_FRAME_SAMPLES = 1152
SYNC_CASES = [  # every stems mode once, every format once, 48 kHz once
    ("vocals_instrumental", "mp3", 44100),
    ("all_4", "flac", 48000),
    ("all_6", "wav", 44100),
    ("guitar_only", "wav", 48000),
]
TERMINAL_STATUSES = ("succeeded", "failed", "canceled")

pytestmark = pytest.mark.slow  # each module starts real Cog servers


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def launched(tiny_weights_dir, tmp_path_factory, receiver) -> dict[str, CogServer]:
    """Every server configuration, started together so that their setups overlap; killed at the end.

    main: the tiny weights; upload: the same with `--upload-url` at the receiver; no_checkpoint: a
    copy of the tiny weights without its BS-RoFormer checkpoints; damaged_6s: a copy whose htdemucs_6s
    model file (loaded on first use) has a flipped byte.
    """
    folder = tmp_path_factory.mktemp("cog-servers")
    broken_weights = shutil.copytree(tiny_weights_dir, folder / "weights-no-checkpoint")
    for checkpoint in broken_weights.glob("*.ckpt"):
        checkpoint.unlink()
    damaged_6s = shutil.copytree(tiny_weights_dir, folder / "weights-damaged-6s")
    six_stems = yaml.safe_load((damaged_6s / "demucs" / "htdemucs_6s.yaml").read_text())["models"][0]
    model_file = next((damaged_6s / "demucs").glob(f"{six_stems}-*.th"))
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    configurations = {
        "main": (tiny_weights_dir, None),
        "upload": (tiny_weights_dir, receiver.url("/upload/")),
        "no_checkpoint": (broken_weights, None),
        "damaged_6s": (damaged_6s, None),
    }
    servers: dict[str, CogServer] = {}
    try:
        for name, (weights, upload_url) in configurations.items():
            servers[name] = CogServer(weights, folder / f"{name}.log", upload_url)
        yield servers
    finally:
        for running in servers.values():
            running.process.terminate()  # all shut down at once; stop() then waits for each
        for running in servers.values():
            running.stop()


def ready(server: CogServer) -> CogServer:
    health = server.wait_until_settled(SETUP_TIMEOUT_SECONDS)
    assert health["status"] == "READY", server.explain(health)
    return server


@pytest.fixture(scope="module")
def server(launched) -> CogServer:
    return ready(launched["main"])


@pytest.fixture(scope="module")
def upload_server(launched) -> CogServer:
    return ready(launched["upload"])


@pytest.fixture(scope="module")
def song_file(tmp_path_factory) -> Path:
    return write_song(tmp_path_factory.mktemp("songs") / "song.wav", seconds=SONG_SECONDS)


@pytest.fixture(scope="module")
def song_url(song_file) -> str:
    """The test song as a data URL (the way a small upload reaches Cog)."""
    return data_url(song_file.read_bytes(), "audio/wav")


@pytest.fixture(scope="module")
def mix(song_file) -> np.ndarray:
    """The test song: [frames, 2] at 44.1 kHz."""
    return read_audio(song_file.read_bytes())[0]


class SyncRuns:
    """Sync predictions of the test song on the main server, each made once and shared by the tests."""

    def __init__(self, server: CogServer, song_url: str):
        self.server, self.song_url = server, song_url
        self._responses: dict[tuple, dict] = {}

    def get(self, stems: str, output_format: str, sample_rate: int) -> dict:
        key = (stems, output_format, sample_rate)
        if key not in self._responses:
            response = self.server.predict(case_input(self.song_url, *key))
            assert response["status"] == "succeeded", self.server.explain(response)
            self._responses[key] = response
        return self._responses[key]


@pytest.fixture(scope="module")
def sync_runs(server, song_url) -> SyncRuns:
    return SyncRuns(server, song_url)


def case_input(audio: str, stems: str, output_format: str, sample_rate: int) -> dict:
    """The inputs of one sync case, with the fast chunk settings."""
    return {
        "audio": audio,
        "stems": stems,
        "output_format": output_format,
        "sample_rate": sample_rate,
        **FAST,
    }


def stems_and_report(response: dict) -> tuple[list[str], dict]:
    """(the stems' data URLs in output order, the stems report): the report is the last file, JSON."""
    *stems, report = response["output"]
    mime, content = decode_data_url(report)
    assert mime == "application/json" and all(not decode_data_url(url)[0].endswith("json") for url in stems)
    return stems, json.loads(content)


def decoded_output(response: dict) -> list[np.ndarray]:
    """The stems' data URLs decoded: one [frames, channels] array per file."""
    return [read_audio(decode_data_url(url)[1])[0] for url in stems_and_report(response)[0]]


def assert_same_stems(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-3)


def async_request(
    server: CogServer, prediction_id: str, inputs: dict, webhook: str, events: list[str]
) -> dict:
    """Start an async prediction that reports `events` to `webhook`; asserts the 202."""
    body = {"id": prediction_id, "input": inputs, "webhook": webhook, "webhook_events_filter": events}
    status, answer = server.request("POST", "/predictions", body, headers={"Prefer": "respond-async"})
    assert status == 202, server.explain((status, answer))
    return answer


def server_temp_dir(server: CogServer) -> Path:
    """Where a server's downloads and stem folders go (its TMPDIR)."""
    return server.log_path.with_name(server.log_path.stem + "-tmp")


def terminal_webhook(receiver: Receiver, prediction_id: str) -> dict | None:
    return next((h for h in receiver.webhooks_for(prediction_id) if h["status"] in TERMINAL_STATUSES), None)


def test_health_is_ready_after_setup(server):
    health = server.health()
    assert health["status"] == "READY"
    assert health["setup"]["status"] == "succeeded"
    # coglet 0.23.1 does not always forward the worker's setup output into the health-check logs (seen
    # in about one run of three); the server's own output always carries it
    setup_output = health["setup"]["logs"] + server.log_path.read_text(errors="replace")
    assert "models ready on cpu" in setup_output


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        pytest.param({"stems": "karaoke"}, "stems", id="unknown-stems-mode"),
        pytest.param({"chunk_size": 2}, "chunk_size", id="chunk-size-below-range"),
        pytest.param({"chunk_size": 31}, "chunk_size", id="chunk-size-above-range"),
        pytest.param({"output_format": "ogg"}, "output_format", id="unknown-format"),
        pytest.param({"sample_rate": 22050}, "sample_rate", id="unsupported-sample-rate"),
        pytest.param(None, "audio", id="missing-audio"),
    ],
)
def test_invalid_input_is_rejected_with_422(server, song_url, inputs, field):
    body = {"input": {"stems": "all_4"} if inputs is None else {"audio": song_url, **inputs}}
    status, answer = server.request("POST", "/predictions", body)
    assert status == 422, server.explain(answer)
    assert [error["loc"] for error in answer["detail"]] == [["body", "input", field]]


def test_overlap_not_below_chunk_size_fails_naming_both(server, song_url):
    response = server.predict({"audio": song_url, "chunk_size": 4, "overlap": 5})
    assert response["status"] == "failed", server.explain(response)
    assert "overlap" in response["error"] and "chunk_size" in response["error"]


@pytest.mark.parametrize(("stems", "output_format", "sample_rate"), SYNC_CASES)
def test_sync_prediction_returns_the_documented_files(sync_runs, mix, stems, output_format, sample_rate):
    response = sync_runs.get(stems, output_format, sample_rate)
    order = DOCUMENTED_ORDER[stems]
    stem_urls, report = stems_and_report(response)
    assert len(stem_urls) == len(order) and list(report) == order
    assert {decode_data_url(url)[0] for url in stem_urls} == {MIME_TYPES[output_format]}
    assert report == response["metrics"]["stems"]  # the figures, model and terms, by both channels

    expected_frames = round(SONG_SECONDS * sample_rate)
    tolerance_frames = 2 * MP3_FRAME_SAMPLES if output_format == "mp3" else 0
    for url in stem_urls:
        samples, rate, subtype = read_audio(decode_data_url(url)[1])
        assert rate == sample_rate and samples.shape[1] == 2
        assert abs(samples.shape[0] - expected_frames) <= tolerance_frames
        if output_format == "wav":
            assert subtype == "PCM_24"  # the wav_bit_depth default

    if output_format != "mp3":  # lossless: a stem and its complement add up to the mix
        vocals, instrumental = decoded_output(response)[:2]
        expected_mix = resample_whole(mix.T.astype(np.float32), SAMPLE_RATE, sample_rate).T
        np.testing.assert_allclose(vocals + instrumental, expected_mix, atol=1e-4)

    metrics = response["metrics"]
    assert metrics["audio_seconds"] == pytest.approx(SONG_SECONDS, abs=1e-3)
    models = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME).mode(stems).models
    assert set(metrics["stage_seconds"]) == {"decode", "write", *models}
    assert metrics["predict_time"] > 0


def test_stem_figures_reach_the_response_and_equal_the_command_line_report(
    sync_runs, song_file, tiny_weights_dir, tmp_path
):
    """record_metric("stems", {...}) reaches the response as a dict; the CLI's --json has the same values."""
    response = sync_runs.get("all_4", "flac", 48000)
    out = tmp_path / "separated"
    cli = [sys.executable, "-m", "separation", str(song_file), "--stems", "all_4", "--format", "flac"]
    cli += [
        "--sample-rate",
        "48000",
        "--chunk-size",
        str(FAST["chunk_size"]),
        "--overlap",
        str(FAST["overlap"]),
    ]
    done = subprocess.run(
        [*cli, "--weights", str(tiny_weights_dir), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / song_file.name / REPORT_NAME).read_text())
    assert list(report) == DOCUMENTED_ORDER["all_4"]
    assert response["metrics"]["stems"] == report == stems_and_report(response)[1]
    assert report["vocals"]["model"] == report["instrumental"]["model"] == "bs_roformer_vocals"
    assert report["drums"]["model"] == "htdemucs_ft" and report["drums"]["terms"] == "research-only"
    logged = [line for line in response["logs"].splitlines() if "LUFS" in line and "audible" in line]
    assert len(logged) == len(DOCUMENTED_ORDER["all_4"])


def test_audio_given_as_http_url_is_downloaded(server, receiver, song_file, sync_runs):
    url = receiver.serve("song.wav", song_file.read_bytes())
    response = server.predict(case_input(url, "vocals_instrumental", "mp3", 44100))
    assert response["status"] == "succeeded", server.explain(response)
    reference = sync_runs.get("vocals_instrumental", "mp3", 44100)
    assert_same_stems(decoded_output(response), decoded_output(reference))


def test_async_prediction_sends_start_and_completed_webhooks(server, receiver, song_url, sync_runs):
    inputs = case_input(song_url, "vocals_instrumental", "mp3", 44100)
    async_request(server, "async-webhooks", inputs, receiver.url("/hook"), ["start", "completed"])

    def start_and_end_arrived() -> bool:
        statuses = {hook["status"] for hook in receiver.webhooks_for("async-webhooks")}
        return "processing" in statuses and bool(statuses & set(TERMINAL_STATUSES))

    receiver.wait_for(start_and_end_arrived, 300)
    statuses = [hook["status"] for hook in receiver.webhooks_for("async-webhooks")]
    assert "processing" in statuses, statuses  # the start webhook (coglet sends "processing", not "starting")
    completed = terminal_webhook(receiver, "async-webhooks")
    assert completed and completed["status"] == "succeeded", server.explain(completed)
    reference = sync_runs.get("vocals_instrumental", "mp3", 44100)
    assert_same_stems(decoded_output(completed), decoded_output(reference))
    assert completed["metrics"]["audio_seconds"] == reference["metrics"]["audio_seconds"]


def test_upload_url_receives_one_file_per_stem(upload_server, receiver, song_url, sync_runs):
    response = upload_server.predict(case_input(song_url, "all_6", "wav", 44100))
    assert response["status"] == "succeeded", upload_server.explain(response)
    order = DOCUMENTED_ORDER["all_6"]
    names = [f"{stem}.wav" for stem in order]
    assert sorted(response["output"]) == sorted(
        receiver.url(f"/stored/{name}") for name in [*names, REPORT_NAME]
    )
    assert json.loads(receiver.uploads[REPORT_NAME][1]) == response["metrics"]["stems"]

    uploaded = {}
    for name in names:
        content_type, body = receiver.uploads[name]
        assert content_type.startswith("audio/")
        samples, rate, _ = read_audio(body)
        assert rate == 44100 and samples.shape == (round(SONG_SECONDS * 44100), 2)
        uploaded[name] = samples

    # The data-URL list carries no names: each position must hold the stem uploaded under its name.
    by_position = decoded_output(sync_runs.get("all_6", "wav", 44100))
    for stem, samples in zip(order, by_position, strict=True):
        distance = {name: np.abs(samples - other).max() for name, other in uploaded.items()}
        assert min(distance, key=distance.get) == f"{stem}.wav" and distance[f"{stem}.wav"] < 1e-3


def test_cancel_mid_run_then_next_prediction_succeeds(server, receiver, tmp_path, song_url):
    long_song = write_song(tmp_path / "long.wav", seconds=60, seed=1)
    inputs = {"audio": receiver.serve("long.wav", long_song.read_bytes()), **FAST}
    async_request(server, "cancel-me", inputs, receiver.url("/hook"), ["start", "logs", "completed"])

    progress = re.compile(r"\[bs_roformer_vocals\] \d+% ")
    shows_progress = receiver.wait_for(
        lambda: any(progress.search(h.get("logs") or "") for h in receiver.webhooks_for("cancel-me")), 300
    )
    assert shows_progress, server.explain(receiver.webhooks_for("cancel-me"))
    status, _ = server.request("POST", "/predictions/cancel-me/cancel")
    assert status == 200

    final = receiver.wait_for(lambda: terminal_webhook(receiver, "cancel-me"), 120)
    assert final and final["status"] == "canceled", server.explain(final)
    assert not list(server_temp_dir(server).glob("stems-*"))  # nothing was handed over: nothing kept
    after = server.predict({"audio": song_url, **FAST})
    assert after["status"] == "succeeded", server.explain(after)


def test_corrupt_upload_fails_with_the_audio_error_and_server_recovers(server, receiver, tmp_path, song_url):
    not_audio = b"This is a text file with an .mp3 name, not audio.\n"
    response = server.predict({"audio": receiver.serve("not_audio.mp3", not_audio)})
    assert response["status"] == "failed", server.explain(response)

    local = tmp_path / "not_audio.mp3"
    local.write_bytes(not_audio)
    with pytest.raises(AudioError) as expected:
        decode_audio(local, max_duration_seconds=MAX_DURATION_SECONDS)
    assert "AudioError" in response["error"]
    assert str(expected.value) in response["error"]  # named as sent, without the runtime's tmp prefix

    assert server.health()["status"] == "READY"
    after = server.predict({"audio": song_url, **FAST})
    assert after["status"] == "succeeded", server.explain(after)


def test_missing_weight_file_fails_setup_naming_it_and_the_fetch_command(launched):
    server = launched["no_checkpoint"]
    health = server.wait_until_settled(SETUP_TIMEOUT_SECONDS)
    assert health["status"] == "SETUP_FAILED", server.explain(health)
    checkpoint = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME).models["bs_roformer_vocals"].checkpoint
    logs = health["setup"]["logs"]
    assert checkpoint in logs and "python -m separation.weights fetch" in logs, server.explain(logs)


# ---------------------------------------------------------------------------------------------------------
# Stems delivered as they finish (an Iterator[Path] output)


def file_names(outputs: list[str]) -> list[str]:
    """The stem file names of an output list of data URLs or upload URLs."""
    names = []
    for url in outputs:
        if url.startswith("data:"):
            names.append(read_audio_name(url))
        else:
            names.append(url.rsplit("/", 1)[-1])
    return names


def read_audio_name(url: str) -> str:
    mime = decode_data_url(url)[0]
    return {"audio/wav": "wav", "audio/flac": "flac", "audio/mpeg": "mp3", "application/json": REPORT_NAME}[
        mime
    ]


def test_vocals_and_instrumental_arrive_while_demucs_still_runs(upload_server, receiver, tmp_path):
    """The first `output` webhook carries vocals and instrumental while htdemucs_ft has not finished; the
    final output is every stem."""
    song = write_song(tmp_path / "twenty.wav", seconds=20, seed=3)
    inputs = {"audio": receiver.serve("twenty.wav", song.read_bytes()), "stems": "all_4", **FAST}
    async_request(upload_server, "early-stems", inputs, receiver.url("/hook"), ["output", "completed"])
    final = receiver.wait_for(lambda: terminal_webhook(receiver, "early-stems"), 300)
    assert final and final["status"] == "succeeded", upload_server.explain(final)
    stem_files = [f"{s}.wav" for s in DOCUMENTED_ORDER["all_4"]]
    assert sorted(file_names(final["output"])) == sorted([*stem_files, REPORT_NAME])

    hooks = receiver.webhooks_for("early-stems")
    first = next(h for h in hooks if "instrumental.wav" in file_names(h.get("output") or []))
    assert first["status"] == "processing"
    assert set(file_names(first["output"])) <= {
        "instrumental.wav",
        "vocals.wav",
    }  # uploads finish in any order
    assert "instrumental" in first["metrics"]["stems"]  # the figures come with the files
    assert "[htdemucs_ft] started" in first["logs"] and "[htdemucs_ft] done" not in first["logs"]


def test_damaged_weights_fail_setup_naming_the_file(launched):
    """A model file with a flipped byte (htdemucs_6s, which loads only on first use) still unpickles: its
    sha256, computed while setup loads the other models, stops the server from going READY."""
    server = launched["damaged_6s"]
    health = server.wait_until_settled(SETUP_TIMEOUT_SECONDS)
    assert health["status"] == "SETUP_FAILED", server.explain(health)
    logs = health["setup"]["logs"] + server.log_path.read_text(errors="replace")
    assert re.search(r"demucs/\w{8}-\w{8}\.th: sha256 is [0-9a-f]{64}, expected", logs), server.explain(logs)
    assert "python -m separation.weights fetch" in logs


def test_cancel_after_the_first_stems_keeps_them_delivered(upload_server, receiver, tmp_path):
    """Cancelled while htdemucs_ft runs, once vocals and instrumental were delivered (both in a webhook's
    output: their uploads finish in any order): they stay; no Demucs stem is uploaded."""
    song = write_song(tmp_path / "long.wav", seconds=60, seed=4)
    inputs = {
        "audio": receiver.serve("long4.wav", song.read_bytes()),
        "stems": "all_4",
        "output_format": "flac",
    }
    async_request(
        upload_server, "cancel-late", {**inputs, **FAST}, receiver.url("/hook"), ["output", "completed"]
    )
    first = receiver.wait_for(
        lambda: [
            h
            for h in receiver.webhooks_for("cancel-late")
            if {"vocals.flac", "instrumental.flac"} <= set(file_names(h.get("output") or []))
        ],
        300,
    )
    assert first and first[0]["status"] == "processing", upload_server.explain(first)
    status, _ = upload_server.request("POST", "/predictions/cancel-late/cancel")
    assert status == 200
    final = receiver.wait_for(lambda: terminal_webhook(receiver, "cancel-late"), 120)
    assert final and final["status"] == "canceled", upload_server.explain(final)
    uploaded = {name for name in receiver.uploads if name.endswith(".flac")}
    assert {"vocals.flac", "instrumental.flac"} <= uploaded
    assert not uploaded & {"drums.flac", "bass.flac", "other.flac"}
    [kept] = server_temp_dir(upload_server).glob("stems-*")  # until the next prediction starts
    assert sorted(path.name for path in kept.iterdir()) == ["instrumental.flac", "vocals.flac"]


# ---------------------------------------------------------------------------------------------------------
# The guitar mode and extra stems


def test_guitar_mode_with_extra_stems_uploads_every_named_file(upload_server, receiver, song_url):
    inputs = {
        "audio": song_url,
        "stems": "guitar",
        "extra_stems": "piano, kick",
        "output_format": "mp3",
        **FAST,
    }
    response = upload_server.predict(inputs)
    assert response["status"] == "succeeded", upload_server.explain(response)
    expected = [f"{stem}.mp3" for stem in [*DOCUMENTED_ORDER["guitar"], "piano", "kick"]]
    assert sorted(file_names(response["output"])) == sorted([*expected, REPORT_NAME])
    assert set(response["metrics"]["stems"]) == {name.removesuffix(".mp3") for name in expected}
    models = set(StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME).mode("guitar").models)
    assert set(response["metrics"]["stage_seconds"]) == {"decode", "write", *models}


def test_a_bad_extra_stem_fails_with_one_line_naming_it(server, song_url):
    response = server.predict({"audio": song_url, "stems": "all_4", "extra_stems": "bass", **FAST})
    assert response["status"] == "failed", server.explain(response)
    assert (
        "'bass' is already returned by stems=all_4" in response["error"] and "woodwind" in response["error"]
    )
    assert "\n" not in response["error"].strip()
    assert server.predict({"audio": song_url, **FAST})["status"] == "succeeded"


def test_a_megabyte_of_extra_stems_is_refused_by_the_schema(server, song_url):
    """The runtime checks extra_stems' declared longest length before run(): a 422 naming the input (coglet
    quotes the whole value in it), and no prediction runs."""
    status, answer = server.request(
        "POST", "/predictions", {"input": {"audio": song_url, "extra_stems": "x," * 600_000}}
    )
    assert status == 422 and [error["loc"] for error in answer["detail"]] == [
        ["body", "input", "extra_stems"]
    ]
    assert "is longer than 487 characters" in answer["detail"][0]["msg"]


def test_an_unknown_extra_stem_is_quoted_shortly(server, song_url):
    """Within the longest length, an unknown name of 400 characters comes back cut to 100."""
    response = server.predict({"audio": song_url, "extra_stems": "k" * 400, **FAST})
    assert response["status"] == "failed", server.explain(response)
    assert "k" * 100 + "'..." in response["error"] and "k" * 101 not in response["error"]
    assert "(400 characters)" in response["error"] and "\n" not in response["error"].strip()


def test_a_path_on_the_server_is_refused(server, song_file, song_url):
    """Only URLs (http, https, data) are read: a plain path would read the server's own disk."""
    response = server.predict({"audio": str(song_file), **FAST})
    assert response["status"] == "failed", server.explain(response)
    assert "audio must be an upload or a URL" in response["error"]
    assert server.predict({"audio": song_url, **FAST})["status"] == "succeeded"
