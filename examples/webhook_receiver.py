"""Receive Replicate webhooks for the stem-separation model and keep each prediction's state in SQLite.

A small receiver (standard library + ``standardwebhooks``) meant to be copied into an app such as FretWise,
which sends one stem on to transcription: ``guitar`` when the prediction's mode gives one (``stems`` =
``guitar``, ``guitar_only`` or ``all_6``, or ``guitar`` among ``extra_stems``), else ``instrumental``; with no
input in the webhooks (a self-hosted runtime) the guitar. The Worker in ``examples/worker`` applies the same
rule.

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
- A retried delivery (same ``webhook-id``, same body) is acknowledged and changes nothing; the same
  ``webhook-id`` with another body is refused with 409 and nothing of it is applied.
- A body that is not a prediction as Replicate and the model write it is refused with 400 naming the field,
  and nothing is stored: JSON without NaN or Infinity, ``present`` true or false, numbers as numbers, stem
  names of 1-64 ``a-z0-9_-``.
- A prediction's status only moves forward: starting < processing < terminal (succeeded, failed, canceled,
  aborted). Webhooks can arrive out of order (a late ``processing`` after ``succeeded`` has been observed);
  they are acknowledged and ignored, and a terminal status is final.
- The model's output is a list of file URLs named ``<stem>.<ext>`` (wav, flac or mp3) in no reliable order,
  then ``stems.json``; stems are stored by name (see :func:`stems_by_name`), and ``stems.json`` and other
  files that are not audio are not stems. The model hands each stem over as soon as it is written, so
  ``output`` events of a ``processing`` prediction already carry the first stems (the vocals and
  instrumental while Demucs still runs); a stem, once stored, is kept.
- Each stem's figures (``present``, ``peak_dbfs``, ``loudness_lufs``, ``active_fraction``) with its ``model``
  and ``terms`` come from the webhook's ``metrics.stems`` when it has them, else from ``stems.json``, read
  (at most 256 KiB, checked as strictly as a body) after the event that lists it; once known they stay.
- ``on_stems(prediction_id, new_stems)`` runs once for the stems each webhook brings first, right after the
  200 has been sent: an app can start on a stem from the first ``output`` event that carries it.
  ``on_succeeded(prediction_id, stems)`` runs once when a prediction first reaches ``succeeded``, with all
  its stems. ``on_transcription(prediction_id, stem, url, figures)`` runs once for the transcription stem,
  when it has arrived and its figures say present (or no figures can come any more: stems.json read or
  unreadable, or the prediction ended without one); never for a stem whose figures say ``present: false``.
  All three are at-most-once (a crash between the database commit and the call loses it), and Replicate
  deletes API outputs an hour after the prediction is created, so fetch or queue the files promptly (the
  Worker in ``examples/worker`` copies them to R2 from a queue, at least once).
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
STEM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
AUDIO_EXTENSIONS = ("wav", "flac", "mp3")  # the model's formats: only these files are stems
FIGURES_FILE = "stems.json"  # the model's last output file: every stem's figures, model and terms
MAX_STEMS_JSON_BYTES = 256 * 1024
STEMS_JSON_TIMEOUT_SECONDS = 10
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a model name or a terms label
GUITAR_MODES = ("guitar", "guitar_only", "all_6")

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
    received_at REAL NOT NULL,
    body_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS stem_figures (
    prediction_id TEXT NOT NULL,
    name TEXT NOT NULL,
    present INTEGER,
    peak_dbfs REAL,
    loudness_lufs REAL,
    active_fraction REAL,
    model TEXT,
    terms TEXT,
    source TEXT NOT NULL,
    PRIMARY KEY (prediction_id, name)
);
CREATE TABLE IF NOT EXISTS transcriptions (
    prediction_id TEXT PRIMARY KEY,
    stem TEXT,
    figures_url TEXT,
    figures_read INTEGER NOT NULL DEFAULT 0,
    handed_off_at REAL
);
"""
# stem_figures.source: 'metrics' (the webhook's metrics.stems) or 'stems.json'; figures, once known, stay.
# transcriptions.stem: from the first event with an input (NULL: none seen, the guitar is assumed);
# figures_url: stems.json once listed; figures_read: 0 not yet, 2 being read, 1 read, -1 could not be read.


class PayloadError(ValueError):
    """A verified webhook body (or a stems.json) that is not as Replicate and the model write it."""


