"""The one registry of model types: the stem plan's `type:` name -> the spec class that parses a plan entry,
lists the model's weight files, checks requests and builds the model. A new model type is a module with its
spec and model classes (see `base.py`) and one line here."""

from __future__ import annotations

from .base import ModelSpec
from .demucs.spec import DemucsSpec
from .roformer.spec import MelBandRoformerSpec, RoformerSpec

MODEL_TYPES: dict[str, type[ModelSpec]] = {
    spec.type_name: spec for spec in (RoformerSpec, DemucsSpec, MelBandRoformerSpec)
}
