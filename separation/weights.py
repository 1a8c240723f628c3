"""Weight files: the manifest, resumable verified downloads, checks, and the cog.yaml build lines.

`configs/weights.yaml` lists every file the models load, with its size, sha256 and where it comes
from (download URLs, or a file shipped inside an installed Python package). Everything here reads
that one manifest:

    python -m separation.weights fetch [--dir DIR] [--only MODEL ...]   # download / copy + check
    python -m separation.weights verify [--dir DIR] [--quick]           # report missing or bad files
    python -m separation.weights cog-build-steps                        # the build.run list for cog.yaml

A download goes to `<target>.part`, resumes with an HTTP Range request after a dropped connection,
and is renamed onto the target (atomically) only once its size and sha256 match the manifest.
Only the standard library is used for HTTP.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from separation.errors import WeightsError

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = REPO_ROOT / "configs" / "weights.yaml"
WEIGHTS_DIR_ENV = "SEPARATION_WEIGHTS_DIR"

_READ_CHUNK_BYTES = 1 << 20
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_RETRYABLE_HTTP_CODES = frozenset({408, 425, 429})
_CURL_OPTIONS = "--fail --location --silent --show-error --retry 5 --retry-delay 3 --retry-all-errors"
_MANIFEST_KEYS = frozenset({"target", "model", "size", "sha256", "urls", "package_file", "source"})


@dataclass(frozen=True)
class WeightFile:
    """One file of the manifest.

    `target` is relative to the weights folder (e.g. `demucs/5c90dfd2-34c22ccb.th`); `size` is in bytes.
    Exactly one of `urls` (tried in order) and `package_file` (`<package>/<path inside it>`) is set.
    """

    target: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    package_file: str | None
    model: str
    source: str

    def __post_init__(self) -> None:
        where = f"weights manifest entry {self.target!r}"
        target = Path(self.target)
        if not self.target or target.is_absolute() or ".." in target.parts:
            raise WeightsError(f"{where}: target must be a relative path inside the weights folder")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise WeightsError(f"{where}: size must be a positive number of bytes, got {self.size!r}")
        if not isinstance(self.sha256, str) or not _SHA256_PATTERN.fullmatch(self.sha256):
            raise WeightsError(f"{where}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if bool(self.urls) == (self.package_file is not None):
            raise WeightsError(f"{where}: give either urls or package_file, not both or neither")
        for url in self.urls:
            if not url.startswith(("https://", "http://")):
                raise WeightsError(f"{where}: not an http(s) URL: {url!r}")
        if self.package_file is not None:
            package, _, inner = self.package_file.partition("/")
            if not package.isidentifier() or not inner:
                raise WeightsError(
                    f"{where}: package_file must read '<package>/<path>', got {self.package_file!r}"
                )
        if not self.model:
            raise WeightsError(f"{where}: model must name the model that uses the file")

    @property
    def name(self) -> str:
        """The file name without folders."""
        return Path(self.target).name


def load_manifest(path: Path = MANIFEST_PATH) -> list[WeightFile]:
    """Read and check the weights manifest (a YAML file with a `files:` list)."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise WeightsError(f"cannot read the weights manifest {path}: {exc}") from exc
    entries = document.get("files") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise WeightsError(f"weights manifest {path}: expected a non-empty 'files:' list")
    files = [_weight_file(entry, path) for entry in entries]
    targets = [file.target for file in files]
    duplicates = sorted({target for target in targets if targets.count(target) > 1})
    if duplicates:
        raise WeightsError(f"weights manifest {path}: duplicate targets {duplicates}")
    return files


def _weight_file(entry: object, manifest: Path) -> WeightFile:
    """Turn one manifest mapping into a WeightFile, naming the entry in any error."""
    if not isinstance(entry, dict):
        raise WeightsError(f"weights manifest {manifest}: each entry must be a mapping, got {entry!r}")
    label = f"weights manifest {manifest}, entry {entry.get('target')!r}"
    unknown = sorted(set(entry) - _MANIFEST_KEYS)
    if unknown:
        raise WeightsError(f"{label}: unknown keys {unknown}")
    missing = sorted({"target", "model", "size", "sha256", "source"} - set(entry))
    if missing:
        raise WeightsError(f"{label}: missing keys {missing}")
    urls = entry.get("urls") or ()
    if isinstance(urls, str) or not all(isinstance(url, str) for url in urls):
        raise WeightsError(f"{label}: urls must be a list of strings")
    return WeightFile(
        target=str(entry["target"]),
        size=entry["size"],
        sha256=entry["sha256"],
        urls=tuple(urls),
        package_file=entry.get("package_file"),
        model=str(entry["model"]),
        source=str(entry["source"]),
    )


def select_models(files: Sequence[WeightFile], models: Sequence[str]) -> list[WeightFile]:
    """The files used by any of `models`; an unknown model name raises WeightsError."""
    known = sorted({file.model for file in files})
    unknown = [model for model in models if model not in known]
    if unknown:
        raise WeightsError(
            f"unknown model {', '.join(map(repr, unknown))}; the manifest has {', '.join(known)}"
        )
    return [file for file in files if file.model in models]


def default_weights_dir() -> Path:
    """`$SEPARATION_WEIGHTS_DIR` when set, else `<repo>/weights`."""
    configured = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(configured) if configured else REPO_ROOT / "weights"


def _sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(_READ_CHUNK_BYTES):
            digest.update(piece)
    return digest.hexdigest()