@dataclass(frozen=True)
class StemFigures:
    """A stem's figures (README: "Stem figures"), the model that made it and that model's terms label."""

    present: bool | None = None
    peak_dbfs: float | None = None
    loudness_lufs: float | None = None
    active_fraction: float | None = None
    model: str | None = None
    terms: str | None = None


@dataclass(frozen=True)
class Prediction:
    """What the receiver keeps of a prediction: its status, error message and stem URLs keyed by stem name,
    the stems' figures, the URL of stems.json, and the stem to transcribe (None: no input seen)."""

    prediction_id: str
    status: str
    error: str | None = None
    stems: dict[str, str] = field(default_factory=dict)  # stem name -> file URL, as output events bring them
    figures: dict[str, StemFigures] = field(default_factory=dict)
    figures_url: str | None = None
    transcription_stem: str | None = None


class Outcome(Enum):
    """What recording one webhook did to the store."""

    APPLIED = (
        "applied"  # the prediction moved forward, brought stems or figures, or was seen for the first time
    )
    IGNORED = "ignored"  # nothing new (same or earlier status, no new stem): acknowledged, nothing changed
    DUPLICATE = "duplicate"  # this webhook-id was already recorded with this body (a retried delivery)
    CONFLICT = "conflict"  # this webhook-id was already recorded with another body: refused, nothing applied


OnSucceeded = Callable[[str, dict[str, str]], None]  # (prediction id, all its stems)
OnStems = Callable[[str, dict[str, str]], None]  # (prediction id, the stems this webhook brought first)
OnTranscription = Callable[[str, str, str, StemFigures], None]  # (prediction id, stem, its URL, its figures)


@dataclass(frozen=True)
class Recorded:
    """What recording one webhook did: the outcome, and the stems it stored for the first time."""

    outcome: Outcome
    new_stems: dict[str, str] = field(default_factory=dict)


def transcription_stem(prediction_input: dict | None) -> str:
    """The stem FretWise transcribes: ``guitar`` when the prediction's mode gives one (``stems`` = ``guitar``,
    ``guitar_only`` or ``all_6``, or ``guitar`` among ``extra_stems``), else ``instrumental``. Without an
    input (a self-hosted runtime's webhooks carry none) the guitar is assumed. The Worker in
    ``examples/worker`` applies the same rule; both are tested on the cases in
    ``examples/worker/test/fixtures/transcription-stem.json``."""
    if prediction_input is None:
        return "guitar"
    extras = [name.strip() for name in (prediction_input.get("extra_stems") or "").split(",")]
    return "guitar" if prediction_input.get("stems") in GUITAR_MODES or "guitar" in extras else "instrumental"


