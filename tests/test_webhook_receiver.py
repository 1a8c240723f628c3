"""Tests for examples/webhook_receiver.py: signed Replicate webhooks against a live server on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import http.server
import importlib.util
import json
import logging
import random
import socket
import sqlite3
import sys
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from fixtures.cog_server import Receiver

MODULE_PATH = Path(__file__).resolve().parents[1] / "examples" / "webhook_receiver.py"
SECRET = "whsec_" + base64.b64encode(b"fretwise-test-signing-key-32byte").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"someone-elses-signing-key-32byte").decode()
STEMS = ("vocals", "instrumental", "drums", "bass", "guitar", "piano", "other")


def _load_receiver():
    """Import the example by path (examples/ is not a package)."""
    return _load_module("webhook_receiver", MODULE_PATH)


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


receiver = _load_receiver()
signing_relay = _load_module("signing_relay", MODULE_PATH.with_name("signing_relay.py"))


def stem_url(stem: str) -> str:
    """A replicate.delivery-like file URL for one stem, with a query string as signed URLs have."""
    return f"https://replicate.delivery/xezq/abc123/{stem}.wav?token=t-{stem}"


def all_stem_urls() -> dict[str, str]:
    return {stem: stem_url(stem) for stem in STEMS}


def prediction_body(prediction_id: str, status: str, **fields: object) -> bytes:
    """A webhook body shaped like Replicate's prediction object."""
    payload = {
        "id": prediction_id,
        "version": "v1",
        "status": status,
        "logs": "",
        "metrics": {},
        "error": None,
    }
    payload.update(fields)
    return json.dumps(payload).encode()


def signed_headers(
    body: bytes, webhook_id: str, sent_at: datetime | None = None, secret: str = SECRET
) -> dict:
    """Standard Webhooks headers for ``body``, as Replicate sends them."""
    sent_at = sent_at or datetime.now(tz=UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, sent_at, body.decode()),
    }


