"""Cog runner: declares the inputs and hands them to the separation package."""

from cog import BaseRunner, Input, Path

from separation.serving import SeparationService


class Runner(BaseRunner):
    def setup(self) -> None:
        """Load BS-RoFormer and htdemucs_ft onto the GPU (CPU without one); htdemucs_6s loads on first use."""
        self.service = SeparationService()

    def run(
        self,
        audio: Path = Input(description="Song to separate: any common audio or video file, or a URL to one."),
        stems: str = Input(
            default="vocals_instrumental",
            choices=["vocals_instrumental", "all_4", "all_6"],
            description="vocals_instrumental: vocals + instrumental. all_4: also drums, bass, other. "
            "all_6: also drums, bass, guitar, piano, other.",
        ),
        output_format: str = Input(
            default="wav", choices=["wav", "mp3", "flac"], description="Output file format."
        ),
        chunk_size: float = Input(
            default=8.0, ge=4.0, le=30.0, description="BS-RoFormer chunk length in seconds (trained on 8)."
        ),
        overlap: float = Input(
            default=4.0,
            ge=1.0,
            le=8.0,
            description="Overlap between chunks in seconds; must be below chunk_size.",
        ),
        sample_rate: int = Input(
            default=44100, choices=[44100, 48000], description="Output sample rate in Hz."
        ),
        wav_bit_depth: str = Input(
            default="24",
            choices=["16", "24", "32-float"],
            description="WAV sample format (FLAC: 16 or 24 bit).",
        ),
        mp3_bitrate: int = Input(
            default=320, choices=[128, 192, 256, 320], description="MP3 bitrate in kb/s."
        ),
    ) -> list[Path]:
        """Stem files named <stem>.<ext>: vocals, instrumental, then drums, bass, [guitar, piano,] other."""
        files = self.service.predict(
            audio,
            stems=stems,
            output_format=output_format,
            chunk_size=chunk_size,
            overlap=overlap,
            sample_rate=sample_rate,
            wav_bit_depth=wav_bit_depth,
            mp3_bitrate=mp3_bitrate,
            record_metric=self.record_metric,
        )
        return [Path(f) for f in files]