def _output_files(output: list[str]) -> tuple[dict[str, str], str | None]:
    """(``{stem: url}``, the URL of stems.json or None) for an output list; see :func:`stems_by_name`."""
    if not isinstance(output, list):
        raise ValueError(f"expected a list of file URLs, got {type(output).__name__}")
    stems: dict[str, str] = {}
    figures_url = None
    for url in output:
        if not isinstance(url, str):
            raise ValueError(f"expected a file URL string, got {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"expected an http(s) file URL, got {url[:60]!r}")
        segment = parts.path.rsplit("/", 1)[-1]  # split before decoding: an encoded '/' stays in the name
        try:
            file = unquote(segment, errors="strict")
        except UnicodeDecodeError as exc:
            raise ValueError(f"file name {segment[:80]!r} is not valid percent-encoding") from exc
        if not file:
            raise ValueError(f"file URL has no file name: {url!r}")
        if file == FIGURES_FILE:
            if figures_url is not None:
                raise ValueError("stems.json is listed twice")
            figures_url = url
            continue
        name, dot, extension = file.rpartition(".")
        if not dot or extension.lower() not in AUDIO_EXTENSIONS:
            continue  # not audio: not a stem
        if not STEM_NAME.fullmatch(name):
            raise ValueError(
                f"output file {file[:80]!r} does not name a stem "
                "(a stem name is 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit)"
            )
        if name in stems:
            raise ValueError(f"two files for stem {name!r}: {stems[name]!r} and {url!r}")
        stems[name] = url
    return dict(sorted(stems.items())), figures_url


def stems_by_name(output: list[str]) -> dict[str, str]:
    """Map each stem name to its file URL, using the URL's file name and never the list position.

    The model returns its files as a list of URLs named ``<stem>.<ext>`` (wav, flac or mp3), then
    ``stems.json`` with every stem's figures; Replicate's runtime lists them in upload-completion order, so
    the position says nothing. The stem name is the last path segment (split off before percent-decoding),
    decoded, without its extension, and must be 1-64 of ``a-z0-9_-``; query string and fragment are ignored:
    ``https://replicate.delivery/xezq/abc/vocals.wav?sig=1`` -> ``"vocals"``. ``stems.json`` and other files
    that are not audio are not stems.

    Returns the dict sorted by stem name. Raises ValueError when ``output`` is not a list of http(s) URLs,
    when a URL has no file name (a ``data:`` URL has none), when an audio file's name is not a stem name
    (``..%2F..%2Fetc%2Fpasswd.wav``), or when two URLs give the same stem name (an error rather than
    last-wins, so a file is never silently dropped).
    """
    return _output_files(output)[0]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def loads_strict(text: str) -> object:
    """``json.loads`` without Python's extensions (NaN, Infinity)."""
    return json.loads(text, parse_constant=_reject_constant)


def parse_figures(value: object, where: str) -> StemFigures:
    """One stem's figures, checked field by field; ``where`` names the object in messages."""
    if not isinstance(value, dict):
        raise PayloadError(f"'{where}' must be an object")
    present = value.get("present")
    if "present" in value and not isinstance(present, bool):
        raise PayloadError(f"'{where}.present' must be true or false, got {json.dumps(present)}")
    numbers = {}
    for key in ("peak_dbfs", "loudness_lufs", "active_fraction"):
        number = value.get(key)
        if number is not None and (isinstance(number, bool) or not isinstance(number, int | float)):
            raise PayloadError(f"'{where}.{key}' must be a number or null, got {json.dumps(number)[:40]}")
        numbers[key] = None if number is None else float(number)
    if numbers["active_fraction"] is not None and not 0 <= numbers["active_fraction"] <= 1:
        raise PayloadError(f"'{where}.active_fraction' must be from 0 to 1, got {numbers['active_fraction']}")
    labels = {}
    for key in ("model", "terms"):
        label = value.get(key)
        if label is not None and not (isinstance(label, str) and LABEL.fullmatch(label)):
            raise PayloadError(f"'{where}.{key}' must be a short label, got {json.dumps(label)[:40]}")
        labels[key] = label
    return StemFigures(present, **numbers, **labels)


def parse_figures_by_stem(value: object, where: str) -> dict[str, StemFigures]:
    """``{stem: figures}`` (the shape of ``metrics.stems`` and of stems.json), keyed by stem names only."""
    if not isinstance(value, dict):
        raise PayloadError(f"'{where}' must be an object keyed by stem name")
    figures = {}
    for name, entry in value.items():
        if not STEM_NAME.fullmatch(name):
            raise PayloadError(f"'{where}' has a key that is not a stem name: {name[:80]!r}")
        figures[name] = parse_figures(entry, f"{where}.{name}")
    return figures


def parse_stems_json(text: str) -> dict[str, StemFigures]:
    """The figures in stems.json, whose entries also name their own file (``"file": "guitar.flac"``)."""
    try:
        payload = loads_strict(text)
    except ValueError as exc:
        raise PayloadError(f"stems.json is not JSON: {exc}") from exc
    figures = parse_figures_by_stem(payload, "stems.json")
    for name, entry in payload.items():
        file = entry.get("file")
        if not isinstance(file, str) or file.rpartition(".")[0] != name:
            raise PayloadError(
                f"'stems.json.{name}.file' must be the stem's file name ({name}.<ext>), got {file!r}"
            )
    return figures


def read_stems_json(url: str) -> dict[str, StemFigures]:
    """Fetch stems.json (at most MAX_STEMS_JSON_BYTES) and parse it. Raises OSError or PayloadError."""
    with urllib.request.urlopen(url, timeout=STEMS_JSON_TIMEOUT_SECONDS) as response:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_STEMS_JSON_BYTES:
            raise PayloadError(f"stems.json is {declared} bytes, more than the {MAX_STEMS_JSON_BYTES} read")
        data = response.read(MAX_STEMS_JSON_BYTES + 1)
    if len(data) > MAX_STEMS_JSON_BYTES:
        raise PayloadError(f"stems.json is more than the {MAX_STEMS_JSON_BYTES} bytes read")
    try:
        return parse_stems_json(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PayloadError("stems.json is not UTF-8 text") from exc


def _optional_string(mapping: dict, key: str, where: str) -> str | None:
    value = mapping.get(key)
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"'{where}.{key}' must be a string")
    return value


def parse_prediction(payload: object) -> Prediction:
    """Reduce a webhook body (a Replicate prediction object, parsed JSON) to a :class:`Prediction`.

    Stems are read from ``output`` while the status is ``processing`` (the stems written so far; none yet
    when it is missing) and when it is ``succeeded``; figures from ``metrics.stems``; the transcription stem
    from ``input``. Raises PayloadError naming the bad field.
    """
    if not isinstance(payload, dict):
        raise PayloadError(
            f"body must be a JSON object (a Replicate prediction), got {type(payload).__name__}"
        )
    prediction_id = payload.get("id")
    if not isinstance(prediction_id, str) or not prediction_id:
        raise PayloadError(f"'id' must be a non-empty string, got {prediction_id!r}")
    status = payload.get("status")
    if not isinstance(status, str) or status not in STATUS_RANK:
        raise PayloadError(f"'status' must be one of {sorted(STATUS_RANK)}, got {status!r}")
    error = payload.get("error")
    stems: dict[str, str] = {}
    figures_url = None
    if status == "succeeded" or (status == "processing" and payload.get("output") is not None):
        try:
            stems, figures_url = _output_files(payload.get("output"))
        except ValueError as exc:
            raise PayloadError(f"'output' of a {status} prediction: {exc}") from exc
    metrics = payload.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        raise PayloadError("'metrics' must be an object")
    metrics_stems = (metrics or {}).get("stems")
    figures = {} if metrics_stems is None else parse_figures_by_stem(metrics_stems, "metrics.stems")
    prediction_input = payload.get("input")
    if prediction_input is not None and not isinstance(prediction_input, dict):
        raise PayloadError("'input' must be an object")
    stem = None
    if prediction_input is not None:
        mode = {key: _optional_string(prediction_input, key, "input") for key in ("stems", "extra_stems")}
        stem = transcription_stem(mode)
    return Prediction(
        prediction_id,
        status,
        None if error is None else str(error),
        stems,
        figures,
        figures_url,
        stem,
    )


class Store:
    """Predictions and seen webhook ids in one SQLite file; one instance is shared by all server threads."""

    def __init__(self, path: str | os.PathLike[str]):
        self._lock = threading.Lock()
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE) in record().
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(seen_webhooks)")}
        if "body_sha256" not in columns:  # a database written before the body hash was kept
            self._db.execute("ALTER TABLE seen_webhooks ADD COLUMN body_sha256 TEXT")

    def _transaction(self, work: Callable[[], object]) -> object:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return result

    def record(self, webhook_id: str, update: Prediction, body_sha256: str | None = None) -> Recorded:
        """Record one verified webhook atomically: dedupe on ``webhook_id`` (CONFLICT, nothing applied, when
        it was seen with another body), move the status forward only, add the stems and figures not stored
        yet (a terminal status is final)."""
        return self._transaction(lambda: self._record_in_transaction(webhook_id, update, body_sha256))

    def _record_in_transaction(
        self, webhook_id: str, update: Prediction, body_sha256: str | None
    ) -> Recorded:
        """The body of :meth:`record`; runs inside an open transaction."""
        now = time.time()
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO seen_webhooks (webhook_id, prediction_id, received_at, body_sha256)"
            " VALUES (?, ?, ?, ?)",
            (webhook_id, update.prediction_id, now, body_sha256),
        )
        if inserted.rowcount == 0:
            (stored,) = self._db.execute(
                "SELECT body_sha256 FROM seen_webhooks WHERE webhook_id = ?", (webhook_id,)
            ).fetchone()
            same = stored is None or body_sha256 is None or stored == body_sha256
            return Recorded(Outcome.DUPLICATE if same else Outcome.CONFLICT)
        row = self._db.execute(
            "SELECT status, error, stems_json FROM predictions WHERE id = ?", (update.prediction_id,)
        ).fetchone()
        status, error, stems = update.status, update.error, {}
        if row is not None:
            stored_status, stored_error, stems_json = row
            stems = json.loads(stems_json)
            if STATUS_RANK[update.status] <= STATUS_RANK[stored_status]:  # late or repeated: keep the status
                status, error = stored_status, stored_error
                if stored_status not in NON_TERMINAL:  # terminal is final, stems and figures included
                    return Recorded(Outcome.IGNORED)
        new_stems = {name: url for name, url in update.stems.items() if name not in stems}
        learned = self._record_figures(update.prediction_id, update.figures, "metrics")
        learned += self._db.execute(
            "INSERT OR IGNORE INTO transcriptions (prediction_id) VALUES (?)", (update.prediction_id,)
        ).rowcount
        learned += self._db.execute(
            "UPDATE transcriptions SET stem = COALESCE(stem, ?), figures_url = COALESCE(figures_url, ?)"
            " WHERE prediction_id = ? AND ((stem IS NULL AND ? IS NOT NULL)"
            " OR (figures_url IS NULL AND ? IS NOT NULL))",
            (update.transcription_stem, update.figures_url, update.prediction_id)
            + (update.transcription_stem, update.figures_url),
        ).rowcount
        if row is not None and status == row[0] and not new_stems and not learned:
            return Recorded(Outcome.IGNORED)
        self._db.execute(
            "INSERT OR REPLACE INTO predictions (id, status, error, stems_json, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (update.prediction_id, status, error, json.dumps({**stems, **new_stems}, sort_keys=True), now),
        )
        return Recorded(Outcome.APPLIED, new_stems)

    def _record_figures(self, prediction_id: str, figures: dict[str, StemFigures], source: str) -> int:
        """Store figures not known yet; the number of stems whose figures were new."""
        added = 0
        for name, stem in figures.items():
            added += self._db.execute(
                "INSERT OR IGNORE INTO stem_figures (prediction_id, name, present, peak_dbfs, loudness_lufs,"
                " active_fraction, model, terms, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (prediction_id, name, stem.present, stem.peak_dbfs, stem.loudness_lufs)
                + (stem.active_fraction, stem.model, stem.terms, source),
            ).rowcount
        return added

    def figures_to_read(self, prediction_id: str) -> str | None:
        """The URL of the prediction's stems.json while it is listed and nobody has started reading it, marked
        as being read so that one thread reads it; else None."""

        def work() -> str | None:
            row = self._db.execute(
                "SELECT figures_url FROM transcriptions"
                " WHERE prediction_id = ? AND figures_read = 0 AND figures_url IS NOT NULL",
                (prediction_id,),
            ).fetchone()
            if row is not None:
                self._db.execute(
                    "UPDATE transcriptions SET figures_read = 2 WHERE prediction_id = ?", (prediction_id,)
                )
            return row[0] if row else None

        return self._transaction(work)

    def record_stems_json(self, prediction_id: str, figures: dict[str, StemFigures] | None) -> None:
        """Store stems.json's figures for the stems still without any; None: it could not be read."""

        def work() -> None:
            if figures is not None:
                self._record_figures(prediction_id, figures, "stems.json")
            self._db.execute(
                "UPDATE transcriptions SET figures_read = ? WHERE prediction_id = ?",
                (-1 if figures is None else 1, prediction_id),
            )

        self._transaction(work)

    def claim_transcription(self, prediction_id: str) -> tuple[str, str, StemFigures] | None:
        """(stem, URL, figures) of the prediction's transcription stem once it is due, marked handed off so
        that it is returned once; None while it is not due. Due: the stem has arrived and its figures say
        present, or no more figures can come (stems.json read or given up on, or the prediction ended
        without one); never for a stem whose figures say present: false."""
        return self._transaction(lambda: self._claim_in_transaction(prediction_id))

    def _claim_in_transaction(self, prediction_id: str) -> tuple[str, str, StemFigures] | None:
        row = self._db.execute(
            "SELECT p.status, p.stems_json, t.stem, t.figures_url, t.figures_read, t.handed_off_at"
            " FROM predictions p JOIN transcriptions t ON t.prediction_id = p.id WHERE p.id = ?",
            (prediction_id,),
        ).fetchone()
        if row is None or row[5] is not None:
            return None
        status, stems_json, stem, figures_url, figures_read, _ = row
        stem = stem or "guitar"
        url = json.loads(stems_json).get(stem)
        figures = self._figures(prediction_id).get(stem, StemFigures())
        settled = figures_read in (1, -1) or (figures_url is None and status not in NON_TERMINAL)
        if url is None or figures.present is False or (figures.present is None and not settled):
            return None
        self._db.execute(
            "UPDATE transcriptions SET handed_off_at = ? WHERE prediction_id = ?",
            (time.time(), prediction_id),
        )
        return stem, url, figures

    def _figures(self, prediction_id: str) -> dict[str, StemFigures]:
        rows = self._db.execute(
            "SELECT name, present, peak_dbfs, loudness_lufs, active_fraction, model, terms FROM stem_figures"
            " WHERE prediction_id = ? ORDER BY name",
            (prediction_id,),
        )
        return {
            name: StemFigures(None if present is None else bool(present), *rest)
            for name, present, *rest in rows
        }

    def get(self, prediction_id: str) -> Prediction | None:
        """The stored state of one prediction, or None if no webhook for it was recorded."""
        with self._lock:
            row = self._db.execute(
                "SELECT p.status, p.error, p.stems_json, t.figures_url, t.stem FROM predictions p"
                " LEFT JOIN transcriptions t ON t.prediction_id = p.id WHERE p.id = ?",
                (prediction_id,),
            ).fetchone()
            figures = self._figures(prediction_id)
        if row is None:
            return None
        status, error, stems_json, figures_url, stem = row
        return Prediction(prediction_id, status, error, json.loads(stems_json), figures, figures_url, stem)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()


