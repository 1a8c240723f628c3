"""A complete weights folder of tiny random models in the real file formats.

It holds its own stems.yaml (the project's plan with the RoFormer config pointing at a tiny
geometry), so the real loading code serves it unchanged: `Separator(weights_dir=folder)`,
`python -m separation --weights folder`, or the Cog server with SEPARATION_WEIGHTS_DIR=folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from separation.pipeline import CONFIG_DIR, PLAN_FILE_NAME
from tests.tiny_demucs import write_tiny_demucs_weights
from tests.tiny_roformer import write_tiny_roformer


def write_tiny_weights(folder: Path) -> Path:
    """Write tiny BS-RoFormer and Demucs weights plus the plan into `folder`; return it."""
    plan = yaml.safe_load((CONFIG_DIR / PLAN_FILE_NAME).read_text())
    roformer = plan["models"]["bs_roformer_vocals"]
    config_path, _ = write_tiny_roformer(folder, roformer["checkpoint"])
    roformer["config"] = config_path.name
    write_tiny_demucs_weights(folder / plan["models"]["htdemucs_ft"]["folder"])
    (folder / PLAN_FILE_NAME).write_text(yaml.safe_dump(plan, sort_keys=False))
    return folder


if __name__ == "__main__":
    print(write_tiny_weights(Path(sys.argv[1])))
