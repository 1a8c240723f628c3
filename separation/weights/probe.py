"""Which of the manifest's URLs still answer, without downloading them (`python -m separation.weights
check-urls`).

Each URL gets a HEAD request; a server that refuses HEAD (any HTTP error but 404 and 410) gets a GET for
one byte (`Range: bytes=0-0`) instead. A URL passes when it answers 200 or 206 and every size or digest it
announces matches the manifest: `Content-Length` (HEAD, or a GET that ignores the Range), the total of
`Content-Range` (a 206), and Hugging Face's `X-Linked-Size` and `X-Linked-Etag` (the sha256 of a Git LFS
file), which it sends on the redirect to its storage. A URL that announces no size still passes, saying so.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message

from .download import failure_text
from .manifest import WeightFile

_HEAD_REFUSALS_NOT = frozenset({404, 410})  # these say the file is gone: no point asking again with GET
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")
_ETAG_SHA256 = re.compile(r'(?:W/)?"?([0-9a-fA-F]{64})"?')


@dataclass(frozen=True)
class UrlCheck:
    """What one URL answered: `ok` when it serves the file as the manifest describes it (as far as its
    headers tell), `answer` a short text such as 'HTTP 200, 639331213 bytes, sha256 matches (X-Linked-Etag)'.
    `candidate` marks an unconfirmed mirror, which is never downloaded from and does not count."""

    file: WeightFile
    url: str
    ok: bool
    answer: str
    candidate: bool = False


def check_urls(
    files: Sequence[WeightFile], *, timeout_seconds: float = 20.0, workers: int = 8
) -> list[UrlCheck]:
    """Probe every URL (and unconfirmed mirror) of `files`, `workers` at a time, in manifest order.

    `timeout_seconds` bounds each socket wait.
    """
    jobs = [(file, url, False) for file in files for url in file.urls]
    jobs += [(file, mirror.url, True) for file in files for mirror in file.unconfirmed_mirrors]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda job: _check(*job, timeout_seconds), jobs))


def files_without_a_working_url(files: Sequence[WeightFile], checks: Sequence[UrlCheck]) -> list[WeightFile]:
    """The downloaded files none of whose URLs passed (unconfirmed mirrors do not count)."""
    working = {check.file.target for check in checks if check.ok and not check.candidate}
    return [file for file in files if file.urls and file.target not in working]


def _check(file: WeightFile, url: str, candidate: bool, timeout_seconds: float) -> UrlCheck:
    """Probe one URL: HEAD, else a one-byte GET; then compare what it announces with the manifest."""
    try:
        status, headers = _request(url, "HEAD", timeout_seconds)
        how = ""
    except _Refused as head:
        if head.code is None or head.code in _HEAD_REFUSALS_NOT:  # no answer at all, or the file is gone
            return UrlCheck(file, url, False, head.text, candidate)
        try:
            status, headers = _request(url, "GET", timeout_seconds)
        except _Refused as get:
            return UrlCheck(file, url, False, f"{get.text} (HEAD: {head.text})", candidate)
        how = f" to a 1-byte GET (HEAD: {head.text})"
    ok, notes = _compare(file, status, headers)
    return UrlCheck(file, url, ok, f"HTTP {status}{how}, " + ", ".join(notes), candidate)


class _Refused(Exception):
    """A request that got no usable answer; `code` is the HTTP status where there was one."""

    def __init__(self, text: str, code: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects keeping the method (urllib turns a redirected HEAD into a GET) and records each
    redirect's headers: Hugging Face puts X-Linked-Size and X-Linked-Etag on its redirect only."""

    def __init__(self) -> None:
        self.hops: list[Message] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops.append(headers)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.method = req.get_method()
        return new


def _request(url: str, method: str, timeout_seconds: float) -> tuple[int, list[Message]]:
    """(final status, headers of every redirect then of the final answer); _Refused on any failure.

    A GET asks for the first byte only and reads nothing of the body.
    """
    redirects = _RecordingRedirects()
    opener = urllib.request.build_opener(redirects)
    request = urllib.request.Request(url, method=method)
    if method == "GET":
        request.add_header("Range", "bytes=0-0")
    try:
        with opener.open(request, timeout=timeout_seconds) as response:
            return response.status, [*redirects.hops, response.headers]
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _Refused(f"HTTP {exc.code} {exc.reason}", exc.code) from exc
    except urllib.error.URLError as exc:
        raise _Refused(_describe(exc.reason)) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Refused(_describe(exc)) from exc


def _compare(file: WeightFile, status: int, hops: list[Message]) -> tuple[bool, list[str]]:
    """(passes, notes): each size and digest the answer announces, set against the manifest's."""
    final = hops[-1]
    sizes = []  # (header name, announced bytes)
    if status == 206:
        match = _CONTENT_RANGE.fullmatch(final.get("Content-Range", ""))
        if match:
            sizes.append(("Content-Range", int(match.group(1))))
    elif (length := final.get("Content-Length", "")).isdigit():
        sizes.append(("Content-Length", int(length)))
    linked_size = next((h["X-Linked-Size"] for h in hops if h.get("X-Linked-Size", "").isdigit()), None)
    if linked_size is not None:
        sizes.append(("X-Linked-Size", int(linked_size)))
    ok = status in (200, 206)
    notes = []
    wrong_sizes = [f"{name} says {size} bytes" for name, size in sizes if size != file.size]
    if wrong_sizes:
        ok = False
        notes.append(f"{'; '.join(wrong_sizes)}, the manifest expects {file.size}")
    elif sizes:
        notes.append(f"{file.size} bytes as expected ({', '.join(name for name, _ in sizes)})")
    else:
        notes.append("size not announced")
    etags = [_ETAG_SHA256.fullmatch(h.get("X-Linked-Etag", "")) for h in hops]
    digest = next((match.group(1).lower() for match in etags if match), None)
    if digest is not None and digest != file.sha256:
        ok = False
        notes.append(f"X-Linked-Etag sha256 is {digest}, the manifest expects {file.sha256}")
    elif digest is not None:
        notes.append("sha256 as expected (X-Linked-Etag)")
    return ok, notes


def _describe(reason: object) -> str:
    """A short text for a connection failure: the common ones by name, others as a download states them."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host not found"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failure: {reason.reason or reason}"
    return failure_text(reason)