def log_new_stems(prediction_id: str, new_stems: dict[str, str]) -> None:
    """Default ``on_stems`` hook: log the stems as they arrive. Replace it to start work on a stem early."""
    log.info("prediction %s: new stems %s", prediction_id, ", ".join(sorted(new_stems)))


def log_succeeded(prediction_id: str, stems: dict[str, str]) -> None:
    """Default ``on_succeeded`` hook: log the stems of a prediction that succeeded."""
    log.info("prediction %s succeeded with stems %s", prediction_id, ", ".join(sorted(stems)))


def log_transcription(prediction_id: str, stem: str, url: str, figures: StemFigures) -> None:
    """Default ``on_transcription`` hook: log the stem to transcribe. Replace it with the hand-off (and
    fetch the file within the hour: Replicate deletes API outputs an hour after the prediction is created)."""
    log.info("prediction %s: transcribe %s (%s, present=%s)", prediction_id, stem, url, figures.present)


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
        on_succeeded: OnSucceeded = log_succeeded,
        webhook_path: str = DEFAULT_PATH,
        on_stems: OnStems = log_new_stems,
        on_transcription: OnTranscription = log_transcription,
    ):
        self.webhook = webhook
        self.store = store
        self.on_succeeded = on_succeeded
        self.on_stems = on_stems
        self.on_transcription = on_transcription
        self.webhook_path = webhook_path
        super().__init__(address, WebhookHandler)


