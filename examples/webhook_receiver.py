"""Receive Replicate webhooks for the stem-separation model and keep each prediction's state in SQLite.

A small receiver (standard library + ``standardwebhooks``) meant to be copied into an app such as FretWise,
which sends the instrumental stem on to transcription.

Run it::

    pip install -r examples/requirements.txt   # standardwebhooks
    export REPLICATE_WEBHOOK_SECRET=whsec_...
    python examples/webhook_receiver.py --port 8000 --db predictions.sqlite3

The secret is the account's webhook signing key: ``GET https://api.replicate.com/v1/webhooks/default/secret``
(with ``Authorization: Bearer $REPLICATE_API_TOKEN``) returns ``{"key": "whsec_..."}``. The server binds to
127.0.0.1 by default; expose it to Replicate over HTTPS (a reverse proxy or tunnel), or pass
``--host 0.0.0.0``. Replicate does not follow redirects, so register the exact URL. Every rejected request
is logged at WARNING with its reason.

A self-hosted runtime (``cog serve``, or the image run anywhere) sends its webhooks unsigned, and this
receiver rejects those. To test locally, give the runtime the URL of ``examples/signing_relay.py``, which
signs each webhook with the same secret and passes it on.

Register the webhook when creating the prediction::

    prediction = replicate.predictions.create(
        version="<model version id>",
        input={"audio": "https://example.com/song.mp3"},
        webhook="https://fretwise.example.com/webhooks/replicate",
        webhook_events_filter=["start", "output", "completed"],
    )

What the receiver guarantees:

- Every request is verified with Replicate's signature (Standard Webhooks: HMAC-SHA256 over
  ``{webhook-id}.{webhook-timestamp}.{body}``); timestamps more than 5 minutes off are rejected (401).
- A retried delivery (same ``webhook-id``) is acknowledged and changes nothing.
- A prediction's status only moves forward: starting < processing < terminal (succeeded, failed, canceled,
  aborted). Webhooks can arrive out of order (a late ``processing`` after ``succeeded`` has been observed);
  they are acknowledged and ignored, and a terminal status is final.
- The model's output is a list of file URLs named ``<stem>.<ext>`` in no reliable order; stems are stored by
  name (see :func:`stems_by_name`). The model hands each stem over as soon as it is written, so ``output``
  events of a ``processing`` prediction already carry the first stems (the vocals and instrumental while
  Demucs still runs); a stem, once stored, is kept.
- ``on_stems(prediction_id, new_stems)`` runs once for the stems each webhook brings first, right after the
  200 has been sent: an app can start on the instrumental (or the guitar) from the first ``output`` event
  that carries it. ``on_succeeded(prediction_id, stems)`` runs once when a prediction first reaches
  ``succeeded``, with all its stems. Both are at-most-once (a crash between the database commit and the call
  loses it), and Replicate deletes API outputs about an hour after the prediction, so fetch or queue the
  files promptly.
"""

from __future__ import annotations

import argparse
import binascii
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import EmptyWebhookSecretError

log = logging.getLogger("webhook_receiver")

