"""The stem plan (`configs/stems.yaml`): which model gives which stem in every `stems` mode.

It is parsed into typed specs and checked as a whole when it is loaded, so a plan that names an unknown
model type, a mode that uses a model the plan does not define, or a stem with no place in `output_order`
fails at load with a message that says which. A new checkpoint of a supported architecture is a new model
entry (and its config and manifest lines), never a code change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import SettingsError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PLAN_FILE_NAME = "stems.yaml"
LOAD_TIMES = ("setup", "lazy")  # setup: when the server starts; lazy: on first use, then kept
CHUNKINGS = ("request", "config")  # whose chunk length and overlap a BS-RoFormer runs at


@dataclass(frozen=True)
class RoformerSpec:
    """A BS-RoFormer checkpoint: `config` is a path under the plan's folder, `checkpoint` under the weights
    folder. `chunking: request` runs it at the request's chunk_size / overlap, `config` at its config's."""

    name: str
    config: Path
    checkpoint: str
    load: str = "setup"
    chunking: str = "config"


@dataclass(frozen=True)
class DemucsSpec:
    """A Demucs bag `bag` in the weights subfolder `folder`; `batch_size` segments per forward pass."""

    name: str
    bag: str
    folder: str
    load: str = "setup"
    batch_size: int = 1


ModelSpec = RoformerSpec | DemucsSpec
MODEL_TYPES: dict[str, type[ModelSpec]] = {"bs_roformer": RoformerSpec, "demucs": DemucsSpec}


@dataclass(frozen=True)
class StemPlan:
    """models: name -> spec; modes: mode -> {model: stems it gives}; complements: stem -> the stem it is the
    mix minus (e.g. instrumental = mix - vocals), written wherever its source is; output_order: the order of
    the returned files."""

    models: dict[str, ModelSpec]
    modes: dict[str, dict[str, tuple[str, ...]]]
    complements: dict[str, str]
    output_order: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> StemPlan:
        """Parse and check a plan file; SettingsError naming the first problem."""
        with open(path) as f:
            document = yaml.safe_load(f)
        try:
            models = {
                name: _model_spec(name, entry, path.parent) for name, entry in document["models"].items()
            }
            modes = {
                mode: {model: tuple(stems) for model, stems in uses.items()}
                for mode, uses in document["modes"].items()
            }
            plan = cls(models, modes, dict(document.get("complements", {})), tuple(document["output_order"]))
        except (KeyError, TypeError, AttributeError) as error:
            raise SettingsError(f"stem plan {path} is malformed: {error!r}") from error
        plan.check(path)
        return plan

    @classmethod
    def for_weights(cls, weights_dir: Path) -> StemPlan:
        """The weights folder's own stems.yaml if it has one, else the project's."""
        own = Path(weights_dir) / PLAN_FILE_NAME
        return cls.load(own if own.is_file() else CONFIG_DIR / PLAN_FILE_NAME)

    def check(self, source: Path) -> None:
        """SettingsError unless every mode uses defined models and every stem has a place in output_order."""
        for mode, uses in self.modes.items():
            for model, stems in uses.items():
                if model not in self.models:
                    raise SettingsError(f"stem plan {source}: mode {mode!r} uses undefined model {model!r}")
                unplaced = [stem for stem in stems if stem not in self.output_order]
                if unplaced:
                    raise SettingsError(
                        f"stem plan {source}: mode {mode!r} gives {', '.join(unplaced)}, not in output_order"
                    )
        for complement, source_stem in self.complements.items():
            if complement not in self.output_order or source_stem not in self.output_order:
                raise SettingsError(
                    f"stem plan {source}: complement {complement} = mix - {source_stem} needs both in "
                    "output_order"
                )

    def stems_of(self, mode: str) -> list[str]:
        """The stems a mode returns, complements included, in output order."""
        uses = self.uses(mode)
        stems = {stem for model_stems in uses.values() for stem in model_stems}
        stems |= {complement for complement, source in self.complements.items() if source in stems}
        return [stem for stem in self.output_order if stem in stems]

    def uses(self, mode: str) -> dict[str, tuple[str, ...]]:
        """{model: the stems it gives} for a mode; SettingsError naming the modes for an unknown one."""
        if mode not in self.modes:
            raise SettingsError(f"unknown stems mode {mode!r}; choose one of {', '.join(self.modes)}")
        return self.modes[mode]

    def models_loaded_at(self, when: str) -> list[str]:
        return [name for name, spec in self.models.items() if spec.load == when]


def _model_spec(name: str, entry: dict, plan_dir: Path) -> ModelSpec:
    """A model entry of the plan as its typed spec; SettingsError for an unknown type, key or value."""
    entry = dict(entry)
    kind = entry.pop("type", None)
    if kind not in MODEL_TYPES:
        raise SettingsError(
            f"model {name!r} has unknown type {kind!r}; the plan supports {', '.join(MODEL_TYPES)}"
        )
    spec_class = MODEL_TYPES[kind]
    known = set(spec_class.__dataclass_fields__) - {"name"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise SettingsError(f"model {name!r} ({kind}) has unknown keys {unknown}; it takes {sorted(known)}")
    if kind == "bs_roformer":
        entry["config"] = plan_dir / entry["config"]
    spec = spec_class(name=name, **entry)
    if spec.load not in LOAD_TIMES:
        raise SettingsError(f"model {name!r}: load must be one of {', '.join(LOAD_TIMES)}, not {spec.load!r}")
    if isinstance(spec, RoformerSpec) and spec.chunking not in CHUNKINGS:
        raise SettingsError(
            f"model {name!r}: chunking must be one of {', '.join(CHUNKINGS)}, not {spec.chunking!r}"
        )
    return spec
