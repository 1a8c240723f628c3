"""What a request may choose: every choice, default and range, declared once.

`predict.py` (the Cog inputs), the command line and the OpenAPI generator read them from here; the
checks below are the only place their rules are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SettingsError
from .samplerate import SAMPLE_RATE

OUTPUT_FORMATS = ("wav", "mp3", "flac")
WAV_BIT_DEPTHS = ("16", "24", "32-float")  # strings (they are Cog choices)
MP3_BITRATES = (128, 192, 256, 320)  # kbit/s
OUTPUT_SAMPLE_RATES = (44100, 48000)  # Hz
PRECISIONS = ("auto", "fp32", "fp16", "bf16")  # auto: fp16 autocast on CUDA, fp32 on the CPU
CHUNK_SECONDS_RANGE = (4.0, 30.0)  # what a request may set for the vocals model's chunk
OVERLAP_SECONDS_RANGE = (1.0, 8.0)


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

    @property
    def extension(self) -> str:
        """File extension without the dot: "wav", "flac" or "mp3"."""
        return self.format


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
    max_duration_seconds: float = 1800.0
    output: OutputSettings = field(default_factory=OutputSettings)

    def __post_init__(self):
        if self.batch_size is not None:
            check_batch_size(self.batch_size)
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.overlap_seconds >= self.chunk_seconds:
            raise SettingsError(
                f"overlap ({self.overlap_seconds} s) must be below chunk_size ({self.chunk_seconds} s)"
            )
        check_chunking(self.chunk_samples, self.overlap_samples)

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_seconds * SAMPLE_RATE)

    @property
    def overlap_samples(self) -> int:
        return round(self.overlap_seconds * SAMPLE_RATE)


def parse_stem_list(text: str) -> tuple[str, ...]:
    """'piano, kick,snare' -> ('piano', 'kick', 'snare'): comma-separated names, spaces and empty items
    ignored; the plan checks the names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


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
