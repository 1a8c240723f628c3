"""The weights command line and the cog.yaml build lines.

    python -m separation.weights fetch [--dir DIR] [--only MODEL ...]   # download / copy + check
    python -m separation.weights verify [--dir DIR] [--quick]           # report missing or bad files
    python -m separation.weights list [--dir DIR]                       # models, files, sizes, terms
    python -m separation.weights cog-build-steps                        # the build.run list for cog.yaml

`fetch`, `verify` and `list` read the manifest that applies to the weights folder, as the command line
and the server do (`manifest_for`): the folder's own `weights.yaml` if it has one, else the project's
`configs/weights.yaml`. `cog-build-steps` reads the project's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .download import fetch
from ..errors import WeightsError
from .manifest import (
    MANIFEST_PATH,
    WEIGHTS_DIR_ENV,
    WeightFile,
    default_weights_dir,
    load_manifest,
    manifest_for,
    select_models,
    verify,
)

_CURL_OPTIONS = "--fail --location --silent --show-error --retry 5 --retry-delay 3 --retry-all-errors"


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


def describe(files: Sequence[WeightFile]) -> str:
    """Each model's files with their sizes and the terms their authors state, as indented text."""
    lines = []
    for model in dict.fromkeys(file.model for file in files):
        own = [file for file in files if file.model == model]
        count = f"{len(own)} file" + ("s" if len(own) > 1 else "")
        lines.append(f"{model}: {count}, {_size(sum(file.size for file in own))}")
        width = max(len(file.target) for file in own)
        lines += [f"  {file.target.ljust(width)}  {_size(file.size)}" for file in own]
        terms = {file.terms: [f.target for f in own if f.terms == file.terms] for file in own}
        for statement, targets in terms.items():
            which = "" if len(terms) == 1 else f" of {', '.join(targets)}"
            lines.append(f"  terms{which}: {statement}")
    return "\n".join(lines)


def _size(size: int) -> str:
    """Bytes as '149 B' or '639.3 MB' (10**6 bytes)."""
    return f"{size} B" if size < 100_000 else f"{size / 1e6:.1f} MB"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `python -m separation.weights`."""
    parser = argparse.ArgumentParser(
        prog="python -m separation.weights", description="Fetch and verify the model weight files."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download / copy the weight files and check them")
    verify_parser = commands.add_parser("verify", help="report missing or corrupt weight files")
    list_parser = commands.add_parser("list", help="each model's files, sizes and the terms of its weights")
    for sub in (fetch_parser, verify_parser, list_parser):
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
        if args.command == "cog-build-steps":
            print("  run:")
            for line in build_commands(load_manifest(MANIFEST_PATH), args.dir):
                print(f"    - {json.dumps(line)}")
            return 0
        weights_dir = args.dir or default_weights_dir()
        files = load_manifest(manifest_for(weights_dir))
        if args.only:
            files = select_models(files, args.only)
        if args.command == "list":
            print(describe(files))
            return 0
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

