"""The weights manifest (`configs/weights.yaml`): every file the models load, with its size, sha256, where
it comes from (download URLs, or a file shipped inside an installed Python package) and the terms its
authors state, and checks of a weights folder against it. A weights folder with its own `weights.yaml` (and
`stems.yaml`) uses those instead of the project's (`own_or_project`)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import WeightsError

REPO_ROOT = Path(__file__).resolve().parents[2]  # the one place the package names the repository
CONFIG_DIR = REPO_ROOT / "configs"
MANIFEST_FILE_NAME = "weights.yaml"
MANIFEST_PATH = CONFIG_DIR / MANIFEST_FILE_NAME
WEIGHTS_DIR_ENV = "SEPARATION_WEIGHTS_DIR"
READ_CHUNK_BYTES = 1 << 20

_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_MANIFEST_KEYS = frozenset({"target", "model", "size", "sha256", "urls", "package_file", "source", "terms"})
_REQUIRED_KEYS = frozenset({"target", "model", "size", "sha256", "source", "terms"})


@dataclass(frozen=True)
class WeightFile:
    """One file of the manifest.

    `target` is relative to the weights folder (e.g. `demucs/5c90dfd2-34c22ccb.th`); `size` is in bytes.
    Exactly one of `urls` (tried in order) and `package_file` (`<package>/<path inside it>`) is set.
    `source` says who publishes the file; `terms` what its authors state about its use, with where they
    say it.
    """

    target: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    package_file: str | None
    model: str
    source: str
    terms: str

    def __post_init__(self) -> None:
        where = f"weights manifest entry {self.target!r}"
        target = Path(self.target)
        if not self.target or target.is_absolute() or ".." in target.parts:
            raise WeightsError(f"{where}: target must be a relative path inside the weights folder")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise WeightsError(f"{where}: size must be a positive number of bytes, got {self.size!r}")
        if not isinstance(self.sha256, str) or not _SHA256_PATTERN.fullmatch(self.sha256):
            raise WeightsError(f"{where}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if bool(self.urls) == (self.package_file is not None):
            raise WeightsError(f"{where}: give either urls or package_file, not both or neither")
        for url in self.urls:
            if not url.startswith(("https://", "http://")):
                raise WeightsError(f"{where}: not an http(s) URL: {url!r}")
        if self.package_file is not None:
            package, _, inner = self.package_file.partition("/")
            if not package.isidentifier() or not inner:
                raise WeightsError(
                    f"{where}: package_file must read '<package>/<path>', got {self.package_file!r}"
                )
        if not self.model:
            raise WeightsError(f"{where}: model must name the model that uses the file")
        if not self.terms.strip():
            raise WeightsError(f"{where}: terms must say what the weights' authors state about their use")

    @property
    def name(self) -> str:
        """The file name without folders."""
        return Path(self.target).name


def load_manifest(path: Path = MANIFEST_PATH) -> list[WeightFile]:
    """Read and check the weights manifest (a YAML file with a `files:` list)."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise WeightsError(f"cannot read the weights manifest {path}: {exc}") from exc
    entries = document.get("files") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise WeightsError(f"weights manifest {path}: expected a non-empty 'files:' list")
    files = [_weight_file(entry, path) for entry in entries]
    targets = [file.target for file in files]
    duplicates = sorted({target for target in targets if targets.count(target) > 1})
    if duplicates:
        raise WeightsError(f"weights manifest {path}: duplicate targets {duplicates}")
    return files


def _weight_file(entry: object, manifest: Path) -> WeightFile:
    """Turn one manifest mapping into a WeightFile, naming the entry in any error."""
    if not isinstance(entry, dict):
        raise WeightsError(f"weights manifest {manifest}: each entry must be a mapping, got {entry!r}")
    label = f"weights manifest {manifest}, entry {entry.get('target')!r}"
    unknown = sorted(set(entry) - _MANIFEST_KEYS)
    if unknown:
        raise WeightsError(f"{label}: unknown keys {unknown}")
    missing = sorted(_REQUIRED_KEYS - set(entry))
    if missing:
        raise WeightsError(f"{label}: missing keys {missing}")
    urls = entry.get("urls") or ()
    if isinstance(urls, str) or not all(isinstance(url, str) for url in urls):
        raise WeightsError(f"{label}: urls must be a list of strings")
    return WeightFile(
        target=str(entry["target"]),
        size=entry["size"],
        sha256=entry["sha256"],
        urls=tuple(urls),
        package_file=entry.get("package_file"),
        model=str(entry["model"]),
        source=str(entry["source"]),
        terms=str(entry["terms"]),
    )


def model_terms(path: Path = MANIFEST_PATH) -> dict[str, str]:
    """{model: the short label of its weights' terms} from the manifest's `models:` section."""
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict):
        raise WeightsError(f"weights manifest {path}: expected a 'models:' mapping of terms labels")
    return {model: str(entry["terms"]) for model, entry in models.items()}


def select_models(files: Sequence[WeightFile], models: Sequence[str]) -> list[WeightFile]:
    """The files used by any of `models`; an unknown model name raises WeightsError."""
    known = sorted({file.model for file in files})
    unknown = [model for model in models if model not in known]
    if unknown:
        raise WeightsError(
            f"unknown model {', '.join(map(repr, unknown))}; the manifest has {', '.join(known)}"
        )
    return [file for file in files if file.model in models]


def own_or_project(weights_dir: Path, project_file: Path) -> Path:
    """The weights folder's own file of `project_file`'s name if it has one (a folder of other weights, e.g.
    the tests' tiny ones), else `project_file`: the one rule for `weights.yaml` and `stems.yaml`."""
    own = Path(weights_dir) / Path(project_file).name
    return own if own.is_file() else Path(project_file)


def manifest_for(weights_dir: Path) -> Path:
    """The manifest that applies to `weights_dir`: its own weights.yaml, else the project's."""
    return own_or_project(weights_dir, MANIFEST_PATH)


def default_weights_dir() -> Path:
    """`$SEPARATION_WEIGHTS_DIR` when set, else `<repo>/weights`."""
    configured = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(configured) if configured else REPO_ROOT / "weights"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while piece := handle.read(READ_CHUNK_BYTES):
            digest.update(piece)
    return digest.hexdigest()


def file_problem(path: Path, file: WeightFile, *, full_hash: bool = True) -> str | None:
    """What is wrong with `path` as a copy of `file` (missing, size, sha256), or None if it is good."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != file.size:
        return f"size is {size} bytes, expected {file.size}"
    if full_hash:
        actual = sha256_of(path)
        if actual != file.sha256:
            return f"sha256 is {actual}, expected {file.sha256}"
    return None


def verify(weights_dir: Path, files: Sequence[WeightFile], *, full_hash: bool = True) -> list[str]:
    """One line per missing or bad file in `weights_dir`; empty when all are good.

    With `full_hash=False` only presence and size are checked (no file is read).
    """
    problems = []
    for file in files:
        path = Path(weights_dir) / file.target
        problem = file_problem(path, file, full_hash=full_hash)
        if problem is not None:
            problems.append(f"{path}: {problem}")
    return problems


def package_file_path(package_file: str) -> Path:
    """The path of `<package>/<inner path>` inside the installed package (without importing it)."""
    package, _, inner = package_file.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"{package_file}: the Python package {package!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_file():
        raise WeightsError(f"{package_file}: no such file in the installed {package} package ({path})")
    return path
