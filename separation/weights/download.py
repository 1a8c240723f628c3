"""Resumable, verified downloads of the manifest's files.

A download goes to `<target>.part`, resumes with an HTTP Range request after a dropped connection (or from
the part file an interrupted earlier run left), and is renamed onto the target (atomically) only once its
size and sha256 match the manifest. A file's URLs are tried in order; a URL that fails, or serves other
bytes, has its part file deleted before the next one starts. Only the standard library is used for HTTP.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from ..errors import WeightsError
from .manifest import READ_CHUNK_BYTES, WeightFile, file_problem, package_file_path

_RETRYABLE_HTTP_CODES = frozenset({408, 425, 429})


def fetch(
    weights_dir: Path,
    files: Sequence[WeightFile],
    *,
    progress: bool = True,
    timeout_seconds: float = 60.0,
    attempts: int = 5,
    backoff_seconds: float = 2.0,
) -> None:
    """Put every file of `files` into `weights_dir`, checked against its size and sha256.

    Files already present and correct are left alone. Downloads resume after dropped connections;
    `attempts` is the number of tries in a row without progress before a URL is given up, with
    `backoff_seconds * 2**k` seconds between them. `timeout_seconds` bounds each socket wait.
    Raises WeightsError when a file cannot be obtained or does not match the manifest.
    """
    for file in files:
        destination = Path(weights_dir) / file.target
        if file_problem(destination, file) is None:
            if progress:
                tqdm.write(f"{file.target}: present, sha256 OK", file=sys.stderr)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        if file.package_file is not None:
            _copy_package_file(file, destination)
        else:
            _download_file(
                file,
                destination,
                progress=progress,
                timeout_seconds=timeout_seconds,
                attempts=attempts,
                backoff_seconds=backoff_seconds,
            )


def _part_path(destination: Path) -> Path:
    """Where a file is assembled before it is checked and renamed onto `destination`."""
    return destination.with_name(destination.name + ".part")


def _promote(part: Path, destination: Path, file: WeightFile) -> str | None:
    """Rename `part` onto `destination` if it matches `file`; else delete it and say what was wrong."""
    problem = file_problem(part, file)
    if problem is not None:
        part.unlink(missing_ok=True)
        return problem
    os.replace(part, destination)
    return None


def _copy_package_file(file: WeightFile, destination: Path) -> None:
    """Copy a file shipped inside an installed package, keeping it only if its sha256 matches."""
    source = package_file_path(file.package_file)
    part = _part_path(destination)
    shutil.copyfile(source, part)
    problem = _promote(part, destination, file)
    if problem is not None:
        raise WeightsError(
            f"{file.target}: the copy of {source} does not match the manifest ({problem}); "
            f"is a different version of the package installed?"
        )


class _TransferError(Exception):
    """One HTTP attempt failed; `retryable` says whether trying the same URL again may help."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.retryable = retryable


def _download_file(
    file: WeightFile,
    destination: Path,
    *,
    progress: bool,
    timeout_seconds: float,
    attempts: int,
    backoff_seconds: float,
) -> None:
    """Try `file.urls` in order until one yields bytes with the right sha256; else raise DownloadError.

    A URL that fails leaves nothing behind: its partial file is deleted before the next URL starts, so
    every URL's bytes are judged on their own, and none is left when all fail.
    """
    part = _part_path(destination)
    failures = []
    for url in file.urls:
        try:
            _download_url(
                url,
                part,
                file,
                progress=progress,
                timeout_seconds=timeout_seconds,
                attempts=attempts,
                backoff_seconds=backoff_seconds,
            )
        except _TransferError as exc:
            part.unlink(missing_ok=True)
            failures.append(f"cannot download {file.target} from {url}: {exc}")
            continue
        problem = _promote(part, destination, file)
        if problem is None:
            return
        failures.append(f"cannot download {file.target} from {url}: it serves other bytes ({problem})")
    raise DownloadError(failures)


