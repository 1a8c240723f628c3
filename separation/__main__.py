"""Command line: separate local files with the same pipeline and file names as the Cog model.

    python -m separation song.mp3 [more.flac ...] [--stems all_4] [--format flac] [--out DIR]
                         [--device cpu|cuda] [--weights DIR]

Each input gets a folder named after its file name, extension included (`separated/song.mp3/`, so
`song.mp3` and `song.wav` never share one), holding `<stem>.<ext>`, followed on stdout by a table of each
stem's peak, loudness, audible share and presence; `--json` also writes that report to `stems.json` in the
same folder. A re-run replaces the stems and the report this command wrote there before. The settings are
checked before the models load; the models load once for all inputs. Errors print one line and the exit
code is 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .audio.stem_file import stem_file_name
from .errors import SeparationError, SettingsError
from .pipeline import Separator
from .plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan
from .progress import TqdmReporter
from .request import (
    BATCH_SIZE_RANGE,
    CHUNK_SECONDS_RANGE,
    MAX_DURATION_SECONDS_RANGE,
    MP3_BITRATES,
    OUTPUT_FORMATS,
    OUTPUT_SAMPLE_RATES,
    OVERLAP_SECONDS_RANGE,
    PRECISIONS,
    WAV_BIT_DEPTHS,
    OutputSettings,
    SeparationSettings,
    parse_stem_list,
)
from .stem_writer import WrittenStem
from .weights.manifest import default_weights_dir

REPORT_FILE_NAME = "stems.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; every default and choice comes from `separation.settings`."""
    settings, output = SeparationSettings(), OutputSettings()
    (low_chunk, high_chunk), (low_overlap, high_overlap) = CHUNK_SECONDS_RANGE, OVERLAP_SECONDS_RANGE
    low_batch, high_batch = BATCH_SIZE_RANGE
    parser = argparse.ArgumentParser(
        prog="python -m separation", description="Separate songs into stems (BS-RoFormer + Demucs v4)."
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio or video files")
    plan = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)
    modes = "; ".join(f"{mode}: {', '.join(plan.stems_of(mode))}" for mode in plan.modes)
    parser.add_argument(
        "--stems", default=settings.stems, help=f"which stems, one of: {modes} (default: %(default)s)"
    )
    parser.add_argument(
        "--extra-stems",
        default="",
        metavar="NAMES",
        help="comma-separated instruments to add after the mode's stems, any of: "
        + ", ".join(plan.extra_stem_names),
    )
    parser.add_argument("--format", default=output.format, choices=OUTPUT_FORMATS)
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
        "--chunk-size",
        type=float,
        default=settings.chunk_seconds,
        help=f"seconds per BS-RoFormer vocals chunk, {low_chunk:g} to {high_chunk:g} (default: %(default)s)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=settings.overlap_seconds,
        help=f"seconds of overlap between chunks, {low_overlap:g} to {high_overlap:g}, below the chunk "
        "size (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=settings.batch_size,
        help=f"chunks or segments per forward pass, {low_batch} to {high_batch} (default: each model's "
        "configured batch size)",
    )
    parser.add_argument("--precision", default=settings.precision, choices=PRECISIONS)
    parser.add_argument("--sample-rate", type=int, default=output.sample_rate, choices=OUTPUT_SAMPLE_RATES)
    parser.add_argument("--wav-bit-depth", default=output.wav_bit_depth, choices=WAV_BIT_DEPTHS)
    parser.add_argument("--mp3-bitrate", type=int, default=output.mp3_bitrate, choices=MP3_BITRATES)
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=settings.max_duration_seconds / 60,
        help=f"reject longer inputs; at most {MAX_DURATION_SECONDS_RANGE[1] / 60:g} (default: %(default)g)",
    )
    parser.add_argument(
        "--json", action="store_true", help=f"also write each input's stem report to {REPORT_FILE_NAME}"
    )
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> SeparationSettings:
    """The request the command line describes; SettingsError for an impossible one."""
    return SeparationSettings(
        stems=args.stems,
        extra_stems=parse_stem_list(args.extra_stems),
        chunk_seconds=args.chunk_size,
        overlap_seconds=args.overlap,
        batch_size=args.batch_size,
        precision=args.precision,
        max_duration_seconds=args.max_minutes * 60,
        output=OutputSettings(
            format=args.format,
            sample_rate=args.sample_rate,
            wav_bit_depth=args.wav_bit_depth,
            mp3_bitrate=args.mp3_bitrate,
        ),
    )


def report_table(stems: list[WrittenStem]) -> str:
    """The stems' figures as an aligned text table, one row per stem."""
    rows = [("stem", "peak dBFS", "LUFS", "audible", "present")]
    for stem in stems:
        figures = stem.report
        rows.append(
            (
                stem.name,
                "-" if figures.peak_dbfs is None else f"{figures.peak_dbfs:+.1f}",
                "-" if figures.loudness_lufs is None else f"{figures.loudness_lufs:.1f}",
                f"{100 * figures.active_fraction:.0f} %",
                "yes" if figures.present else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def write_report(stems: list[WrittenStem], out_dir: Path) -> Path:
    """`stems.json` in out_dir: {stem: {file, peak_dbfs, loudness_lufs, active_fraction, present}}."""
    report = {stem.name: {"file": stem.path.name, **stem.report.as_dict()} for stem in stems}
    path = out_dir / REPORT_FILE_NAME
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


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
        settings = settings_from_args(args)
        out_dirs = output_folders(args.inputs, args.out)
        order = StemPlan.for_weights(weights_dir).resolve(settings).order  # before models load
        separator = Separator(weights_dir, args.device)
    except SeparationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    failures = 0
    for path, out_dir in zip(args.inputs, out_dirs, strict=True):
        remove_earlier_outputs(out_dir, separator.plan)
        try:
            stems = []
            for stem in separator.stems_as_written(path, out_dir, settings, TqdmReporter()):
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
