"""Exceptions whose messages are written for the person who sent the request.

Every failure a user can cause (a bad upload, an impossible setting) or an operator can
cause (missing or corrupt weights) raises a subclass of `SeparationError`. The message
alone must say what is wrong and, where there is one, what to do about it.
"""


class SeparationError(Exception):
    """Base class of the errors this package raises on purpose."""


class AudioError(SeparationError):
    """The input audio cannot be decoded, is unsafe to decode, or is out of bounds."""


class WeightsError(SeparationError):
    """A weight file is missing, corrupt, or does not match the model it is loaded into."""


class SettingsError(SeparationError):
    """A combination of separation settings that cannot work (e.g. overlap >= chunk)."""