class DownloadError(WeightsError):
    """No URL of a file gave the right bytes: the message has one line per URL saying what it answered."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))


def _download_url(
    url: str,
    part: Path,
    file: WeightFile,
    *,
    progress: bool,
    timeout_seconds: float,
    attempts: int,
    backoff_seconds: float,
) -> None:
    """Complete `part` from `url`, retrying (with exponential backoff) while attempts make progress."""
    failures_in_a_row = 0
    while True:
        size_before = _size_of(part)
        try:
            _transfer(url, part, file, progress=progress, timeout_seconds=timeout_seconds)
            return
        except _TransferError as exc:
            if not exc.retryable:
                raise
            failures_in_a_row = 0 if _size_of(part) > size_before else failures_in_a_row + 1
            if failures_in_a_row >= attempts:
                raise
            time.sleep(backoff_seconds * 2**failures_in_a_row)


def _size_of(path: Path) -> int:
    """Size in bytes, 0 for a missing file."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _transfer(url: str, part: Path, file: WeightFile, *, progress: bool, timeout_seconds: float) -> None:
    """One HTTP request that appends the rest of the file to `part` (Range from its current size)."""
    offset_bytes = _size_of(part)
    if offset_bytes > file.size:
        part.unlink()
        offset_bytes = 0
    request = urllib.request.Request(url)
    if offset_bytes:
        request.add_header("Range", f"bytes={offset_bytes}-")
    response = _open(request, part, timeout_seconds)
    with response:
        if response.status != 206:
            offset_bytes = 0  # the server sends the whole file: start over
        announced_bytes = _announced_total_bytes(response, offset_bytes)
        if announced_bytes is not None and announced_bytes != file.size:
            raise _TransferError(
                f"the server announces {announced_bytes} bytes, the manifest expects {file.size}",
                retryable=False,
            )
        with (
            open(part, "ab" if offset_bytes else "wb") as sink,
            tqdm(
                total=file.size,
                initial=offset_bytes,
                desc=file.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
            ) as bar,
        ):
            for piece in _pieces(response, offset_bytes, file.size):
                sink.write(piece)
                offset_bytes += len(piece)
                bar.update(len(piece))
    if offset_bytes > file.size:
        part.unlink()
        raise _TransferError(f"the server sent more than the expected {file.size} bytes", retryable=False)
    if offset_bytes < file.size:
        raise _TransferError(
            f"the connection closed after {offset_bytes} of {file.size} bytes", retryable=True
        )


def _open(request: urllib.request.Request, part: Path, timeout_seconds: float) -> http.client.HTTPResponse:
    """urlopen, with every failure turned into a _TransferError that says whether to retry."""
    try:
        return urllib.request.urlopen(request, timeout=timeout_seconds)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416:  # our Range lies beyond the file: the part is stale
            part.unlink(missing_ok=True)
            raise _TransferError(
                "the server cannot resume the partial file (HTTP 416)", retryable=True
            ) from exc
        retryable = exc.code in _RETRYABLE_HTTP_CODES or exc.code >= 500
        raise _TransferError(f"HTTP {exc.code} {exc.reason}", retryable=retryable) from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLError):
            raise _TransferError(f"TLS failure: {failure_text(reason)}", retryable=False) from exc
        unreachable = isinstance(reason, (socket.gaierror, ConnectionRefusedError))
        raise _TransferError(f"{failure_text(reason)} (no network?)", retryable=not unreachable) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _TransferError(failure_text(exc), retryable=True) from exc


def _announced_total_bytes(response: http.client.HTTPResponse, offset_bytes: int) -> int | None:
    """The whole file's size as the response states it (Content-Range or Content-Length), if it does."""
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != offset_bytes:
            raise _TransferError(
                f"unexpected Content-Range {response.headers.get('Content-Range')!r} for a resume "
                f"at byte {offset_bytes}",
                retryable=False,
            )
        return None if match.group(2) == "*" else int(match.group(2))
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _pieces(response: http.client.HTTPResponse, offset_bytes: int, size: int) -> Iterator[bytes]:
    """The body in pieces of up to 1 MiB; stops after the first piece that passes `size` bytes.

    A read failure (reset, timeout) becomes a retryable _TransferError; the bytes already yielded stay.
    """
    while offset_bytes <= size:
        try:
            piece = response.read(READ_CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise _TransferError(
                f"the connection failed after {offset_bytes} of {size} bytes: {failure_text(exc)}",
                retryable=True,
            ) from exc
        if not piece:
            return
        offset_bytes += len(piece)
        yield piece


def failure_text(reason: object) -> str:
    """A short text for why a transfer failed: "timed out", an OSError's strerror without the errno prefix,
    else str() (or the type's name where that is empty)."""
    if isinstance(reason, TimeoutError):
        return "timed out"
    text = getattr(reason, "strerror", None) or str(reason)
    return text or type(reason).__name__
