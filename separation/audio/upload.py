"""Uploads as the Cog runtime hands them over.

The runtime downloads every URL input (http, https or data) into its temporary folder as
`tmp<8 random characters><the name the user gave it>`, e.g. `tmpc_c70ahhsong.wav`. `check_upload` accepts
only such files; `shown_name` gives back the user's name, for every message that names the input.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ..errors import AudioError

RUNTIME_PREFIX = re.compile(r"tmp[a-z0-9_]{8}")  # Python's tempfile: "tmp" and 8 of [a-z0-9_]


def check_upload(path: Path) -> Path:
    """`path`, resolved, if it is a file the runtime downloaded into its temporary folder; AudioError
    otherwise (symbolic links are followed first, so none can point elsewhere)."""
    resolved = path.resolve()
    if resolved.parent != Path(tempfile.gettempdir()).resolve() or not resolved.name.startswith("tmp"):
        raise AudioError(
            "audio must be an upload or a URL (http, https or data); paths on the server are not read"
        )
    return resolved


def shown_name(path: Path) -> str:
    """The file name as its sender named it: without the runtime's `tmp<8 characters>` prefix for a file
    in the temporary folder (`tmpc_c70ahhsong.wav` -> `song.wav`), else the file name itself."""
    path = Path(path)
    prefix = RUNTIME_PREFIX.match(path.name)
    in_runtime_folder = path.parent.resolve() == Path(tempfile.gettempdir()).resolve()
    if prefix is None or not in_runtime_folder or prefix.end() == len(path.name):
        return path.name
    return path.name[prefix.end() :]