class Harness:
    """A receiver serving on 127.0.0.1 (free port) in a thread; records on_succeeded calls in ``calls``,
    on_stems calls in ``stem_calls`` and on_transcription calls in ``transcriptions``."""

    def __init__(self, db_path: Path, on_succeeded=None):
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.stem_calls: list[tuple[str, dict[str, str]]] = []
        self.transcriptions: list[tuple] = []
        self.store = receiver.Store(db_path)
        self.server = receiver.WebhookServer(
            ("127.0.0.1", 0),
            receiver.load_webhook(SECRET),
            self.store,
            on_succeeded or self._record_call,
            on_stems=lambda prediction_id, stems: self.stem_calls.append((prediction_id, stems)),
            on_transcription=lambda *call: self.transcriptions.append(call),
        )
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        self._stopped = False

    def _record_call(self, prediction_id: str, stems: dict[str, str]) -> None:
        self.calls.append((prediction_id, stems))

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        """Send one request; returns (status, parsed JSON reply, response headers)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, json.loads(response.read()), response.headers
        finally:
            connection.close()

    def post(self, body: bytes, headers: dict) -> tuple[int, dict]:
        """POST to the webhook path; returns (status, parsed JSON reply)."""
        status, reply, _ = self.request("POST", receiver.DEFAULT_PATH, body, headers)
        return status, reply

    def deliver(self, body: bytes, webhook_id: str) -> tuple[int, dict]:
        """POST ``body`` signed with the right secret and the current time."""
        return self.post(body, signed_headers(body, webhook_id))

    def stop(self) -> None:
        """Stop serving and wait for every request thread, so all on_succeeded calls have returned."""
        if not self._stopped:
            self._stopped = True
            self.server.shutdown()
            self.server.server_close()
            self._thread.join()


@pytest.fixture
def harness(tmp_path):
    running = Harness(tmp_path / "predictions.sqlite3")
    yield running
    running.stop()
    running.store.close()


# --- state machine --------------------------------------------------------------------------------


def test_start_webhook_stores_processing(harness):
    status, reply = harness.deliver(prediction_body("p1", "processing"), "msg_1")
    assert (status, reply) == (200, {"prediction": "p1", "outcome": "applied"})
    assert harness.store.get("p1") == receiver.Prediction("p1", "processing", None, {})
    assert harness.store.get("unknown") is None


def test_completed_with_shuffled_list_output_stores_stems_by_name(harness):
    output = [stem_url(stem) for stem in STEMS]
    random.Random(3).shuffle(output)
    harness.deliver(prediction_body("p1", "processing"), "msg_1")
    status, reply = harness.deliver(prediction_body("p1", "succeeded", output=output), "msg_2")
    harness.stop()
    assert (status, reply["outcome"]) == (200, "applied")
    assert harness.store.get("p1") == receiver.Prediction("p1", "succeeded", None, all_stem_urls())
    assert harness.calls == [("p1", all_stem_urls())]


def test_output_events_bring_the_first_stems_before_completed(harness):
    """The model hands stems over as they are written: output events of a processing prediction carry them,
    on_stems gets each stem once, when it first arrives, and on_succeeded gets all of them."""
    base = "https://replicate.delivery/pbxt/abc"
    harness.deliver(prediction_body("p3", "processing"), "msg_start")
    harness.deliver(prediction_body("p3", "processing", output=[f"{base}/vocals.wav"]), "msg_out1")
    two = [f"{base}/instrumental.wav", f"{base}/vocals.wav"]
    status, reply = harness.deliver(prediction_body("p3", "processing", output=two), "msg_out2")
    assert (status, reply["outcome"]) == (200, "applied")
    assert harness.store.get("p3").stems == {"instrumental": two[0], "vocals": two[1]}
    _, reply = harness.deliver(prediction_body("p3", "processing", output=two), "msg_out3")  # nothing new
    assert reply["outcome"] == "ignored"
    everything = [*two, f"{base}/drums.wav", f"{base}/bass.wav", f"{base}/other.wav"]
    harness.deliver(prediction_body("p3", "succeeded", output=everything), "msg_done")
    harness.stop()
    assert harness.stem_calls == [
        ("p3", {"vocals": f"{base}/vocals.wav"}),
        ("p3", {"instrumental": f"{base}/instrumental.wav"}),
        ("p3", {"bass": f"{base}/bass.wav", "drums": f"{base}/drums.wav", "other": f"{base}/other.wav"}),
    ]
    [(prediction_id, stems)] = harness.calls
    assert prediction_id == "p3" and sorted(stems) == ["bass", "drums", "instrumental", "other", "vocals"]


def test_stems_delivered_before_a_failure_are_kept(harness):
    base = "https://replicate.delivery/pbxt/abc"
    harness.deliver(prediction_body("p4", "processing", output=[f"{base}/guitar.wav"]), "msg_out")
    harness.deliver(prediction_body("p4", "failed", error="model failed"), "msg_failed")
    late = prediction_body("p4", "processing", output=[f"{base}/guitar.wav", f"{base}/vocals.wav"])
    _, reply = harness.deliver(late, "msg_late")  # after the terminal status: ignored, stems included
    assert reply["outcome"] == "ignored"
    assert harness.store.get("p4") == receiver.Prediction(
        "p4", "failed", "model failed", {"guitar": f"{base}/guitar.wav"}
    )


def test_retried_delivery_is_deduplicated(harness):
    body = prediction_body("p1", "succeeded", output=[stem_url("instrumental")])
    first = harness.deliver(body, "msg_done")
    retry = harness.deliver(body, "msg_done")  # a retry is re-signed with a new timestamp, same webhook-id
    harness.stop()
    assert first == (200, {"prediction": "p1", "outcome": "applied"})
    assert retry == (200, {"prediction": "p1", "outcome": "duplicate"})
    assert len(harness.calls) == 1


def test_late_processing_after_succeeded_is_acknowledged_and_ignored(harness):
    harness.deliver(prediction_body("p1", "succeeded", output=[stem_url("instrumental")]), "msg_done")
    status, reply = harness.deliver(prediction_body("p1", "processing", logs="progress 9\n"), "msg_late")
    harness.stop()
    assert (status, reply["outcome"]) == (200, "ignored")
    assert harness.store.get("p1") == receiver.Prediction(
        "p1", "succeeded", None, {"instrumental": stem_url("instrumental")}
    )
    assert len(harness.calls) == 1


@pytest.mark.parametrize(
    ("sequence", "final_status"),
    [
        (["starting", "processing", "failed"], "failed"),
        (["processing", "starting"], "processing"),
        (["failed", "processing"], "failed"),
        (["canceled", "succeeded"], "canceled"),
        (["succeeded", "failed"], "succeeded"),
        (["aborted", "processing"], "aborted"),
    ],
)
def test_status_never_moves_backwards_and_terminal_is_final(harness, sequence, final_status):
    for index, status in enumerate(sequence):
        fields = {"error": "boom"} if status == "failed" else {}
        if status == "succeeded":
            fields["output"] = [stem_url("instrumental")]
        assert harness.deliver(prediction_body("p1", status, **fields), f"msg_{index}")[0] == 200
    harness.stop()
    stored = harness.store.get("p1")
    assert stored.status == final_status
    assert stored.error == ("boom" if final_status == "failed" else None)
    assert len(harness.calls) == (1 if final_status == "succeeded" else 0)


def test_concurrent_deliveries_apply_once(harness):
    """Eight threads deliver the same completed webhook while progress webhooks race it."""
    done = prediction_body("p1", "succeeded", output=[stem_url(stem) for stem in STEMS])
    bodies = [(done, "msg_done")] * 8 + [
        (prediction_body("p1", "processing"), f"msg_log_{i}") for i in range(8)
    ]
    replies: list[tuple[int, dict]] = []
    threads = [
        threading.Thread(target=lambda b=b, i=i: replies.append(harness.deliver(b, i))) for b, i in bodies
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    harness.stop()
    outcomes = [reply["outcome"] for status, reply in replies if status == 200]
    assert len(outcomes) == len(bodies)
    assert outcomes.count("duplicate") == 7
    assert harness.store.get("p1").status == "succeeded"
    assert harness.calls == [("p1", all_stem_urls())]


def test_failing_callback_still_acknowledges_and_server_keeps_serving(tmp_path):
    def broken(prediction_id, stems):
        raise RuntimeError("transcription queue down")

    running = Harness(tmp_path / "db.sqlite3", on_succeeded=broken)
    try:
        assert running.deliver(prediction_body("p1", "succeeded", output=[]), "msg_1")[0] == 200
        assert running.deliver(prediction_body("p2", "processing"), "msg_2")[0] == 200
        assert running.store.get("p1").status == "succeeded"
    finally:
        running.stop()
        running.store.close()


def test_store_records_atomically_under_thread_contention(tmp_path):
    """Threads race to record the same webhooks for the same predictions; each id applies exactly once."""
    store = receiver.Store(tmp_path / "predictions.sqlite3")
    statuses = ("starting", "processing", "succeeded")
    start = threading.Barrier(6)
    outcomes: list[receiver.Outcome] = []
    errors: list[BaseException] = []

    def deliver_all() -> None:
        start.wait()
        try:
            for index in range(60):
                update = receiver.Prediction(f"p{index % 20}", statuses[index // 20])
                outcomes.append(store.record(f"msg_{index}", update).outcome)
        except BaseException as exc:  # collected, so the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=deliver_all) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert outcomes.count(receiver.Outcome.APPLIED) == 60
    assert outcomes.count(receiver.Outcome.DUPLICATE) == 5 * 60
    assert {store.get(f"p{index}").status for index in range(20)} == {"succeeded"}
    store.close()


def test_store_persists_across_restarts(tmp_path):
    db_path = tmp_path / "predictions.sqlite3"
    update = receiver.Prediction("p1", "succeeded", None, {"vocals": stem_url("vocals")})
    first = receiver.Store(db_path)
    assert first.record("msg_1", update).outcome is receiver.Outcome.APPLIED
    first.close()
    reopened = receiver.Store(db_path)
    assert reopened.get("p1") == update
    assert reopened.record("msg_1", update).outcome is receiver.Outcome.DUPLICATE
    reopened.close()


# --- rejected requests ----------------------------------------------------------------------------


def test_forged_signature_is_rejected(harness):
    body = prediction_body("p1", "processing")
    status, reply = harness.post(body, signed_headers(body, "msg_1", secret=OTHER_SECRET))
    assert status == 401
    assert "signature" in reply["error"]
    assert harness.store.get("p1") is None


def test_tampered_body_is_rejected(harness):
    headers = signed_headers(prediction_body("p1", "processing"), "msg_1")
    assert harness.post(prediction_body("p1", "succeeded", output=[]), headers)[0] == 401
    assert harness.store.get("p1") is None


@pytest.mark.parametrize(
    ("age", "accepted"),
    [(timedelta(minutes=10), False), (timedelta(minutes=-10), False), (timedelta(minutes=4), True)],
    ids=["10-min-old", "10-min-ahead", "4-min-old"],
)
def test_timestamp_tolerance_is_five_minutes(harness, age, accepted):
    body = prediction_body("p1", "processing")
    status, reply = harness.post(body, signed_headers(body, "msg_1", datetime.now(tz=UTC) - age))
    assert status == (200 if accepted else 401), reply
    assert (harness.store.get("p1") is not None) == accepted


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_signature_header_is_rejected(harness, missing):
    body = prediction_body("p1", "processing")
    headers = signed_headers(body, "msg_1")
    del headers[missing]
    status, reply = harness.post(body, headers)
    assert status == 400
    assert missing in reply["error"]


def test_unsigned_request_is_rejected_naming_the_relay_and_logged(harness, caplog):
    """A self-hosted runtime sends webhooks without signature headers: the reply and the log say so."""
    caplog.set_level(logging.WARNING, logger="webhook_receiver")
    status, reply = harness.post(prediction_body("p1", "processing"), {"Content-Type": "application/json"})
    assert status == 400
    assert "unsigned" in reply["error"] and "signing_relay.py" in reply["error"]
    [record] = [r for r in caplog.records if r.name == "webhook_receiver"]
    assert record.levelno == logging.WARNING
    assert "400" in record.getMessage() and "unsigned" in record.getMessage()


def test_rejected_signature_is_logged_at_warning_with_the_reason(harness, caplog):
    caplog.set_level(logging.WARNING, logger="webhook_receiver")
    body = prediction_body("p1", "processing")
    assert harness.post(body, signed_headers(body, "msg_1", secret=OTHER_SECRET))[0] == 401
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("401" in message and "signature verification failed" in message for message in messages)


def test_signing_relay_makes_an_unsigned_webhook_acceptable(harness):
    """examples/signing_relay.py signs as Replicate does: what the runtime sends unsigned is accepted."""
    target = f"http://127.0.0.1:{harness.port}{receiver.DEFAULT_PATH}"
    running = signing_relay.SigningRelay(target, SECRET)
    try:
        body = prediction_body("p1", "processing", output=[stem_url("instrumental")])
        request = urllib.request.Request(running.url, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read())["outcome"] == "applied"
    finally:
        running.close()
    assert harness.store.get("p1").stems == {"instrumental": stem_url("instrumental")}
    wrong = signing_relay.signed_headers(OTHER_SECRET, "msg_2", int(datetime.now().timestamp()), body)
    assert harness.post(body, wrong)[0] == 401


def test_malformed_signature_header_is_rejected_not_crashing(harness):
    body = prediction_body("p1", "processing")
    for signature in ("garbage", "v1,not*base64", "v1,a,b"):
        headers = {**signed_headers(body, "msg_1"), "webhook-signature": signature}
        assert harness.post(body, headers)[0] == 401
    assert harness.deliver(body, "msg_1")[0] == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json at all", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"status": "processing"}).encode(), "'id'"),
        (prediction_body("p1", "exploded"), "'status'"),
        (prediction_body("p1", "succeeded", output={"vocals": "x"}), "list of file URLs"),
        (prediction_body("p1", "succeeded", output=["data:audio/wav;base64,AAAA"]), "http(s) file URL"),
        (prediction_body("p1", "succeeded", output=[stem_url("bass"), stem_url("bass")]), "'bass'"),
    ],
    ids=["non-json", "not-object", "no-id", "unknown-status", "dict-output", "data-url", "duplicate-stem"],
)
def test_bad_payload_is_rejected_with_400(harness, body, message):
    status, reply = harness.deliver(body, "msg_1")
    assert status == 400
    assert message in reply["error"]
    assert harness.store.get("p1") is None
    # the webhook id was not consumed: a corrected delivery with the same id still applies
    assert harness.deliver(prediction_body("p1", "processing"), "msg_1")[1]["outcome"] == "applied"


def test_non_utf8_body_is_rejected(harness):
    headers = signed_headers(b"{}", "msg_1")
    assert harness.post(b"\xff\xfe{}", headers)[0] == 400


@pytest.mark.parametrize("size_bytes", [receiver.MAX_BODY_BYTES + 1, 4 * receiver.MAX_BODY_BYTES])
def test_oversized_body_is_rejected_with_413(harness, size_bytes):
    """Bodies larger than the socket buffers too: the client must read the 413, not a reset."""
    body = b" " * size_bytes
    status, reply = harness.post(body, signed_headers(body, "msg_1"))
    assert status == 413
    assert str(receiver.MAX_BODY_BYTES) in reply["error"]
    assert harness.deliver(prediction_body("p1", "processing"), "msg_1")[0] == 200


def test_body_without_content_length_is_rejected_with_411(harness):
    with socket.create_connection(("127.0.0.1", harness.port), timeout=10) as connection:
        head = f"POST {receiver.DEFAULT_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        connection.sendall(head.encode() + b"0\r\n\r\n")
        status_line = connection.makefile("rb").readline()
    assert status_line.split()[1] == b"411"


def test_wrong_path_and_method(harness):
    body = prediction_body("p1", "processing")
    assert harness.request("POST", "/elsewhere", body, signed_headers(body, "msg_1"))[0] == 404
    assert harness.request("GET", "/elsewhere")[0] == 404
    status, _, headers = harness.request("GET", receiver.DEFAULT_PATH)
    assert (status, headers["Allow"]) == (405, "POST")
    assert harness.request("PUT", receiver.DEFAULT_PATH, body)[0] == 405
    # a query string on the registered URL does not change the path
    with_query = receiver.DEFAULT_PATH + "?source=replicate"
    assert harness.request("POST", with_query, body, signed_headers(body, "msg_2"))[0] == 200


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "sk_live_123", "whsec_"])
def test_bad_secret_is_refused(secret):
    with pytest.raises(ValueError, match="whsec_"):
        receiver.load_webhook(secret)


def test_main_without_secret_exits_with_a_clear_message(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("REPLICATE_WEBHOOK_SECRET", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        receiver.main(["--port", "0", "--db", str(tmp_path / "db.sqlite3")])
    assert exit_info.value.code == 2
    assert "REPLICATE_WEBHOOK_SECRET" in capsys.readouterr().err
    assert not (tmp_path / "db.sqlite3").exists()


# --- stems_by_name --------------------------------------------------------------------------------


def test_stems_by_name_ignores_order_query_and_fragment():
    urls = [stem_url(stem) for stem in STEMS]
    expected = all_stem_urls()
    for seed in range(5):
        random.Random(seed).shuffle(urls)
        assert receiver.stems_by_name(urls) == expected
    assert list(receiver.stems_by_name(urls)) == sorted(STEMS)
    assert receiver.stems_by_name(
        ["http://host/out/guitar.flac#t=1", "https://h/a%20b/piano.mp3?x=/y.wav"]
    ) == {
        "guitar": "http://host/out/guitar.flac#t=1",
        "piano": "https://h/a%20b/piano.mp3?x=/y.wav",
    }
    assert receiver.stems_by_name([]) == {}


def test_stems_by_name_decodes_the_file_name_and_keeps_only_audio_stems():
    output = [
        "https://h/x/no%5Fguitar.FLAC",
        "https://h/x/acoustic-guitar.mp3",
        "https://h/x/constructor.wav",
        "https://h/x/stems.json",
        "https://h/x/notes.txt",
        "https://h/x/readme",
    ]
    assert list(receiver.stems_by_name(output)) == ["acoustic-guitar", "constructor", "no_guitar"]


@pytest.mark.parametrize(
    "url",
    [
        "https://replicate.delivery/x/..%2F..%2Fetc%2Fpasswd.wav",
        "https://h/x/lead%20guitar.wav",
        "https://h/x/Vocals.wav",
        "https://h/x/.wav",
        "https://h/x/%ff.wav",
    ],
    ids=["encoded-slashes", "space", "capital", "no-name", "not-utf8"],
)
def test_stems_by_name_refuses_an_audio_file_that_names_no_stem(url):
    with pytest.raises(ValueError, match="does not name a stem|percent-encoding"):
        receiver.stems_by_name([url])


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([stem_url("vocals"), "https://other.host/vocals.mp3"], "two files for stem 'vocals'"),
        (["data:audio/x-wav;base64,UklGRg=="], "http(s) file URL"),
        (["https://replicate.delivery/"], "no file name"),
        ([42], "file URL string"),
        ("https://h/vocals.wav", "list of file URLs"),
        (None, "list of file URLs"),
    ],
    ids=["duplicate", "data-url", "no-name", "not-string", "bare-string", "none"],
)
def test_stems_by_name_rejects_bad_output(output, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        receiver.stems_by_name(output)


# --- the transcription stem, figures and stems.json ----------------------------------------------

TRANSCRIPTION_CASES = json.loads(
    (MODULE_PATH.parent / "worker" / "test" / "fixtures" / "transcription-stem.json").read_text()
)["cases"]


@pytest.mark.parametrize("case", TRANSCRIPTION_CASES, ids=lambda case: json.dumps(case["input"]))
def test_transcription_stem_is_the_workers_rule(case):
    """The cases examples/worker's tests check too: both receivers pick the same stem."""
    assert receiver.transcription_stem(case["input"]) == case["stem"]


