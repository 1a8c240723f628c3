"""Cog runner: the inputs as Cog reads them, handed to the separation package.

Every input is declared once, in `separation.request` (name, type, default, choices or range, longest
text, description); the modes and the Mega-53 names come from the stem plan. Cog writes the model's schema
from this file's source without running it, so the signature states those values as literals, and
tests/test_request.py fails, naming the difference, whenever they disagree with the declaration.
"""

from collections.abc import Iterator

from cog import BaseRunner, Input, Path

from separation.request import Request
from separation.serving import PredictionService


class Runner(BaseRunner):
    def setup(self) -> None:
        """Check every weight file, load the vocals BS-RoFormer and htdemucs_ft onto the GPU (CPU without
        one); htdemucs_6s and Mega-53 load on first use."""
        self.service = PredictionService()

    def run(
        self,
        audio: Path = Input(
            description=(
                "Song to separate: any common audio or video file, or a URL to one. The weights are their"
                " authors', on their terms (Demucs: research only): README, 'Weights and their terms'."
            ),
        ),
        stems: str = Input(
            default="vocals_instrumental",
            choices=["vocals_instrumental", "all_4", "all_6", "guitar", "guitar_only"],
            description=(
                "Which stems to return (each as <stem>.<ext>, identified by file name). "
                "vocals_instrumental: vocals, instrumental (bs_roformer_vocals); all_4: vocals, "
                "instrumental, drums, bass, other (bs_roformer_vocals + htdemucs_ft); all_6: vocals, "
                "instrumental, drums, bass, guitar, piano, other (bs_roformer_vocals + htdemucs_6s); "
                "guitar: vocals, instrumental, guitar, no_guitar (bs_roformer_vocals + "
                "bs_roformer_mega53); guitar_only: guitar, no_guitar (bs_roformer_mega53)."
            ),
        ),
        extra_stems: str = Input(
            default="",
            max_length=487,
            description=(
                "Comma-separated instruments (MVSep Mega-53) to add after the mode's stems, e.g. "
                "piano,kick. Any of: accordion, acoustic-guitar, back-vocal, banjo, bass, bassoon, bells,"
                " bowed_strings, brass, cello, clarinet, congas, digital-piano, dobro, double-bass, "
                "drums, electric-guitar, flute, french-horn, glockenspiel, guitar, harmonica, harp, "
                "harpsichord, hh, keys, kick, lead-vocal, mandolin, marimba, oboe, organ, percussion, "
                "piano, saxophone, sitar, snare, strings, synth, tambourine, timpani, toms, triangle, "
                "trombone, trumpet, tuba, ukulele, viola, violin, vocal, wind, wind-chimes, woodwind."
            ),
        ),
        output_format: str = Input(
            default="wav",
            choices=["wav", "mp3", "flac"],
            description="Output file format.",
        ),
        chunk_size: float = Input(
            default=8.0,
            ge=4.0,
            le=30.0,
            description="BS-RoFormer vocals chunk length in seconds (trained on 8).",
        ),
        overlap: float = Input(
            default=4.0,
            ge=1.0,
            le=8.0,
            description="Overlap between vocals chunks in seconds; below chunk_size.",
        ),
        sample_rate: int = Input(
            default=44100,
            choices=[44100, 48000],
            description="Output sample rate in Hz.",
        ),
        wav_bit_depth: str = Input(
            default="24",
            choices=["16", "24", "32-float"],
            description="WAV sample format (FLAC: 16 or 24 bit).",
        ),
        mp3_bitrate: int = Input(
            default=320,
            choices=[128, 192, 256, 320],
            description="MP3 bitrate in kb/s.",
        ),
    ) -> Iterator[Path]:
        """Stem files named <stem>.<ext>, each as soon as it is written, then stems.json (each stem's
        figures, model and terms). Identify stems by file name, not by position."""
        inputs = {name: value for name, value in locals().items() if name not in ("self", "audio")}
        for path in self.service.predict(audio, Request(**inputs), self.record_metric):
            yield Path(path)
