"""Vectorised visibility: which version rows a (valid time, transaction time) query sees."""

from __future__ import annotations

import numpy as np


def visible_mask(
    valid_from: np.ndarray,
    valid_to: np.ndarray,
    tx_from: np.ndarray,
    tx_to: np.ndarray,
    *,
    as_of: int,
    valid_at: int | None = None,
    valid_during: tuple[int, int] | None = None,
) -> np.ndarray:
    """Boolean mask of rows with ``tx_from <= as_of < tx_to`` and the valid-time condition.

    ``valid_at=V`` keeps ``valid_from <= V < valid_to``; ``valid_during=(a, b)`` keeps rows whose
    valid interval overlaps ``[a, b)``; neither keeps every valid time.
    """
    mask = (tx_from <= as_of) & (as_of < tx_to)
    if valid_at is not None:
        mask &= (valid_from <= valid_at) & (valid_at < valid_to)
    elif valid_during is not None:
        a, b = valid_during
        mask &= (valid_from < b) & (valid_to > a)
    return mask
