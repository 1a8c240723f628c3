"""A request: every input a user can set, declared once, and the one check of a request's values.

Each field of `Request` is an input, under the same name everywhere: the Cog model's `run()` arguments
(predict.py, checked against this declaration by tests/test_request.py), the command line's options
(`--chunk-size`), `.cog/openapi_schema.json` and the TypeScript client's input type (checked against the
schema by its tests). A field's declaration holds its default, description, choices or range and, for
text, its longest valid length. Two facts come from the stem plan: the modes a `stems` value may name and
the Mega-53 names `extra_stems` may list (`StemPlan.declared_inputs` fills them in).

Making a `Request` checks every value against its declaration, so the Cog model, the command line and the
Python API refuse a bad value the same way, before any model loads: one SettingsError line that names the
input and what is allowed and quotes at most QUOTED_CHARACTERS of what was sent. What needs the plan (the
mode, the extra stems' names, the memory of one forward pass) is checked when the plan resolves the
request, still before any model loads.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audio.encoders import MP3_BITRATES, OUTPUT_FORMATS, OUTPUT_SAMPLE_RATES, WAV_BIT_DEPTHS, OutputSettings
from .audio.samplerate import SAMPLE_RATE
from .errors import SettingsError, quoted
from .models.base import RunOptions
from .models.chunking import PRECISIONS, check_chunking

FROM_PLAN = "from the stem plan"  # choices filled in by `StemPlan.declared_inputs`
REQUIRED = dataclasses.MISSING  # an input without a default


@dataclass(frozen=True)
class InputSpec:
    """One input as every entry point declares it.

    bounds: (lowest, highest), both allowed; unit: what the bounds count (" s"); max_length: the longest
    text accepted; cog: False for the command line's own inputs (not in the Cog model's signature).
    """

    name: str
    type: type
    default: Any
    description: str
    choices: tuple = ()
    bounds: tuple[float, float] | None = None
    unit: str = ""
    max_length: int | None = None
    cog: bool = True


def _input(
    default: Any,
    description: str,
    *,
    choices: tuple | str = (),
    bounds: tuple[float, float] | None = None,
    unit: str = "",
    cog: bool = True,
) -> Any:
    """A Request field declared as an input (its InputSpec's facts in the field's metadata)."""
    facts = {"description": description, "choices": choices, "bounds": bounds, "unit": unit, "cog": cog}
    return field(default=default, metadata={"input": facts})


AUDIO = InputSpec(
    name="audio",
    type=Path,
    default=REQUIRED,
    description="Song to separate: any common audio or video file, or a URL to one. The weights are their "
    "authors', on their terms (Demucs: research only): README, 'Weights and their terms'.",
)


@dataclass(frozen=True)
class Request:
    """A request's choices; every field is an input of the same name (`stems` is the mode's name)."""

    stems: str = _input(
        "vocals_instrumental",
        "Which stems to return (each as <stem>.<ext>, identified by file name).",
        choices=FROM_PLAN,
    )
    extra_stems: str = _input(
        "",
        "Comma-separated instruments (MVSep Mega-53) to add after the mode's stems, e.g. piano,kick.",
        choices=FROM_PLAN,
    )
    output_format: str = _input("wav", "Output file format.", choices=OUTPUT_FORMATS)
    chunk_size: float = _input(
        8.0, "BS-RoFormer vocals chunk length in seconds (trained on 8).", bounds=(4.0, 30.0), unit=" s"
    )
    overlap: float = _input(
        4.0, "Overlap between vocals chunks in seconds; below chunk_size.", bounds=(1.0, 8.0), unit=" s"
    )
    sample_rate: int = _input(44100, "Output sample rate in Hz.", choices=OUTPUT_SAMPLE_RATES)
    wav_bit_depth: str = _input("24", "WAV sample format (FLAC: 16 or 24 bit).", choices=WAV_BIT_DEPTHS)
    mp3_bitrate: int = _input(320, "MP3 bitrate in kb/s.", choices=MP3_BITRATES)
    batch_size: int | None = _input(
        None,
        "Chunks or segments per forward pass (default: each model's own).",
        bounds=(1, 16),
        cog=False,
    )
    precision: str = _input(
        "auto", "Arithmetic: auto is fp16 autocast on CUDA, fp32 on the CPU.", choices=PRECISIONS, cog=False
    )
    max_minutes: float = _input(
        30.0, "Longest audio accepted, in minutes (Replicate stops a prediction after 30).",
        bounds=(0.1, 120.0), unit=" min", cog=False,
    )  # fmt: skip

    def __post_init__(self):
        """Check every value against its declaration, then the overlap against the chunk."""
        for spec in declared_inputs()[1:]:
            if spec.choices == FROM_PLAN:  # the type here; the plan checks the rest when it resolves
                spec = dataclasses.replace(spec, choices=())
            check_value(spec, getattr(self, spec.name))
        check_chunking(self.run_options.chunk_samples, self.run_options.overlap_samples)
        _stem_names(self.extra_stems)

    @property
    def extra_stem_names(self) -> tuple[str, ...]:
        """The extra stems' names, in the order given."""
        return _stem_names(self.extra_stems)

    @property
    def output(self) -> OutputSettings:
        """How the stems are written."""
        return OutputSettings(self.output_format, self.sample_rate, self.wav_bit_depth, self.mp3_bitrate)

    @property
    def run_options(self) -> RunOptions:
        """What the models run at: seconds as samples at the models' rate."""
        return RunOptions(
            chunk_samples=round(self.chunk_size * SAMPLE_RATE),
            overlap_samples=round(self.overlap * SAMPLE_RATE),
            batch_size=self.batch_size,
            precision=self.precision,
        )

    @property
    def max_duration_seconds(self) -> float:
        return self.max_minutes * 60


