"""What every benchmark's `--smoke` shares: a quick run of the whole script, so that it cannot rot.

A smoke run takes the script's own code path end to end with the tiny random models of
`fixtures/tiny_weights.py`, about a second of audio and one repetition: its figures mean nothing, but a
changed API makes it fail (tests/test_benchmarks.py runs every script this way). Options given on the
command line still win over the smoke defaults, so `--smoke --seconds 3` is a longer smoke run. A smoke
run uses one CPU thread (and so do the processes it starts): tiny models on shared cores run several times
faster so than with threads that wait for each other.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# Only the standard library at module level: benchmarks.cold_start times the project's imports itself.

SMOKE_SECONDS = 1.0  # of audio, where a script generates some
SMOKE_HELP = "quick check of the script itself: tiny models, about a second of audio, one repetition"


def add_smoke_option(parser: argparse.ArgumentParser, help_text: str = SMOKE_HELP) -> None:
    parser.add_argument("--smoke", action="store_true", help=help_text)


def parse_with_smoke(
    parser: argparse.ArgumentParser, smoke_defaults: dict, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse `argv`; with --smoke, `smoke_defaults` replace the parser's defaults (what is given wins)."""
    known, _ = parser.parse_known_args(argv)
    if known.smoke:
        parser.set_defaults(**smoke_defaults)
    args = parser.parse_args(argv)
    if args.smoke:
        print("smoke run: tiny models and short inputs; the figures only show that the script works")
        one_cpu_thread()
    return args


def one_cpu_thread() -> None:
    """One intra-op thread here (where torch is imported already) and in every process started later."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def is_own_plan_folder(folder: Path | None) -> bool:
    """True for a weights folder with its own stem plan (e.g. the tiny folder), used as it is."""
    from separation.plan import PLAN_FILE_NAME

    return folder is not None and (folder / PLAN_FILE_NAME).is_file()


@contextmanager
def tiny_weights(folder: Path | None = None) -> Iterator[Path]:
    """`folder` when it already holds a weights folder with its own plan; else tiny random models written
    into `folder` (kept) or, without one, into a temporary folder removed afterwards."""
    from fixtures.tiny_weights import write_tiny_weights  # torch and demucs: only when needed

    if is_own_plan_folder(folder):
        yield folder
    elif folder is not None:
        yield write_tiny_weights(folder)
    else:
        with tempfile.TemporaryDirectory(prefix="tiny-weights-") as scratch:
            yield write_tiny_weights(Path(scratch))
