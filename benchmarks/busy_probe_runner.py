"""A Cog runner that does no work: it yields one tiny file. `benchmarks.busy_window` serves it with the same
runtime as the real model, to tell the runtime's own BUSY window from anything the model adds."""

import tempfile
from collections.abc import Iterator
from pathlib import Path as PlainPath

from cog import BaseRunner, Path


class Runner(BaseRunner):
    def run(self, audio: Path, stems: str = "vocals_instrumental") -> Iterator[Path]:
        """Yield one small file named like a stem, at once."""
        out = PlainPath(tempfile.mkdtemp(prefix="probe-")) / "vocals.txt"
        out.write_text(f"{audio.stat().st_size} bytes\n")
        yield Path(out)
