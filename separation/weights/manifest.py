"""The weights manifest (`configs/weights.yaml`): every file the models load, with its size, sha256, where
it comes from (download URLs on independent hosts, or a file shipped inside an installed Python package) and
the terms its authors state, one terms label per model, and checks of a weights folder against it. A
weights folder with its own `weights.yaml` (and `stems.yaml`) uses those instead of the project's
(`own_or_project`)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from ..errors import WeightsError

REPO_ROOT = Path(__file__).resolve().parents[2]  # the one place the package names the repository
CONFIG_DIR = REPO_ROOT / "configs"
MANIFEST_FILE_NAME = "weights.yaml"
MANIFEST_PATH = CONFIG_DIR / MANIFEST_FILE_NAME
WEIGHTS_DIR_ENV = "SEPARATION_WEIGHTS_DIR"
READ_CHUNK_BYTES = 1 << 20

# What a model's weights may be used for, in one word each: the label of every model in `models:`.
TERMS_LABELS: dict[str, str] = {
    "research-only": "its authors state the weights are for research only",
    "none-stated": "its authors state no terms for the weights",
    "mit-reported": "MIT, by its author's word as quoted by others; the statement itself was not read here",
    "mit": "MIT, stated by its authors where they publish the weights",
}

_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
_MANIFEST_KEYS = frozenset(
    {
        "target",
        "model",
        "size",
        "sha256",
        "urls",
        "single_host",
        "unconfirmed_mirrors",
        "package_file",
        "source",
        "terms",
    }
)
_REQUIRED_KEYS = frozenset({"target", "model", "size", "sha256", "source", "terms"})
_HOST_KEYS = frozenset({"url", "evidence"})


class Mirror(NamedTuple):
    """A URL with a short note of where its file's digest was confirmed (or why it could not be)."""

    url: str
    evidence: str


@dataclass(frozen=True)
class WeightFile:
    """One file of the manifest.

    `target` is relative to the weights folder (e.g. `demucs/5c90dfd2-34c22ccb.th`); `size` is in bytes.
    Exactly one of `urls` (tried in order, the publisher's first) and `package_file` (`<package>/<path inside
    it>`) is set. `evidence` is empty or holds, for each URL, where its digest was confirmed. A file with one
    URL says in `single_host` why it has no second one; `unconfirmed_mirrors` are candidate hosts whose bytes
    could not be confirmed: listed for maintainers (`check-urls` probes them), never downloaded from.
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
    evidence: tuple[str, ...] = ()
    single_host: str | None = None
    unconfirmed_mirrors: tuple[Mirror, ...] = ()

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
        for url in (*self.urls, *(mirror.url for mirror in self.unconfirmed_mirrors)):
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
        self._check_hosts(where)

    def _check_hosts(self, where: str) -> None:
        """The host fields agree: one URL comes with a reason, several without; evidence for every URL."""
        if len(set(self.urls)) != len(self.urls):
            raise WeightsError(f"{where}: a URL is listed twice")
        if self.evidence and len(self.evidence) != len(self.urls):
            raise WeightsError(f"{where}: give evidence for every URL or for none")
        if any(not isinstance(note, str) or not note.strip() for note in self.evidence):
            raise WeightsError(f"{where}: evidence must say where the URL's digest was confirmed")
        if self.single_host is not None and (
            not isinstance(self.single_host, str) or not self.single_host.strip()
        ):
            raise WeightsError(f"{where}: single_host must say why the file has only one host")
        if self.package_file is not None:
            if self.single_host is not None or self.unconfirmed_mirrors:
                raise WeightsError(f"{where}: single_host and unconfirmed_mirrors are for downloaded files")
            return
        if len(self.urls) == 1 and self.single_host is None:
            raise WeightsError(
                f"{where}: one URL only; add a second host with the same sha256, or say why there is none "
                f"in single_host"
            )
        if len(self.urls) > 1 and self.single_host is not None:
            raise WeightsError(f"{where}: single_host is set, but the entry has {len(self.urls)} URLs")
        for mirror in self.unconfirmed_mirrors:
            if mirror.url in self.urls:
                raise WeightsError(f"{where}: {mirror.url} is both a URL and an unconfirmed mirror")
            if not mirror.evidence.strip():
                raise WeightsError(f"{where}: unconfirmed mirror {mirror.url} needs a note of what is known")

    @property
    def name(self) -> str:
        """The file name without folders."""
        return Path(self.target).name


def load_manifest(path: Path = MANIFEST_PATH) -> list[WeightFile]:
    """Read and check the weights manifest (a YAML file with `models:` and a `files:` list): its files."""
    return _read_manifest(path)[0]


def model_terms(path: Path = MANIFEST_PATH) -> dict[str, str]:
    """{model: terms label} of the manifest at `path`, every model of its files once; the labels are
    TERMS_LABELS' keys (e.g. 'research-only', 'none-stated', 'mit-reported')."""
    return _read_manifest(path)[1]


