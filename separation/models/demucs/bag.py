"""Demucs v4 bags (htdemucs_ft, htdemucs_6s) from a local folder: which files a bag needs, and loading it.

A bag folder holds `<name>.yaml` (the signatures of its models) and one `<sig>-<sha256 prefix>.th` per
model, which `demucs.pretrained.get_model(name, repo=bag_dir)` reads without touching the network.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from demucs.apply import BagOfModels
from demucs.pretrained import REMOTE_ROOT, get_model
from demucs.repo import check_checksum
from demucs.states import load_model

from ...errors import weights_error


def _read_signatures(yaml_path: Path) -> list[str]:
    """The `models` list (8-hex-digit signatures) of a Demucs bag yaml; WeightsError where unreadable."""
    try:
        bag = yaml.safe_load(yaml_path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise weights_error([f"the Demucs bag file {yaml_path} cannot be read ({exc})"]) from exc
    signatures = bag.get("models") if isinstance(bag, dict) else None
    if not isinstance(signatures, list) or not signatures or not all(isinstance(s, str) for s in signatures):
        raise weights_error(
            [f"the Demucs bag file {yaml_path} has no list of model signatures under `models`"]
        )
    return signatures


def _signature_files(bag_dir: Path, sig: str) -> list[Path]:
    """The `.th` files demucs' LocalRepo would take for `sig`: `<sig>.th` or `<sig>-<checksum>.th`."""
    return sorted(
        path
        for path in bag_dir.iterdir()
        if path.suffix == ".th" and (path.stem == sig or path.stem.rsplit("-", 1)[0] == sig)
    )


def bag_files(name: str, bag_dir: Path) -> list[Path]:
    """The files bag `name` loads from `bag_dir`: its yaml, then each signature's `.th` file(s)."""
    yaml_path = Path(bag_dir) / f"{name}.yaml"
    signatures = _read_signatures(yaml_path)
    return [yaml_path, *(path for sig in signatures for path in _signature_files(Path(bag_dir), sig))]


def bag_file_problems(name: str, bag_dir: Path) -> list[str]:
    """What bag `name` lacks in `bag_dir`, one line per problem; empty when every file is there.

    Checked: `<name>.yaml`, and for each signature it lists exactly one `<sig>-*.th` or `<sig>.th`. When the
    yaml itself is missing, the signatures come from demucs' packaged copy of it (same bytes) if there is one.
    Contents are not read here; `load_bag` checks them.
    """
    bag_dir = Path(bag_dir)
    if not bag_dir.is_dir():
        return [f"the Demucs weights folder {bag_dir} does not exist"]
    yaml_path = bag_dir / f"{name}.yaml"
    problems = []
    if yaml_path.is_file():
        signatures = _read_signatures(yaml_path)
    else:
        problems.append(f"missing {yaml_path.name}")
        packaged_yaml = REMOTE_ROOT / f"{name}.yaml"
        signatures = _read_signatures(packaged_yaml) if packaged_yaml.is_file() else []
    for sig in signatures:
        files = _signature_files(bag_dir, sig)
        if not files:
            problems.append(f"missing {sig}-*.th (or {sig}.th)")
        elif len(files) > 1:
            problems.append(
                f"several files for signature {sig} ({', '.join(f.name for f in files)}); keep one"
            )
    if problems:
        return [f"Demucs bag '{name}' is incomplete in {bag_dir}: {'; '.join(problems)}"]
    return []


def _find_unloadable_file(name: str, bag_dir: Path) -> tuple[Path, Exception] | None:
    """After a failed load: the first model file of the bag that fails its checksum or does not load."""
    for sig in _read_signatures(bag_dir / f"{name}.yaml"):
        (path,) = _signature_files(bag_dir, sig)
        try:
            if "-" in path.stem:
                check_checksum(path, path.stem.rsplit("-", 1)[1])
            load_model(path)
        except Exception as exc:
            return path, exc
    return None


def load_bag(name: str, bag_dir: Path, device: torch.device | str) -> BagOfModels:
    """Load bag `name` from the local folder `bag_dir` only, move it to `device` and set eval mode.

    A missing, corrupt or tampered file (a checksum that does not match the file name, an unpicklable file,
    a state that does not fit the model) raises WeightsError naming the file and the fetch command.
    """
    bag_dir = Path(bag_dir)
    problems = bag_file_problems(name, bag_dir)
    if problems:
        raise weights_error(problems)
    try:
        bag = get_model(name, repo=bag_dir)
    except Exception as exc:
        culprit = _find_unloadable_file(name, bag_dir)
        if culprit is None:
            raise weights_error([f"Demucs bag '{name}' in {bag_dir} cannot be loaded ({exc})"]) from exc
        path, cause = culprit
        raise weights_error([f"the Demucs weight file {path} is corrupt or was altered ({cause})"]) from exc
    return bag.to(device).eval()