def figures(present=True, model="bs_roformer_mega53", terms="mit-reported", **extra) -> dict:
    return {"peak_dbfs": -3.5, "loudness_lufs": -19.8, "active_fraction": 0.64, "present": present} | {
        "model": model,
        "terms": terms,
        **extra,
    }


@pytest.fixture
def file_host():
    """Serves files at /files/<name> as replicate.delivery would, and records every path asked for."""
    host = Receiver()
    yield host
    host.close()


def test_figures_from_metrics_are_kept_and_hand_the_transcription_stem_on(harness):
    """Replicate's shape with an input: all_4 transcribes the instrumental, as soon as it arrives present."""
    base = "https://replicate.delivery/pbxt/abc"
    metrics = {
        "predict_time": 1.2,
        "stems": {"instrumental": figures(model="bs_roformer_vocals", terms="none-stated")},
    }
    body = prediction_body(
        "p1",
        "processing",
        input={"audio": "https://x/song.mp3", "stems": "all_4"},
        output=[f"{base}/vocals.wav", f"{base}/instrumental.wav"],
        metrics=metrics,
    )
    assert harness.deliver(body, "msg_1") == (200, {"prediction": "p1", "outcome": "applied"})
    harness.stop()
    expected = receiver.StemFigures(True, -3.5, -19.8, 0.64, "bs_roformer_vocals", "none-stated")
    assert harness.store.get("p1").figures == {"instrumental": expected}
    assert harness.store.get("p1").transcription_stem == "instrumental"
    assert harness.transcriptions == [("p1", "instrumental", f"{base}/instrumental.wav", expected)]