class WebhookHandler(BaseHTTPRequestHandler):
    """One request: verify, parse, record, reply, then ``on_stems`` for stems it brought first,
    ``on_succeeded`` if the prediction just succeeded, and ``on_transcription`` once the transcription stem
    is due (reading stems.json first when it is listed and not read yet)."""

    server: WebhookServer
    timeout = 10  # seconds a client may stall on its socket before the connection is dropped

    def do_POST(self) -> None:
        """Answer a webhook delivery (200 once recorded), then hand new stems, a newly succeeded
        prediction and a due transcription stem on."""
        succeeded, new_stems, headers, recorded_id = None, None, {}, None
        try:
            status, body, succeeded, new_stems = self._receive()
            recorded_id = body["prediction"]
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
        if recorded_id is not None:
            self._hand_off(recorded_id)

    def _hand_off(self, prediction_id: str) -> None:
        """Read stems.json if it is due, then call ``on_transcription`` if the transcription stem is due."""
        store = self.server.store
        url = store.figures_to_read(prediction_id)
        if url is not None:
            try:
                figures = read_stems_json(url)
            except (OSError, PayloadError) as exc:
                log.warning(
                    "prediction %s: stems.json not read (%s); its stems' figures stay unknown",
                    prediction_id,
                    exc,
                )
                figures = None
            store.record_stems_json(prediction_id, figures)
        claimed = store.claim_transcription(prediction_id)
        if claimed is not None:
            try:
                self.server.on_transcription(prediction_id, *claimed)
            except Exception:
                log.exception("on_transcription failed for prediction %s", prediction_id)

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
            update = parse_prediction(loads_strict(text))
        except PayloadError as exc:
            raise Rejected(HTTPStatus.BAD_REQUEST, str(exc)) from exc
        except ValueError as exc:
            raise Rejected(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from exc
        webhook_id = self.headers["webhook-id"]
        recorded = self.server.store.record(webhook_id, update, hashlib.sha256(body).hexdigest())
        outcome = recorded.outcome
        if outcome is Outcome.CONFLICT:
            raise Rejected(
                HTTPStatus.CONFLICT,
                f"webhook-id {webhook_id} was delivered before with another body; nothing applied",
            )
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
