"""Command line: separate local files with the same pipeline, inputs and file names as the Cog model.

    python -m separation song.mp3 [more.flac ...] [--stems all_4] [--output-format flac] [--out DIR]
                         [--device cpu|cuda] [--weights DIR] [--json]

Every option of a request is the Cog input of the same name (`--chunk-size` is `chunk_size`), declared once
in `separation.request`; the command line adds `--batch-size`, `--precision` and `--max-minutes`. Each input
gets a folder named after its file name, extension included (`separated/song.mp3/`, so `song.mp3` and
`song.wav` never share one), holding `<stem>.<ext>`, followed on stdout by a table of each stem's peak,
loudness, audible share, presence, model and terms; `--json` also writes that report to `stems.json` in the
same folder (what the Cog model returns as its last file). A re-run replaces the stems and the report this
command wrote there before. The request is checked before the models load; the models load once for all
inputs. Errors print one line and the exit code is 1 (2 for arguments argparse cannot read).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .audio.encoders import OUTPUT_FORMATS
from .audio.stem_file import stem_file_name
from .errors import SeparationError, SettingsError
from .pipeline import Separator
from .plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan
from .progress import TqdmReporter
from .request import InputSpec, Request, declared_inputs
from .stem_writer import REPORT_FILE_NAME, WrittenStem, write_report
from .weights.manifest import default_weights_dir

OPTION_ALIASES = {"output_format": ["--format"]}  # names earlier versions of the command line used


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the request's inputs as options (their defaults, choices and ranges in the help),
    and where to read and write."""
    parser = argparse.ArgumentParser(
        prog="python -m separation", description="Separate songs into stems (BS-RoFormer + Demucs v4)."
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio or video files")
    for spec in StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME).declared_inputs()[1:]:
        option = "--" + spec.name.replace("_", "-")
        parser.add_argument(
            option,
            *OPTION_ALIASES.get(spec.name, []),
            dest=spec.name,
            type=spec.type,
            default=spec.default,
            metavar=spec.name.upper(),
            help=_help(spec),
        )
    parser.add_argument(
        "--out", type=Path, default=Path("separated"), help="output folder (default: separated)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="weights folder (default: $SEPARATION_WEIGHTS_DIR or ./weights)",
    )
    parser.add_argument(
        "--json", action="store_true", help=f"also write each input's stem report to {REPORT_FILE_NAME}"
    )
    return parser.parse_args(argv)


def _help(spec: InputSpec) -> str:
    """An option's help: its description, its choices or range, its default (argparse's % escaped)."""
    text = spec.description
    if spec.choices:
        text += f" One of: {', '.join(map(str, spec.choices))}."
    if spec.bounds is not None:
        text += f" From {spec.bounds[0]:g} to {spec.bounds[1]:g}{spec.unit}."
    if spec.default not in (None, ""):
        text += f" Default: {spec.default}."
    return text.replace("%", "%%")


def request_from_args(args: argparse.Namespace) -> Request:
    """The request the command line describes; SettingsError for an impossible one."""
    return Request(**{spec.name: getattr(args, spec.name) for spec in declared_inputs()[1:]})


def report_table(stems: list[WrittenStem]) -> str:
    """The stems' figures and origins as an aligned text table, one row per stem."""
    rows = [("stem", "peak dBFS", "LUFS", "audible", "present", "model", "terms")]
    for stem in stems:
        figures = stem.figures
        rows.append(
            (
                stem.name,
                "-" if figures.peak_dbfs is None else f"{figures.peak_dbfs:+.1f}",
                "-" if figures.loudness_lufs is None else f"{figures.loudness_lufs:.1f}",
                f"{100 * figures.active_fraction:.0f} %",
                "yes" if figures.present else "no",
                stem.origin.model,
                stem.origin.terms,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def output_folders(inputs: list[Path], out: Path) -> list[Path]:
    """`<out>/<file name>` for each input; SettingsError when two inputs have the same file name."""
    names = [path.name for path in inputs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise SettingsError(
            f"several inputs are named {', '.join(map(repr, repeated))}; each input's stems go to a folder "
            f"named after its file name under {out}, so separate them in separate runs or rename them"
        )
    return [out / name for name in names]


def remove_earlier_outputs(out_dir: Path, plan: StemPlan) -> None:
    """Remove what an earlier run wrote into `out_dir`: every `<stem>.<ext>` the plan can write, and the
    report. Other files stay."""
    stems = {*plan.output_order, *plan.extra_stem_names}
    names = [stem_file_name(stem, file_format) for stem in stems for file_format in OUTPUT_FORMATS]
    for name in [*names, REPORT_FILE_NAME]:
        (out_dir / name).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    weights_dir = args.weights or default_weights_dir()
    try:
        request = request_from_args(args)
        out_dirs = output_folders(args.inputs, args.out)
        order = StemPlan.for_weights(weights_dir).resolve(request).order  # before models load
        separator = Separator(weights_dir, args.device)
    except SeparationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    failures = 0
    for path, out_dir in zip(args.inputs, out_dirs, strict=True):
        remove_earlier_outputs(out_dir, separator.plan)
        try:
            stems = []
            for stem in separator.stems_as_written(path, out_dir, request, TqdmReporter()):
                print(f"{path} -> {stem.path}", flush=True)
                stems.append(stem)
        except SeparationError as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            failures += 1
            continue
        stems.sort(key=lambda stem: order.index(stem.name))
        print(report_table(stems))
        if args.json:
            print(f"report: {write_report(stems, out_dir)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