def test_an_absent_transcription_stem_is_never_handed_on(harness):
    base = "https://replicate.delivery/pbxt/abc"
    output = [f"{base}/guitar.wav", f"{base}/no_guitar.wav"]
    metrics = {"stems": {"guitar": figures(present=False), "no_guitar": figures()}}
    harness.deliver(prediction_body("p1", "processing", output=output, metrics=metrics), "msg_1")
    harness.deliver(prediction_body("p1", "succeeded", output=output, metrics=metrics), "msg_2")
    harness.stop()
    assert harness.transcriptions == []
    assert harness.store.get("p1").figures["guitar"].present is False


def test_without_metrics_the_hand_off_waits_for_stems_json(harness, file_host):
    """No metrics.stems (Replicate's API may drop it): the guitar waits for stems.json, the last file."""
    stems_json = {name: {"file": f"{name}.wav", **figures()} for name in ("guitar", "no_guitar")}
    report = file_host.serve("stems.json", json.dumps(stems_json).encode())
    guitar, no_guitar = file_host.url("/files/guitar.wav"), file_host.url("/files/no_guitar.wav")
    fields = {"input": {"stems": "guitar_only"}}
    harness.deliver(prediction_body("p1", "processing", output=[guitar], **fields), "msg_1")
    harness.deliver(prediction_body("p1", "processing", output=[guitar, no_guitar], **fields), "msg_2")
    assert harness.transcriptions == [], "figures unknown: not handed on"
    output = [guitar, no_guitar, report]
    harness.deliver(prediction_body("p1", "succeeded", output=output, **fields), "msg_3")
    harness.deliver(prediction_body("p1", "processing", output=output, **fields), "msg_late")
    harness.stop()
    expected = receiver.StemFigures(True, -3.5, -19.8, 0.64, "bs_roformer_mega53", "mit-reported")
    assert harness.transcriptions == [("p1", "guitar", guitar, expected)]
    assert harness.store.get("p1").stems == {"guitar": guitar, "no_guitar": no_guitar}, (
        "stems.json is no stem"
    )
    assert harness.store.get("p1").figures == {"guitar": expected, "no_guitar": expected}
    assert file_host.gets == ["/files/stems.json"], "read once"


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"guitar": {"file": "guitar.wav", "present": "yes"}}).encode(),
        json.dumps({"guitar": {"file": "../guitar.wav", "present": True}}).encode(),
        json.dumps({"guitar": {"file": "guitar.wav", "pad": "x" * 300_000}}).encode(),
        b"\xff{}",
    ],
    ids=["present-string", "wrong-file", "too-large", "not-utf8"],
)
def test_a_stems_json_that_cannot_be_used_leaves_the_figures_unknown_and_hands_on(
    harness, file_host, content, caplog
):
    caplog.set_level(logging.WARNING, logger="webhook_receiver")
    report = file_host.serve("stems.json", content)
    guitar = file_host.url("/files/guitar.wav")
    output = [guitar, report]
    harness.deliver(prediction_body("p1", "succeeded", output=output), "msg_1")
    harness.stop()
    assert harness.transcriptions == [("p1", "guitar", guitar, receiver.StemFigures())]
    assert harness.store.get("p1").figures == {}
    assert any("stems.json not read" in record.getMessage() for record in caplog.records)


