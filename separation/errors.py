"""Exceptions whose messages are written for the person who sent the request.

Every failure a user can cause (a bad upload, an impossible setting) or an operator can
cause (missing or corrupt weights) raises a subclass of `SeparationError`. The message
alone must say what is wrong and, where there is one, what to do about it. Messages that several modules
raise are made here, once.
"""

from collections.abc import Sequence

QUOTED_CHARACTERS = 100  # the most of a user's value a message repeats
FETCH_COMMAND = "python -m separation.weights fetch"
VERIFY_COMMAND = "python -m separation.weights verify"


class SeparationError(Exception):
    """Base class of the errors this package raises on purpose."""


class AudioError(SeparationError):
    """The input audio cannot be decoded, is unsafe to decode, or is out of bounds."""


class WeightsError(SeparationError):
    """A weight file is missing, corrupt, or does not match the model it is loaded into."""


class SettingsError(SeparationError):
    """A combination of separation settings that cannot work (e.g. overlap >= chunk)."""


def weights_error(problems: Sequence[str]) -> WeightsError:
    """One WeightsError for every problem found, in one line, ending with the fetch command once."""
    return WeightsError("; ".join(problems) + f". Fetch the weights with `{FETCH_COMMAND}`.")


def non_finite_output_error(model: str) -> WeightsError:
    """What a model that produced NaN or infinite samples tells: damaged weights, and how to check them."""
    return WeightsError(
        f"model {model} produced NaN or infinite samples; its weights may be damaged: check them with "
        f"`{VERIFY_COMMAND}`"
    )


def format_seconds(seconds: float) -> str:
    """'2.5 s' below a minute, else 'M:SS' or 'H:MM:SS'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def quoted(value: object) -> str:
    """`value` as a message shows what a user sent: its repr, cut after QUOTED_CHARACTERS characters with
    the full length said (a megabyte of text must not come back as a megabyte of error)."""
    if isinstance(value, str) and len(value) > QUOTED_CHARACTERS:
        return f"{value[:QUOTED_CHARACTERS]!r}... ({len(value)} characters)"
    text = repr(value)
    if len(text) > QUOTED_CHARACTERS:
        return f"{text[:QUOTED_CHARACTERS]}... ({len(text)} characters as text)"
    return text