def _read_manifest(path: Path) -> tuple[list[WeightFile], dict[str, str]]:
    """The checked files and terms labels of the manifest at `path`; WeightsError names any fault."""
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
    terms = _terms_labels(document.get("models"), path)
    used = list(dict.fromkeys(file.model for file in files))
    unlabelled = [model for model in used if model not in terms]
    if unlabelled:
        raise WeightsError(f"weights manifest {path}: no terms label under 'models:' for {unlabelled}")
    unused = sorted(set(terms) - set(used))
    if unused:
        raise WeightsError(f"weights manifest {path}: 'models:' labels {unused}, which no file uses")
    return files, {model: terms[model] for model in used}


def _terms_labels(models: object, manifest: Path) -> dict[str, str]:
    """{model: label} from the `models:` mapping (`<model>: {terms: <label>}`), each label a known one."""
    where = f"weights manifest {manifest}"
    if not isinstance(models, dict) or not models:
        raise WeightsError(f"{where}: expected a 'models:' mapping of each model to {{terms: <label>}}")
    labels = {}
    for model, entry in models.items():
        if not isinstance(entry, dict) or set(entry) != {"terms"}:
            raise WeightsError(f"{where}: models: {model} must be a mapping with the one key 'terms'")
        label = entry["terms"]
        if label not in TERMS_LABELS:
            raise WeightsError(
                f"{where}: models: {model} has the terms label {label!r}; allowed: {', '.join(TERMS_LABELS)}"
            )
        labels[str(model)] = label
    return labels


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
    hosts = _hosts(entry.get("urls") or [], "urls", label)
    mirrors = _hosts(entry.get("unconfirmed_mirrors") or [], "unconfirmed_mirrors", label)
    with_evidence = [host for host in hosts if isinstance(host, Mirror)]
    if with_evidence and len(with_evidence) != len(hosts):
        raise WeightsError(f"{label}: urls: give each as {{url, evidence}}, or all as plain strings")
    if any(not isinstance(mirror, Mirror) for mirror in mirrors):
        raise WeightsError(f"{label}: unconfirmed_mirrors: give each as {{url, evidence}}")
    return WeightFile(
        target=str(entry["target"]),
        size=entry["size"],
        sha256=entry["sha256"],
        urls=tuple(host.url if isinstance(host, Mirror) else host for host in hosts),
        package_file=entry.get("package_file"),
        model=str(entry["model"]),
        source=str(entry["source"]),
        terms=str(entry["terms"]),
        evidence=tuple(host.evidence for host in with_evidence),
        single_host=entry.get("single_host"),
        unconfirmed_mirrors=tuple(mirrors),
    )


def _hosts(items: object, key: str, label: str) -> list[str | Mirror]:
    """A list of URLs, each a string or a `{url, evidence}` mapping (returned as a Mirror)."""
    if not isinstance(items, list):
        raise WeightsError(f"{label}: {key} must be a list")
    hosts: list[str | Mirror] = []
    for item in items:
        if isinstance(item, str):
            hosts.append(item)
        elif (
            isinstance(item, dict)
            and set(item) == _HOST_KEYS
            and all(isinstance(v, str) for v in item.values())
        ):
            hosts.append(Mirror(item["url"], item["evidence"]))
        else:
            raise WeightsError(
                f"{label}: each of {key} must be a URL or a {{url, evidence}} mapping of strings"
            )
    return hosts


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
