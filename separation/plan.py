"""The stem plan (`configs/stems.yaml`): which model gives which stem in every `stems` mode.

It is parsed into typed specs and checked as a whole when it is loaded, whatever is asked of it later: an
unknown key or model type, a bad value of a model's entry (its spec's `parse_entry`), a mode that uses a
model the plan does not define, asks a model for a stem it does not give, takes one stem from two models
(or a model's stem and a complement of the same name), returns a complement without its source, or gives a
stem with no place in `output_order` — each fails at load with one line naming the mode and the model. A
new checkpoint of a supported architecture is a new model entry (and its config and manifest lines), never
a code change. `resolve` turns a request (a mode and extra stems) into the work to do.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from .errors import SettingsError, quoted
from .models.base import ModelSpec
from .models.registry import MODEL_TYPES
from .request import InputSpec, Request, check_value, declared_inputs
from .weights.manifest import CONFIG_DIR, own_or_project

PLAN_FILE_NAME = "stems.yaml"
PLAN_KEYS = frozenset({"models", "complements", "modes", "output_order", "extra_stems_from"})
MODE_KEYS = frozenset({"models", "complements"})


@dataclass(frozen=True)
class Mode:
    """models: {model: the stems it gives}; complements: the complements the mode returns."""

    models: dict[str, tuple[str, ...]]
    complements: tuple[str, ...]


@dataclass(frozen=True)
class Work:
    """What one request runs: {model: stems to compute}, {complement: source stem}, the files' order, and
    which model each stem comes from (a complement: its source's model)."""

    uses: dict[str, tuple[str, ...]]
    complements: dict[str, str]
    order: list[str]
    model_of: dict[str, str]


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
        where = f"stem plan {path}"
        with open(path) as f:
            document = yaml.safe_load(f)
        try:
            _no_unknown_keys(document, PLAN_KEYS, where)
            models = {
                name: _model_spec(name, entry, path.parent) for name, entry in document["models"].items()
            }
            modes = {}
            for name, mode in document["modes"].items():
                _no_unknown_keys(mode, MODE_KEYS, f"{where}: mode {name!r}")
                models_of_mode = {model: tuple(stems) for model, stems in mode["models"].items()}
                modes[name] = Mode(models_of_mode, tuple(mode.get("complements", ())))
            plan = cls(
                models,
                dict(document.get("complements", {})),
                modes,
                tuple(document["output_order"]),
                document.get("extra_stems_from"),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise SettingsError(f"{where} is malformed: {error!r}") from error
        plan.check(where)
        return plan

    @classmethod
    def for_weights(cls, weights_dir: Path) -> StemPlan:
        """The weights folder's own stems.yaml if it has one, else the project's."""
        return cls.load(own_or_project(weights_dir, CONFIG_DIR / PLAN_FILE_NAME))

    def check(self, where: str) -> None:
        """SettingsError unless every mode can run as the pipeline runs it (see the module's docstring)."""
        if self.extra_stems_from is not None and self.extra_stems_from not in self.models:
            raise SettingsError(f"{where}: extra_stems_from names undefined model {self.extra_stems_from!r}")
        for complement, source_stem in self.complements.items():
            if complement not in self.output_order:
                raise SettingsError(
                    f"{where}: complement {complement} = mix - {source_stem} is not in output_order"
                )
        for name, mode in self.modes.items():
            given: dict[str, str] = {}  # stem -> the model that gives it in this mode
            for model, stems in mode.models.items():
                spec = self.models.get(model)
                if spec is None:
                    raise SettingsError(f"{where}: mode {name!r} uses undefined model {model!r}")
                missing = [stem for stem in stems if stem not in spec.stem_names()]
                if missing:
                    raise SettingsError(f"{where}: mode {name!r}: {model} has no stem {', '.join(missing)}")
                for stem in stems:
                    if stem in given:
                        raise SettingsError(
                            f"{where}: mode {name!r} takes {stem} from both {given[stem]} and {model}; each "
                            "stem comes from one model"
                        )
                    given[stem] = model
            unplaced = [stem for stem in given if stem not in self.output_order]
            if unplaced:
                raise SettingsError(
                    f"{where}: mode {name!r} gives {', '.join(unplaced)}, not in output_order"
                )
            for complement in mode.complements:
                if self.complements.get(complement) not in given:
                    raise SettingsError(
                        f"{where}: mode {name!r} returns complement {complement!r} but not its source"
                    )
                if complement in given:
                    raise SettingsError(
                        f"{where}: mode {name!r} takes {complement} from {given[complement]} and as the "
                        f"complement mix - {self.complements[complement]}"
                    )

    def mode(self, mode: str) -> Mode:
        """The mode named `mode`; SettingsError naming the modes for an unknown one."""
        if mode not in self.modes:
            raise SettingsError(f"unknown stems mode {quoted(mode)}; choose one of {', '.join(self.modes)}")
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

    def declared_inputs(self) -> tuple[InputSpec, ...]:
        """Every input as `request.declared_inputs` declares it, with what this plan decides filled in:
        its modes for `stems` (each with its stems and models, in the description), and for `extra_stems`
        its extras model's names (in the description) and the longest valid text (all of them,
        ", "-separated)."""
        specs = []
        for spec in declared_inputs():
            if spec.name == "stems":
                modes = "; ".join(
                    f"{mode}: {', '.join(self.stems_of(mode))} ({' + '.join(self.modes[mode].models)})"
                    for mode in self.modes
                )
                spec = replace(spec, choices=tuple(self.modes), description=f"{spec.description} {modes}.")
            elif spec.name == "extra_stems":
                names = self.extra_stem_names
                listed = f"{spec.description} Any of: {', '.join(names)}." if names else spec.description
                spec = replace(spec, choices=(), description=listed, max_length=len(", ".join(names)))
            specs.append(spec)
        return tuple(specs)

    def resolve(self, request: Request) -> Work:
        """The work of a request: the mode's models and stems, then each extra stem (from the extras model,
        run once with the mode's stems where the mode uses it too). SettingsError for a mode the plan does
        not have, an extra stems text longer than any valid one, an unknown, repeated or already returned
        extra stem (listing the valid names), and for what a model cannot run (its spec's
        `check_request`): all before any model loads."""
        for spec in self.declared_inputs():
            if spec.name in ("stems", "extra_stems"):
                check_value(spec, getattr(request, spec.name))
        mode, extra_stems = request.stems, request.extra_stem_names
        chosen = self.mode(mode)
        order = self.stems_of(mode)
        valid = self.extra_stem_names
        for index, stem in enumerate(extra_stems):
            problem = None
            if stem not in valid:
                problem = f"unknown name {quoted(stem)}"
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
            self.models[model].check_request(stems, request.run_options)
        model_of = {stem: model for model, stems in uses.items() for stem in stems}
        complements = {complement: self.complements[complement] for complement in chosen.complements}
        model_of.update({complement: model_of[source] for complement, source in complements.items()})
        return Work(uses, complements, order + list(extra_stems), model_of)

    def models_loaded_at(self, when: str) -> list[str]:
        return [name for name, spec in self.models.items() if spec.load == when]


def _no_unknown_keys(mapping: dict, known: frozenset[str], where: str) -> None:
    """SettingsError naming the keys of `mapping` that are not `known`."""
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise SettingsError(f"{where} has unknown keys {unknown}; it takes {sorted(known)}")


def _model_spec(name: str, entry: dict, plan_dir: Path) -> ModelSpec:
    """A model entry of the plan as its typed spec; SettingsError for an unknown type, key or value."""
    entry = dict(entry)
    kind = entry.pop("type", None)
    if kind not in MODEL_TYPES:
        raise SettingsError(
            f"model {name!r} has unknown type {kind!r}; the plan supports {', '.join(MODEL_TYPES)}"
        )
    return MODEL_TYPES[kind].from_entry(name, entry, plan_dir)