def test_a_prediction_without_figures_hands_on_when_it_succeeds(harness):
    url = stem_url("guitar")
    harness.deliver(prediction_body("p1", "processing", output=[url]), "msg_1")
    assert harness.transcriptions == []
    harness.deliver(prediction_body("p1", "succeeded", output=[url]), "msg_2")
    harness.stop()
    assert harness.transcriptions == [("p1", "guitar", url, receiver.StemFigures())]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"metrics": {"stems": {"vocals": {"present": "false"}}}},
            "'metrics.stems.vocals.present' must be true",
        ),
        ({"metrics": {"stems": {"__proto__": {"present": True}}}}, "not a stem name: '__proto__'"),
        (
            {"metrics": {"stems": {"vocals": {"peak_dbfs": True}}}},
            "'metrics.stems.vocals.peak_dbfs' must be a",
        ),
        ({"metrics": {"stems": {"vocals": {"active_fraction": 2}}}}, "must be from 0 to 1"),
        ({"metrics": {"stems": []}}, "'metrics.stems' must be an object"),
        ({"metrics": "none"}, "'metrics' must be an object"),
        ({"input": {"extra_stems": ["guitar"]}}, "'input.extra_stems' must be a string"),
        ({"input": "guitar"}, "'input' must be an object"),
        (
            {"output": [stem_url("vocals"), "https://h/x/stems.json", "https://h/y/stems.json"]},
            "listed twice",
        ),
    ],
    ids=[
        "present-string",
        "proto-key",
        "bool-number",
        "fraction",
        "stems-list",
        "metrics-str",
        "extras",
        "input",
        "json2",
    ],
)
def test_bad_figures_or_input_are_rejected_with_400(harness, fields, message):
    status, reply = harness.deliver(prediction_body("p1", "processing", **fields), "msg_1")
    assert status == 400
    assert message in reply["error"]
    assert harness.store.get("p1") is None