def _stem_names(text: str) -> tuple[str, ...]:
    """'piano, kick,snare' -> ('piano', 'kick', 'snare'); "" (or only spaces) is none. A blank item
    (" , ", "piano,,kick", "piano,") is a SettingsError; the plan checks the names."""
    if not text.strip():
        return ()
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise SettingsError(
            f"extra_stems {quoted(text)} has an empty item; give names separated by single commas, e.g. "
            "piano,kick"
        )
    return names


def declared_inputs() -> tuple[InputSpec, ...]:
    """The audio, then every Request field, as InputSpecs in declaration order; what the stem plan decides
    (FROM_PLAN) is left open here and filled in by `StemPlan.declared_inputs`."""
    specs = [AUDIO]
    hints = typing.get_type_hints(Request)
    for request_field in dataclasses.fields(Request):
        kind = hints[request_field.name]  # `int | None`: int
        kind = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)
        specs.append(
            InputSpec(request_field.name, kind, request_field.default, **request_field.metadata["input"])
        )
    return tuple(specs)


def check_value(spec: InputSpec, value: object) -> None:
    """SettingsError unless `value` has the input's type and lies within its choices, range and length."""
    if value is None and spec.default is None:
        return
    if spec.type is float:
        right_type = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        right_type = type(value) is spec.type
    if spec.choices and (not right_type or value not in spec.choices):
        shown = ", ".join(str(choice) for choice in spec.choices)
        raise SettingsError(f"{spec.name} must be one of {shown}; got {quoted(value)}")
    if spec.bounds is not None:
        low, high = spec.bounds
        if not right_type or not low <= value <= high or (spec.type is float and math.isnan(value)):
            kind = "an integer" if spec.type is int else "a number"
            raise SettingsError(
                f"{spec.name} must be {kind} from {low:g} to {high:g}{spec.unit}, got {quoted(value)}"
            )
    if not right_type:
        raise SettingsError(f"{spec.name} must be {spec.type.__name__}, got {quoted(value)}")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise SettingsError(
            f"{spec.name} is {len(value)} characters long; the longest valid value has {spec.max_length}: "
            f"{quoted(value)}"
        )
