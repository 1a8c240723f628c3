"""What a request may choose: every choice, default and range, declared once.

`predict.py` (the Cog inputs), the command line and the OpenAPI generator read them from here. Making a
`SeparationSettings` checks every one of them, so the service, the command line and the Python API refuse a
bad value the same way, before any model runs: one SettingsError line naming the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .audio.samplerate import SAMPLE_RATE
from .errors import SettingsError

OUTPUT_FORMATS = ("wav", "mp3", "flac")
WAV_BIT_DEPTHS = ("16", "24", "32-float")  # strings (they are Cog choices)
MP3_BITRATES = (128, 192, 256, 320)  # kbit/s
OUTPUT_SAMPLE_RATES = (44100, 48000)  # Hz
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: fp16 autocast on CUDA, fp32 on the CPU
# Ranges a request may set, (lowest, highest), both allowed.
CHUNK_SECONDS_RANGE = (4.0, 30.0)  # the vocals model's chunk length
OVERLAP_SECONDS_RANGE = (1.0, 8.0)  # overlap of neighbouring vocals chunks; also below the chunk
BATCH_SIZE_RANGE = (1, 16)  # chunks or segments per forward pass
MAX_DURATION_SECONDS_RANGE = (1.0, 7200.0)  # the longest audio a request accepts (2 hours)
DEFAULT_MAX_DURATION_SECONDS = 1800.0  # Replicate stops a prediction after 30 minutes anyway
# What one forward pass of a model may allocate (chunk x batch x the model's geometry, estimated in fp32):
# a T4's 16 GB less the loaded models, and what a 16 GB laptop can give the command line.
MAX_FORWARD_BYTES = 12 * 2**30


@dataclass(frozen=True)
class OutputSettings:
    """How stems are written. FLAC has no float samples, so wav_bit_depth "32-float" gives 24-bit FLAC."""

    format: str = "wav"
    sample_rate: int = 44100  # Hz
    wav_bit_depth: str = "24"
    mp3_bitrate: int = 320  # kbit/s, constant bit rate

    def __post_init__(self):
        allowed = {
            "format": OUTPUT_FORMATS,
            "sample_rate": OUTPUT_SAMPLE_RATES,
            "wav_bit_depth": WAV_BIT_DEPTHS,
            "mp3_bitrate": MP3_BITRATES,
        }
        for field_name, choices in allowed.items():
            value = getattr(self, field_name)
            if type(value) is not type(choices[0]) or value not in choices:
                raise SettingsError(
                    f"Output setting {field_name}={value!r} is not supported; choose one of: "
                    + ", ".join(str(choice) for choice in choices)
                )


@dataclass(frozen=True)
class SeparationSettings:
    """A request's separation choices. The chunk and overlap apply to the vocals model (the plan's
    `chunking: request` model); seconds are converted to samples at the models' rate."""

    stems: str = "vocals_instrumental"
    extra_stems: tuple[str, ...] = ()  # names from the plan's extras model, returned after the mode's stems
    chunk_seconds: float = 8.0  # the viperx training chunk
    overlap_seconds: float = 4.0
    batch_size: int | None = None  # chunks or segments per forward pass; None: each model's own default
    precision: str = "auto"
    max_duration_seconds: float = DEFAULT_MAX_DURATION_SECONDS
    output: OutputSettings = field(default_factory=OutputSettings)

    def __post_init__(self):
        """Check every value against its declared range or choices (the output's in OutputSettings).

        What needs the stem plan (the mode, the extra stems' names, and the memory of one forward pass:
        chunk x batch x model) is checked where the plan resolves the request, still before any model runs.
        """
        if not isinstance(self.stems, str):
            raise SettingsError(f"stems must be the name of a mode, got {self.stems!r}")
        if not all(isinstance(name, str) and name and name == name.strip() for name in self.extra_stems):
            raise SettingsError(f"extra_stems must be instrument names, got {list(self.extra_stems)!r}")
        check_range("chunk_size", self.chunk_seconds, CHUNK_SECONDS_RANGE, " s")
        check_range("overlap", self.overlap_seconds, OVERLAP_SECONDS_RANGE, " s")
        if self.overlap_seconds >= self.chunk_seconds:
            raise SettingsError(
                f"overlap ({self.overlap_seconds} s) must be below chunk_size ({self.chunk_seconds} s)"
            )
        check_chunking(self.chunk_samples, self.overlap_samples)
        if self.batch_size is not None:
            check_range("batch_size", self.batch_size, BATCH_SIZE_RANGE, "", integer=True)
        check_range("max duration", self.max_duration_seconds, MAX_DURATION_SECONDS_RANGE, " s")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.output, OutputSettings):
            raise SettingsError(f"output must be an OutputSettings, got {self.output!r}")

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_seconds * SAMPLE_RATE)

    @property
    def overlap_samples(self) -> int:
        return round(self.overlap_seconds * SAMPLE_RATE)


def check_range(
    name: str, value: object, bounds: tuple[float, float], unit: str, *, integer: bool = False
) -> None:
    """SettingsError unless `value` is a number (an integer with `integer`) within `bounds`, both ends
    allowed; the message names the value and the range, e.g. "chunk_size must be a number from 4 to 30 s,
    got 1000.0"."""
    low, high = bounds
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise SettingsError(f"{name} must be {kind} from {low:g} to {high:g}{unit}, got {value!r}")


def parse_stem_list(text: str) -> tuple[str, ...]:
    """'piano, kick,snare' -> ('piano', 'kick', 'snare'): comma-separated names with spaces around them
    ignored; "" (or only spaces) is no names. A blank item (" , ", "piano,,kick", "piano,") is a
    SettingsError; the plan checks the names."""
    if not text.strip():
        return ()
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise SettingsError(
            f"extra_stems {text!r} has an empty item; give names separated by single commas, e.g. piano,kick"
        )
    return names


def check_chunking(chunk_samples: int, overlap_samples: int) -> None:
    """Raise SettingsError unless 0 <= overlap < chunk."""
    if chunk_samples <= 0:
        raise SettingsError(f"chunk size must be positive, got {chunk_samples} samples")
    if not 0 <= overlap_samples < chunk_samples:
        raise SettingsError(
            f"overlap ({overlap_samples} samples) must be at least 0 and below the chunk size "
            f"({chunk_samples} samples)"
        )


def check_batch_size(batch_size: int) -> None:
    """Raise SettingsError unless batch_size is an integer >= 1 (chunks or segments per forward pass)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SettingsError(f"batch size must be an integer >= 1, got {batch_size!r}")
