"""Cog runner: declares the inputs and hands them to the separation package.

Choices, defaults and ranges come from `separation.request` and the stem plan, where they are declared once.
"""

from collections.abc import Iterator

from cog import BaseRunner, Input, Path

from separation.plan import CONFIG_DIR, PLAN_FILE_NAME, StemPlan
from separation.request import (
    CHUNK_SECONDS_RANGE,
    MP3_BITRATES,
    OUTPUT_FORMATS,
    OUTPUT_SAMPLE_RATES,
    OVERLAP_SECONDS_RANGE,
    WAV_BIT_DEPTHS,
    OutputSettings,
    SeparationSettings,
)
from separation.serving import SeparationService

PLAN = StemPlan.load(CONFIG_DIR / PLAN_FILE_NAME)


class Runner(BaseRunner):
    def setup(self) -> None:
        """Check every weight file, load BS-RoFormer and htdemucs_ft onto the GPU (CPU without one);
        htdemucs_6s loads on first use."""
        self.service = SeparationService()

    def run(
        self,
        audio: Path = Input(
            description="Song to separate: any common audio or video file, or a URL to one. The weights are "
            "their authors', on their terms (Demucs: research only): README, 'Weights and their terms'."
        ),
        stems: str = Input(
            default=SeparationSettings.stems,
            choices=list(PLAN.modes),
            description="vocals_instrumental: vocals + instrumental. all_4: also drums, bass, other. "
            "all_6: also drums, bass, guitar, piano, other (Demucs). guitar: vocals, instrumental, guitar "
            "(MVSep Mega-53, the best guitar here) and no_guitar (the song without it, to play along).",
        ),
        extra_stems: str = Input(
            default="",
            description="Comma-separated instruments to add after the mode's stems, each as <name>.<ext> "
            "(MVSep Mega-53), e.g. piano,electric-guitar,kick. Any of: " + ", ".join(PLAN.extra_stem_names),
        ),
        output_format: str = Input(
            default=OutputSettings.format, choices=list(OUTPUT_FORMATS), description="Output file format."
        ),
        chunk_size: float = Input(
            default=SeparationSettings.chunk_seconds,
            ge=CHUNK_SECONDS_RANGE[0],
            le=CHUNK_SECONDS_RANGE[1],
            description="BS-RoFormer vocals chunk length in seconds (trained on 8).",
        ),
        overlap: float = Input(
            default=SeparationSettings.overlap_seconds,
            ge=OVERLAP_SECONDS_RANGE[0],
            le=OVERLAP_SECONDS_RANGE[1],
            description="Overlap between chunks in seconds; must be below chunk_size.",
        ),
        sample_rate: int = Input(
            default=OutputSettings.sample_rate,
            choices=list(OUTPUT_SAMPLE_RATES),
            description="Output sample rate in Hz.",
        ),
        wav_bit_depth: str = Input(
            default=OutputSettings.wav_bit_depth,
            choices=list(WAV_BIT_DEPTHS),
            description="WAV sample format (FLAC: 16 or 24 bit).",
        ),
        mp3_bitrate: int = Input(
            default=OutputSettings.mp3_bitrate, choices=list(MP3_BITRATES), description="MP3 bitrate in kb/s."
        ),
    ) -> Iterator[Path]:
        """Stem files named <stem>.<ext>, each as soon as it is written: vocals and instrumental first, then
        the mode's other stems, then the extra stems. Identify stems by file name, not by position."""
        for path in self.service.predict(
            audio,
            stems=stems,
            extra_stems=extra_stems,
            output_format=output_format,
            chunk_size=chunk_size,
            overlap=overlap,
            sample_rate=sample_rate,
            wav_bit_depth=wav_bit_depth,
            mp3_bitrate=mp3_bitrate,
            record_metric=self.record_metric,
        ):
            yield Path(path)