def test_nan_is_not_json(harness):
    body = prediction_body("p1", "processing").replace(b'"logs": ""', b'"logs": NaN')
    status, reply = harness.deliver(body, "msg_1")
    assert status == 400 and "not JSON" in reply["error"]


def test_a_seen_webhook_id_with_another_body_is_409_and_applies_nothing(harness):
    first = prediction_body("p1", "processing", output=[stem_url("vocals")])
    assert harness.deliver(first, "msg_1")[0] == 200
    other = prediction_body("p1", "succeeded", output=[stem_url("vocals"), stem_url("guitar")])
    status, reply = harness.deliver(other, "msg_1")
    assert status == 409 and "another body" in reply["error"]
    assert harness.store.get("p1").status == "processing"
    assert harness.store.get("p1").stems == {"vocals": stem_url("vocals")}
    assert harness.deliver(first, "msg_1") == (200, {"prediction": "p1", "outcome": "duplicate"})


def test_a_database_from_before_the_body_hash_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE seen_webhooks"
        " (webhook_id TEXT PRIMARY KEY, prediction_id TEXT NOT NULL, received_at REAL NOT NULL)"
    )
    old.execute("INSERT INTO seen_webhooks VALUES ('msg_1', 'p1', 0)")
    old.commit()
    old.close()
    store = receiver.Store(path)
    update = receiver.Prediction("p1", "processing")
    assert (
        store.record("msg_1", update, "abc").outcome is receiver.Outcome.DUPLICATE
    )  # no hash: not a conflict
    assert store.record("msg_2", update, "abc").outcome is receiver.Outcome.APPLIED
    assert store.record("msg_2", update, "def").outcome is receiver.Outcome.CONFLICT
    store.close()