def _problem(path: Path, file: WeightFile, *, full_hash: bool = True) -> str | None:
    """What is wrong with `path` as a copy of `file` (missing, size, sha256), or None if it is good."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != file.size:
        return f"size is {size} bytes, expected {file.size}"
    if full_hash:
        actual = _sha256_of(path)
        if actual != file.sha256:
            return f"sha256 is {actual}, expected {file.sha256}"
    return None


def verify(weights_dir: Path, files: Sequence[WeightFile], *, full_hash: bool = True) -> list[str]:
    """One line per missing or bad file in `weights_dir`; empty when all are good.

    With `full_hash=False` only presence and size are checked (no file is read).
    """
    problems = []
    for file in files:
        path = Path(weights_dir) / file.target
        problem = _problem(path, file, full_hash=full_hash)
        if problem is not None:
            problems.append(f"{path}: {problem}")
    return problems


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
        if _problem(destination, file) is None:
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
    problem = _problem(part, file)
    if problem is not None:
        part.unlink(missing_ok=True)
        return problem
    os.replace(part, destination)
    return None


def package_file_path(package_file: str) -> Path:
    """The path of `<package>/<inner path>` inside the installed package (without importing it)."""
    package, _, inner = package_file.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"{package_file}: the Python package {package!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_file():
        raise WeightsError(f"{package_file}: no such file in the installed {package} package ({path})")
    return path


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
    """Try `file.urls` in order until one yields bytes with the right sha256; else raise WeightsError."""
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
            failures.append((url, str(exc)))
            continue
        problem = _promote(part, destination, file)
        if problem is None:
            return
        failures.append(
            (url, f"the downloaded {file.target} is wrong ({problem}); the partial file was deleted")
        )
    if len(failures) == 1:
        url, reason = failures[0]
        raise WeightsError(f"cannot download {url}: {reason}")
    details = "; ".join(f"{url}: {reason}" for url, reason in failures)
    raise WeightsError(f"cannot download {file.target} from any of its {len(failures)} URLs: {details}")


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
            raise _TransferError(f"TLS failure: {_describe(reason)}", retryable=False) from exc
        unreachable = isinstance(reason, (socket.gaierror, ConnectionRefusedError))
        raise _TransferError(f"{_describe(reason)} (no network?)", retryable=not unreachable) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _TransferError(_describe(exc), retryable=True) from exc


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
            piece = response.read(_READ_CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise _TransferError(
                f"the connection failed after {offset_bytes} of {size} bytes: {_describe(exc)}",
                retryable=True,
            ) from exc
        if not piece:
            return
        offset_bytes += len(piece)
        yield piece


def _describe(reason: object) -> str:
    """A short reason text: an OSError's strerror without the errno prefix, else str()."""
    if isinstance(reason, TimeoutError):
        return "timed out"
    text = getattr(reason, "strerror", None) or str(reason)
    return text or type(reason).__name__


def build_commands(files: Sequence[WeightFile], weights_dir: str = "/weights") -> list[str]:
    """Self-contained shell lines for cog.yaml's `build.run`, one per file.

    Each line downloads with curl (or copies from the installed package) into `<weights_dir>/<target>`
    and checks the sha256 with `sha256sum --check`, so a mismatch fails the image build.
    """
    root = weights_dir.rstrip("/")
    return [_build_command(file, f"{root}/{file.target}") for file in files]


def _build_command(file: WeightFile, destination: str) -> str:
    """The shell line that puts one file at `destination` and checks it."""
    quoted = shlex.quote(destination)
    if file.package_file is not None:
        package, _, inner = file.package_file.partition("/")
        locate = f"python -c 'import {package}, os; print(os.path.dirname({package}.__file__))'"
        obtain = f'cp "$({locate})"/{shlex.quote(inner)} {quoted}'
    else:
        downloads = [f"curl {_CURL_OPTIONS} --output {quoted} {shlex.quote(url)}" for url in file.urls]
        obtain = downloads[0] if len(downloads) == 1 else "{ " + " || ".join(downloads) + "; }"
    check = f"echo {shlex.quote(f'{file.sha256}  {destination}')} | sha256sum --check --strict -"
    folder = shlex.quote(str(Path(destination).parent))
    return f"mkdir -p {folder} && {obtain} && {check}"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m separation.weights`."""
    parser = argparse.ArgumentParser(
        prog="python -m separation.weights", description="Fetch and verify the model weight files."
    )
    parser.add_argument("--manifest", type=Path, default=MANIFEST_PATH, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download / copy the weight files and check them")
    verify_parser = commands.add_parser("verify", help="report missing or corrupt weight files")
    for sub in (fetch_parser, verify_parser):
        sub.add_argument(
            "--dir",
            type=Path,
            default=None,
            help=f"weights folder (default: ${WEIGHTS_DIR_ENV} or <repo>/weights)",
        )
        sub.add_argument("--only", nargs="+", metavar="MODEL", help="only the files of these models")
    verify_parser.add_argument("--quick", action="store_true", help="check presence and size only, no sha256")
    steps_parser = commands.add_parser("cog-build-steps", help="print the build.run list for cog.yaml")
    steps_parser.add_argument("--dir", default="/weights", help="weights folder inside the image")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; failures print one `error: ...` line per problem on stderr and return 1."""
    args = _parse_args(argv)
    try:
        files = load_manifest(args.manifest)
        if args.command == "cog-build-steps":
            print("  run:")
            for line in build_commands(files, args.dir):
                print(f"    - {json.dumps(line)}")
            return 0
        if args.only:
            files = select_models(files, args.only)
        weights_dir = args.dir or default_weights_dir()
        if args.command == "fetch":
            fetch(weights_dir, files)
            print(f"{len(files)} weight files OK in {weights_dir}", file=sys.stderr)
            return 0
        problems = verify(weights_dir, files, full_hash=not args.quick)
    except (WeightsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{len(files)} weight files OK in {weights_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