DEFAULT_PATH = "/webhooks/replicate"
MAX_BODY_BYTES = 1024 * 1024
DRAIN_LIMIT_BYTES = 8 * MAX_BODY_BYTES  # oversized bodies up to this size are read and dropped before the 413
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
STATUS_RANK = {"starting": 0, "processing": 1, "succeeded": 2, "failed": 2, "canceled": 2, "aborted": 2}
NON_TERMINAL = ("starting", "processing")

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    error TEXT,
    stems_json TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_webhooks (
    webhook_id TEXT PRIMARY KEY,
    prediction_id TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""


class PayloadError(ValueError):
    """A verified webhook body that is not a usable Replicate prediction object."""


@dataclass(frozen=True)
class Prediction:
    """What the receiver keeps of a prediction: its status, error message and stem URLs keyed by stem name."""

    prediction_id: str
    status: str
    error: str | None = None
    stems: dict[str, str] = field(default_factory=dict)  # stem name -> file URL, as output events bring them


class Outcome(Enum):
    """What recording one webhook did to the store."""

    APPLIED = "applied"  # the prediction moved forward, brought stems, or was seen for the first time
    IGNORED = "ignored"  # nothing new (same or earlier status, no new stem): acknowledged, nothing changed
    DUPLICATE = "duplicate"  # this webhook-id was already recorded (a retried delivery)


OnSucceeded = Callable[[str, dict[str, str]], None]  # (prediction id, all its stems)
OnStems = Callable[[str, dict[str, str]], None]  # (prediction id, the stems this webhook brought first)


@dataclass(frozen=True)
class Recorded:
    """What recording one webhook did: the outcome, and the stems it stored for the first time."""

    outcome: Outcome
    new_stems: dict[str, str] = field(default_factory=dict)


def stems_by_name(output: list[str]) -> dict[str, str]:
    """Map each stem name to its file URL, using the URL's file name and never the list position.

    The model returns its files as a list of URLs named ``<stem>.<ext>``; Replicate's runtime lists them in
    upload-completion order, so the position says nothing. The stem name is the last path segment,
    percent-decoded, without its extension; query string and fragment are ignored:
    ``https://replicate.delivery/xezq/abc/vocals.wav?sig=1`` -> ``"vocals"``.

    Returns the dict sorted by stem name. Raises ValueError when ``output`` is not a list of http(s) URLs,
    when a URL has no file name (a ``data:`` URL has none), or when two URLs give the same stem name (an error
    rather than last-wins, so a file is never silently dropped).
    """
    if not isinstance(output, list):
        raise ValueError(f"expected a list of file URLs, got {type(output).__name__}")
    stems: dict[str, str] = {}
    for url in output:
        if not isinstance(url, str):
            raise ValueError(f"expected a file URL string, got {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"expected an http(s) file URL, got {url[:60]!r}")
        name = PurePosixPath(unquote(parts.path)).stem
        if not name:
            raise ValueError(f"file URL has no file name: {url!r}")
        if name in stems:
            raise ValueError(f"two files for stem {name!r}: {stems[name]!r} and {url!r}")
        stems[name] = url
    return dict(sorted(stems.items()))


def parse_prediction(payload: object) -> Prediction:
    """Reduce a webhook body (a Replicate prediction object, parsed JSON) to a :class:`Prediction`.

    Stems are read from ``output`` while the status is ``processing`` (the stems written so far; none yet
    when it is missing) and when it is ``succeeded``. Raises PayloadError naming the bad field.
    """
    if not isinstance(payload, dict):
        raise PayloadError(
            f"body must be a JSON object (a Replicate prediction), got {type(payload).__name__}"
        )
    prediction_id = payload.get("id")
    if not isinstance(prediction_id, str) or not prediction_id:
        raise PayloadError(f"'id' must be a non-empty string, got {prediction_id!r}")
    status = payload.get("status")
    if status not in STATUS_RANK:
        raise PayloadError(f"'status' must be one of {sorted(STATUS_RANK)}, got {status!r}")
    error = payload.get("error")
    stems: dict[str, str] = {}
    if status == "succeeded" or (status == "processing" and payload.get("output") is not None):
        try:
            stems = stems_by_name(payload.get("output"))
        except ValueError as exc:
            raise PayloadError(f"'output' of a {status} prediction: {exc}") from exc
    return Prediction(prediction_id, status, None if error is None else str(error), stems)


class Store:
    """Predictions and seen webhook ids in one SQLite file; one instance is shared by all server threads."""

    def __init__(self, path: str | os.PathLike[str]):
        self._lock = threading.Lock()
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE) in record().
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def record(self, webhook_id: str, update: Prediction) -> Recorded:
        """Record one verified webhook atomically: dedupe on ``webhook_id``, move the status forward only,
        add the stems not stored yet (a terminal status is final)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                outcome = self._record_in_transaction(webhook_id, update)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return outcome

    def _record_in_transaction(self, webhook_id: str, update: Prediction) -> Recorded:
        """The body of :meth:`record`; runs inside an open transaction."""
        now = time.time()
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO seen_webhooks (webhook_id, prediction_id, received_at) VALUES (?, ?, ?)",
            (webhook_id, update.prediction_id, now),
        )
        if inserted.rowcount == 0:
            return Recorded(Outcome.DUPLICATE)
        row = self._db.execute(
            "SELECT status, error, stems_json FROM predictions WHERE id = ?", (update.prediction_id,)
        ).fetchone()
        status, error, stems = update.status, update.error, {}
        if row is not None:
            stored_status, stored_error, stems_json = row
            stems = json.loads(stems_json)
            if STATUS_RANK[update.status] <= STATUS_RANK[stored_status]:  # late or repeated: keep the status
                status, error = stored_status, stored_error
                if stored_status not in NON_TERMINAL:  # terminal is final, stems included
                    return Recorded(Outcome.IGNORED)
        new_stems = {name: url for name, url in update.stems.items() if name not in stems}
        if row is not None and status == row[0] and not new_stems:
            return Recorded(Outcome.IGNORED)
        self._db.execute(
            "INSERT OR REPLACE INTO predictions (id, status, error, stems_json, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (update.prediction_id, status, error, json.dumps({**stems, **new_stems}, sort_keys=True), now),
        )
        return Recorded(Outcome.APPLIED, new_stems)

    def get(self, prediction_id: str) -> Prediction | None:
        """The stored state of one prediction, or None if no webhook for it was recorded."""
        with self._lock:
            row = self._db.execute(
                "SELECT status, error, stems_json FROM predictions WHERE id = ?", (prediction_id,)
            ).fetchone()
        if row is None:
            return None
        status, error, stems_json = row
        return Prediction(prediction_id, status, error, json.loads(stems_json))

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()


def log_new_stems(prediction_id: str, new_stems: dict[str, str]) -> None:
    """Default ``on_stems`` hook: log the stems as they arrive. Replace it to start work on a stem early,
    e.g. FretWise's transcription of ``new_stems["instrumental"]`` or ``new_stems["guitar"]``."""
    log.info("prediction %s: new stems %s", prediction_id, ", ".join(sorted(new_stems)))


def log_instrumental(prediction_id: str, stems: dict[str, str]) -> None:
    """Default ``on_succeeded`` hook: log the instrumental URL. Replace it with the transcription hand-off."""
    if "instrumental" in stems:
        log.info("prediction %s succeeded; instrumental stem: %s", prediction_id, stems["instrumental"])
    else:
        log.warning(
            "prediction %s succeeded without an instrumental stem (got %s)", prediction_id, sorted(stems)
        )


def load_webhook(secret: str) -> Webhook:
    """Build the signature verifier from Replicate's secret ``whsec_<base64>``; ValueError if malformed."""
    if not secret.startswith("whsec_"):
        raise ValueError(
            "webhook secret must look like 'whsec_<base64>' "
            "(GET https://api.replicate.com/v1/webhooks/default/secret returns it)"
        )
    try:
        return Webhook(secret)
    except (binascii.Error, EmptyWebhookSecretError) as exc:
        raise ValueError(f"webhook secret has no valid base64 key after 'whsec_': {exc}") from exc


class Rejected(Exception):
    """Raised while handling a request to answer it with an error status and message."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class WebhookServer(ThreadingHTTPServer):
    """Threaded HTTP server that accepts signed Replicate webhooks with POST on one path."""

    daemon_threads = False  # server_close() waits for requests in flight: a stop never cuts a callback short

    def __init__(
        self,
        address: tuple[str, int],
        webhook: Webhook,
        store: Store,
        on_succeeded: OnSucceeded = log_instrumental,
        webhook_path: str = DEFAULT_PATH,
        on_stems: OnStems = log_new_stems,
    ):
        self.webhook = webhook
        self.store = store
        self.on_succeeded = on_succeeded
        self.on_stems = on_stems
        self.webhook_path = webhook_path
        super().__init__(address, WebhookHandler)


class WebhookHandler(BaseHTTPRequestHandler):
    """One request: verify, parse, record, reply, then ``on_stems`` for stems it brought first and
    ``on_succeeded`` if the prediction just succeeded."""

    server: WebhookServer
    timeout = 10  # seconds a client may stall on its socket before the connection is dropped

    def do_POST(self) -> None:
        """Answer a webhook delivery (200 once recorded), then hand new stems and a newly succeeded
        prediction on."""
        succeeded, new_stems, headers = None, None, {}
        try:
            status, body, succeeded, new_stems = self._receive()
        except Rejected as exc:
            status, body, headers = exc.status, {"error": str(exc)}, exc.headers
            log.warning("rejected %s %s with %d: %s", self.command, self.path, status, exc)
        except Exception:
            log.exception("error while handling POST %s", self.path)
            status, body, headers = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"}, {}
        try:
            self._send(status, body, headers)
        except OSError as exc:
            log.warning("could not send the %d reply: %s", status, exc)
        if new_stems:
            try:
                self.server.on_stems(*new_stems)
            except Exception:
                log.exception("on_stems failed for prediction %s", new_stems[0])
        if succeeded is not None:
            try:
                self.server.on_succeeded(succeeded.prediction_id, succeeded.stems)
            except Exception:
                log.exception("on_succeeded failed for prediction %s", succeeded.prediction_id)

    def do_GET(self) -> None:
        """Webhooks are POST only: 405 on the webhook path, 404 elsewhere."""
        if urlsplit(self.path).path == self.server.webhook_path:
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use POST"}, {"Allow": "POST"})
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": "not found"}, {})

    do_PUT = do_PATCH = do_DELETE = do_GET

    def _receive(
        self,
    ) -> tuple[HTTPStatus, dict[str, str], Prediction | None, tuple[str, dict[str, str]] | None]:
        """Process a POST into (status, reply body, the prediction if it just succeeded, (its id, the stems
        it brought first) if any). Raises Rejected."""
        body = self._read_body()  # read even on a wrong path: closing on an unread body resets the connection
        if urlsplit(self.path).path != self.server.webhook_path:
            raise Rejected(HTTPStatus.NOT_FOUND, "not found")
        missing = [name for name in SIGNATURE_HEADERS if not self.headers.get(name)]
        if len(missing) == len(SIGNATURE_HEADERS):
            raise Rejected(
                HTTPStatus.BAD_REQUEST,
                "unsigned request (a self-hosted Cog runtime sends webhooks unsigned: "
                "put examples/signing_relay.py in between)",
            )
        if missing:
            raise Rejected(HTTPStatus.BAD_REQUEST, f"missing header(s): {', '.join(missing)}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(HTTPStatus.BAD_REQUEST, "body is not UTF-8 text") from exc
        try:
            self.server.webhook.verify(
                text, {name: self.headers[name] for name in SIGNATURE_HEADERS}, json_parse=False
            )
        except WebhookVerificationError as exc:
            raise Rejected(HTTPStatus.UNAUTHORIZED, f"signature verification failed: {exc}") from exc
        except ValueError as exc:  # the library's parsing of a malformed signature header
            raise Rejected(HTTPStatus.UNAUTHORIZED, "malformed webhook-signature header") from exc
        try:
            update = parse_prediction(json.loads(text))
        except json.JSONDecodeError as exc:
            raise Rejected(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from exc
        except PayloadError as exc:
            raise Rejected(HTTPStatus.BAD_REQUEST, str(exc)) from exc
        webhook_id = self.headers["webhook-id"]
        recorded = self.server.store.record(webhook_id, update)
        outcome = recorded.outcome
        log.info("webhook %s: %s %s -> %s", webhook_id, update.prediction_id, update.status, outcome.value)
        succeeded = None
        if outcome is Outcome.APPLIED and update.status == "succeeded":
            succeeded = self.server.store.get(update.prediction_id)  # every stem, early ones included
        new_stems = (update.prediction_id, recorded.new_stems) if recorded.new_stems else None
        reply = {"prediction": update.prediction_id, "outcome": outcome.value}
        return HTTPStatus.OK, reply, succeeded, new_stems

    def _read_body(self) -> bytes:
        """Read a body of at most MAX_BODY_BYTES, sized by Content-Length. Raises Rejected (400/411/413)."""
        length_header = self.headers.get("Content-Length")
        if length_header is None or "Transfer-Encoding" in self.headers:
            raise Rejected(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if not (length_header.isascii() and length_header.isdigit()):
            raise Rejected(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {length_header!r}")
        length_bytes = int(length_header)
        if length_bytes > MAX_BODY_BYTES:
            self._discard_body(length_bytes)
            raise Rejected(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length_bytes} bytes exceeds {MAX_BODY_BYTES} bytes",
            )
        body = self.rfile.read(length_bytes)
        if len(body) < length_bytes:
            raise Rejected(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length_bytes} bytes")
        return body

    def _discard_body(self, length_bytes: int) -> None:
        """Read and drop an oversized body (up to DRAIN_LIMIT_BYTES) so the client reads the 413, no reset."""
        self.close_connection = True
        if length_bytes > DRAIN_LIMIT_BYTES:
            return
        remaining_bytes = length_bytes
        try:
            while remaining_bytes > 0:
                chunk = self.rfile.read(min(remaining_bytes, 64 * 1024))
                if not chunk:
                    return
                remaining_bytes -= len(chunk)
        except OSError:  # a stalled or vanished client: the reply may not reach it either way
            return

    def _send(self, status: HTTPStatus, body: dict[str, str], headers: dict[str, str]) -> None:
        """Write a JSON reply with the given status and extra headers."""
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Route the access log through ``logging`` instead of stderr."""
        log.debug("%s %s", self.address_string(), format % args)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: serve until interrupted."""
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Receive Replicate webhooks; store prediction stems in SQLite.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8000, help="port to bind")
    parser.add_argument("--db", default="predictions.sqlite3", help="SQLite database file")
    parser.add_argument("--path", default=DEFAULT_PATH, help="webhook URL path")
    args = parser.parse_args(argv)
    try:
        webhook = load_webhook(os.environ.get("REPLICATE_WEBHOOK_SECRET", ""))
    except ValueError as exc:
        parser.error(f"REPLICATE_WEBHOOK_SECRET: {exc}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store(args.db)
    server = WebhookServer((args.host, args.port), webhook, store, webhook_path=args.path)
    log.info("listening on http://%s:%d%s", *server.server_address[:2], args.path)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()
        store.close()


if __name__ == "__main__":
    main()
