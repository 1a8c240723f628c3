"""The weights command line and the cog.yaml build lines.

    python -m separation.weights fetch [--dir DIR] [--only MODEL ...]   # download / copy + check
    python -m separation.weights verify [--dir DIR] [--quick]           # report missing or bad files
    python -m separation.weights list [--dir DIR]                       # models, terms labels, files, sizes
    python -m separation.weights check-urls [--only MODEL ...]          # which download URLs still answer
    python -m separation.weights cog-build-steps                        # the build.run list for cog.yaml

`fetch`, `verify` and `list` read the manifest that applies to the weights folder, as the command line
and the server do (`manifest_for`): the folder's own `weights.yaml` if it has one, else the project's
`configs/weights.yaml`. `check-urls` and `cog-build-steps` read the project's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import WeightsError
from .download import fetch
from .manifest import (
    MANIFEST_PATH,
    WEIGHTS_DIR_ENV,
    WeightFile,
    default_weights_dir,
    load_manifest,
    manifest_for,
    model_terms,
    select_models,
    verify,
)
from .probe import check_urls, files_without_a_working_url

CURL_OPTIONS = "--fail --location --silent --show-error --retry 5 --retry-delay 3 --retry-all-errors"


def build_commands(
    files: Sequence[WeightFile], weights_dir: str = "/weights", *, curl_options: str = CURL_OPTIONS
) -> list[str]:
    """Self-contained POSIX shell lines for cog.yaml's `build.run`, one per file.

    A downloaded file's line tries its URLs in order: each into `<target>.part` (removed first, so nothing
    of an earlier try is appended to or checked), kept only when `sha256sum --check` passes, otherwise the
    next URL. A packaged file is copied from the installed package. Either way the line ends by checking the
    target's sha256, so the image build fails when no URL gave the right bytes.
    """
    root = weights_dir.rstrip("/")
    return [_build_command(file, f"{root}/{file.target}", curl_options) for file in files]


def _build_command(file: WeightFile, destination: str, curl_options: str) -> str:
    """The shell line that puts one file at `destination` and checks it."""
    quoted = shlex.quote(destination)
    folder = shlex.quote(str(Path(destination).parent))
    check = f"echo {shlex.quote(f'{file.sha256}  {destination}')} | sha256sum --check --strict -"
    if file.package_file is not None:
        package, _, inner = file.package_file.partition("/")
        locate = f"python -c 'import {package}, os; print(os.path.dirname({package}.__file__))'"
        return f'mkdir -p {folder} && cp "$({locate})"/{shlex.quote(inner)} {quoted} && {check}'
    part = shlex.quote(f"{destination}.part")
    check_part = f"echo {shlex.quote(f'{file.sha256}  {destination}.part')} | sha256sum --check --strict -"
    urls = " ".join(shlex.quote(url) for url in file.urls)
    skipped = shlex.quote(f"weights: skipping this URL for {file.target}:")
    loop = (
        f"for url in {urls}; do rm -f {part}; "
        f'if curl {curl_options} --output {part} "$url" && {check_part}; then mv {part} {quoted}; break; fi; '
        f'echo {skipped} "$url" >&2; done; rm -f {part}'
    )
    if len(file.urls) == 1:
        failed = f"weights: the one URL of {file.target} did not give its sha256"
    else:
        failed = f"weights: none of the {len(file.urls)} URLs of {file.target} gave its sha256"
    none = shlex.quote(failed)
    verdict = f"{{ {check} || {{ echo {none} >&2; false; }}; }}"
    return f"mkdir -p {folder} && rm -f {quoted} && {{ {loop}; }} && {verdict}"


def describe(files: Sequence[WeightFile], terms: Mapping[str, str]) -> str:
    """Each model with its terms label, then its files (size, number of hosts) and the terms its authors
    state, as indented text."""
    lines = []
    for model in dict.fromkeys(file.model for file in files):
        own = [file for file in files if file.model == model]
        count = f"{len(own)} file" + ("s" if len(own) > 1 else "")
        lines.append(f"{model}: {count}, {_size(sum(file.size for file in own))}, terms {terms[model]}")
        width = max(len(file.target) for file in own)
        lines += [f"  {file.target.ljust(width)}  {_size(file.size):>9}  {_hosts(file)}" for file in own]
        statements = {file.terms: [f.target for f in own if f.terms == file.terms] for file in own}
        for statement, targets in statements.items():
            which = "" if len(statements) == 1 else f" of {', '.join(targets)}"
            lines.append(f"  terms{which}: {statement}")
    return "\n".join(lines)


def _hosts(file: WeightFile) -> str:
    """'3 hosts', '1 host (single: <reason>)' or 'from the demucs package'."""
    if file.package_file is not None:
        return f"from the {file.package_file.partition('/')[0]} package"
    if len(file.urls) > 1:
        return f"{len(file.urls)} hosts"
    return f"1 host (single: {file.single_host})"


def _size(size: int) -> str:
    """Bytes as '149 B' or '639.3 MB' (10**6 bytes)."""
    return f"{size} B" if size < 100_000 else f"{size / 1e6:.1f} MB"


def report_urls(files: Sequence[WeightFile], *, timeout_seconds: float = 20.0) -> int:
    """Print one line per URL (stdout) and one error per file with no working URL (stderr); 1 if any."""
    checks = check_urls(files, timeout_seconds=timeout_seconds)
    for check in checks:
        verdict = "ok  " if check.ok else "FAIL"
        role = "  [unconfirmed mirror, never downloaded from]" if check.candidate else ""
        print(f"{verdict}  {check.file.target}  {check.url}  {check.answer}{role}")
    stranded = files_without_a_working_url(files, checks)
    for file in stranded:
        which = "its one URL does not" if len(file.urls) == 1 else f"none of its {len(file.urls)} URLs"
        print(f"error: {file.target}: {which} answer as the manifest expects", file=sys.stderr)
    if stranded:
        return 1
    working = sum(check.ok for check in checks if not check.candidate)
    total = sum(not check.candidate for check in checks)
    downloaded = sum(bool(file.urls) for file in files)
    each = "the one downloaded file" if downloaded == 1 else f"each of the {downloaded} downloaded files"
    print(f"{working} of {total} URLs answer; {each} has one", file=sys.stderr)
    return 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m separation.weights`."""
    parser = argparse.ArgumentParser(
        prog="python -m separation.weights", description="Fetch and verify the model weight files."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download / copy the weight files and check them")
    verify_parser = commands.add_parser("verify", help="report missing or corrupt weight files")
    list_parser = commands.add_parser("list", help="each model's terms label, files, sizes and hosts")
    urls_parser = commands.add_parser("check-urls", help="ask every download URL whether it still answers")
    for sub in (fetch_parser, verify_parser, list_parser):
        sub.add_argument(
            "--dir",
            type=Path,
            default=None,
            help=f"weights folder (default: ${WEIGHTS_DIR_ENV} or <repo>/weights)",
        )
    for sub in (fetch_parser, verify_parser, list_parser, urls_parser):
        sub.add_argument("--only", nargs="+", metavar="MODEL", help="only the files of these models")
    verify_parser.add_argument("--quick", action="store_true", help="check presence and size only, no sha256")
    urls_parser.add_argument("--manifest", type=Path, default=MANIFEST_PATH, help="manifest to check")
    urls_parser.add_argument("--timeout", type=float, default=20.0, help="seconds per socket wait")
    steps_parser = commands.add_parser("cog-build-steps", help="print the build.run list for cog.yaml")
    steps_parser.add_argument("--dir", default="/weights", help="weights folder inside the image")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; failures print one `error: ...` line per problem on stderr and return 1."""
    args = _parse_args(argv)
    try:
        if args.command == "cog-build-steps":
            print("  run:")
            for line in build_commands(load_manifest(MANIFEST_PATH), args.dir):
                print(f"    - {json.dumps(line)}")
            return 0
        manifest = (
            args.manifest if args.command == "check-urls" else manifest_for(args.dir or default_weights_dir())
        )
        files = load_manifest(manifest)
        if args.only:
            files = select_models(files, args.only)
        if args.command == "check-urls":
            return report_urls(files, timeout_seconds=args.timeout)
        weights_dir = args.dir or default_weights_dir()
        if args.command == "list":
            print(describe(files, model_terms(manifest)))
            return 0
        if args.command == "fetch":
            fetch(weights_dir, files)
            print(f"{len(files)} weight files OK in {weights_dir}", file=sys.stderr)
            return 0
        problems = verify(weights_dir, files, full_hash=not args.quick)
    except (WeightsError, OSError) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{len(files)} weight files OK in {weights_dir}", file=sys.stderr)
    return 0
