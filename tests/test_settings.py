"""Request settings: every range and choice, checked once when a SeparationSettings is made."""

from __future__ import annotations

import pytest

from separation.errors import SettingsError
from separation.settings import SeparationSettings


@pytest.mark.parametrize(("chunk", "overlap"), [(4.0, 4.0), (4.0, 5.0), (8.0, 8.0)])
def test_overlap_must_be_below_chunk(chunk, overlap):
    with pytest.raises(SettingsError, match=r"overlap .* must be below chunk"):
        SeparationSettings(chunk_seconds=chunk, overlap_seconds=overlap)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, True])
def test_bad_batch_size_is_a_clear_error(batch_size):
    with pytest.raises(SettingsError, match="batch size must be an integer >= 1"):
        SeparationSettings(batch_size=batch_size)
