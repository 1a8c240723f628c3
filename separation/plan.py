"""The stem plan (`configs/stems.yaml`): which model gives which stem in every `stems` mode.

It is parsed into typed specs and checked as a whole when it is loaded, so a plan that names an unknown
model type, a mode that uses a model the plan does not define, a stem a BS-RoFormer's config does not
have, or a stem with no place in `output_order` fails at load with a message that says which. A new
checkpoint of a supported architecture is a new model entry (and its config and manifest lines), never a
code change. `resolve` turns a request (a mode and extra stems) into the work to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import SettingsError
from .models.base import ModelSpec
from .models.registry import MODEL_TYPES
from .request import SeparationSettings
from .weights.manifest import CONFIG_DIR, own_or_project

PLAN_FILE_NAME = "stems.yaml"


@dataclass(frozen=True)
class Mode:
    """models: {model: the stems it gives}; complements: the complements the mode returns."""

    models: dict[str, tuple[str, ...]]
    complements: tuple[str, ...]


@dataclass(frozen=True)
class Work:
    """What one request runs: {model: stems to compute}, {complement: source stem}, and the files' order."""

    uses: dict[str, tuple[str, ...]]
    complements: dict[str, str]
    order: list[str]


@dataclass(frozen=True)
class StemPlan:
    """models: name -> spec; complements: stem -> the stem it is the mix minus (e.g. instrumental = mix -
    vocals); modes: name -> Mode; output_order: the order of a mode's files; extra_stems_from: the model
    whose stems a request may add by name (None: no extra stems)."""

    models: dict[str, ModelSpec]
    complements: dict[str, str]
    modes: dict[str, Mode]
    output_order: tuple[str, ...]
    extra_stems_from: str | None = None

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
                name: Mode(
                    {model: tuple(stems) for model, stems in mode["models"].items()},
                    tuple(mode.get("complements", ())),
                )
                for name, mode in document["modes"].items()
            }
            plan = cls(
                models,
                dict(document.get("complements", {})),
                modes,
                tuple(document["output_order"]),
                document.get("extra_stems_from"),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise SettingsError(f"stem plan {path} is malformed: {error!r}") from error
        plan.check(path)
        return plan

    @classmethod
    def for_weights(cls, weights_dir: Path) -> StemPlan:
        """The weights folder's own stems.yaml if it has one, else the project's."""
        return cls.load(own_or_project(weights_dir, CONFIG_DIR / PLAN_FILE_NAME))

    def check(self, source: Path) -> None:
        """SettingsError unless every mode uses defined models for stems they have, every stem has a place
        in output_order, and every complement's source is computed in the modes that return it."""
        where = f"stem plan {source}"
        extras = self.models.get(self.extra_stems_from)
        if self.extra_stems_from is not None and (extras is None or extras.stem_names() is None):
            raise SettingsError(f"{where}: extra_stems_from must name a model whose stems the plan knows")
        for complement, source_stem in self.complements.items():
            if complement not in self.output_order:
                raise SettingsError(
                    f"{where}: complement {complement} = mix - {source_stem} is not in output_order"
                )
        for name, mode in self.modes.items():
            stems = [stem for model_stems in mode.models.values() for stem in model_stems]
            for model, model_stems in mode.models.items():
                spec = self.models.get(model)
                if spec is None:
                    raise SettingsError(f"{where}: mode {name!r} uses undefined model {model!r}")
                known = spec.stem_names()
                missing = [stem for stem in model_stems if known is not None and stem not in known]
                if missing:
                    raise SettingsError(f"{where}: mode {name!r}: {model} has no stem {', '.join(missing)}")
            unplaced = [stem for stem in stems if stem not in self.output_order]
            if unplaced:
                raise SettingsError(
                    f"{where}: mode {name!r} gives {', '.join(unplaced)}, not in output_order"
                )
            for complement in mode.complements:
                if self.complements.get(complement) not in stems:
                    raise SettingsError(
                        f"{where}: mode {name!r} returns complement {complement!r} but not its source"
                    )

    def mode(self, mode: str) -> Mode:
        """The mode named `mode`; SettingsError naming the modes for an unknown one."""
        if mode not in self.modes:
            raise SettingsError(f"unknown stems mode {mode!r}; choose one of {', '.join(self.modes)}")
        return self.modes[mode]

    def stems_of(self, mode: str) -> list[str]:
        """The stems a mode returns, complements included, in output order."""
        chosen = self.mode(mode)
        stems = {stem for model_stems in chosen.models.values() for stem in model_stems}
        stems.update(chosen.complements)
        return [stem for stem in self.output_order if stem in stems]

    @property
    def extra_stem_names(self) -> tuple[str, ...]:
        """The names a request may add as extra stems (the extras model's stems), in its head order."""
        if self.extra_stems_from is None:
            return ()
        return self.models[self.extra_stems_from].stem_names()

    def resolve(self, settings: SeparationSettings) -> Work:
        """The work of a request: the mode's models and stems, then each extra stem (from the extras model,
        run once with the mode's stems where the mode uses it too). SettingsError for an unknown, repeated
        or already returned extra stem, listing the valid names, and for what a model cannot run (its
        spec's `check_request`): all before any model loads."""
        mode, extra_stems = settings.stems, settings.extra_stems
        chosen = self.mode(mode)
        order = self.stems_of(mode)
        valid = self.extra_stem_names
        for index, stem in enumerate(extra_stems):
            problem = None
            if stem not in valid:
                problem = f"unknown name {stem!r}"
            elif stem in extra_stems[:index]:
                problem = f"{stem!r} is given twice"
            elif stem in order:
                problem = f"{stem!r} is already returned by stems={mode}"
            if problem:
                names = ", ".join(valid) if valid else "none: this plan has no extra stems"
                raise SettingsError(f"extra_stems: {problem}; the names are: {names}")
        uses = dict(chosen.models)
        if extra_stems:
            uses[self.extra_stems_from] = uses.get(self.extra_stems_from, ()) + tuple(extra_stems)
        for model, stems in uses.items():
            self.models[model].check_request(stems, settings)
        complements = {complement: self.complements[complement] for complement in chosen.complements}
        return Work(uses, complements, order + list(extra_stems))

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
    return MODEL_TYPES[kind].from_entry(name, entry, plan_dir)
