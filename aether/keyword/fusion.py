"""Fusing ranked lists: reciprocal rank fusion and weighted (min-max normalised) score fusion."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: The usual RRF constant (Cormack, Clarke and Buettcher, 2009).
DEFAULT_RRF_K = 60


def rrf(
    lists: Sequence[Sequence[tuple[int, float]]],
    k: int,
    *,
    rrf_k: int = DEFAULT_RRF_K,
    key: Callable[[int], int] | None = None,
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: ``score(d) = sum over lists of 1 / (rrf_k + rank(d))``, ranks from 1.

    Parameters
    ----------
    lists
        Ranked ``(row, score)`` lists, best first (the scores are ignored).
    k
        How many fused ``(row, fused_score)`` pairs to return, best first.
    key
        Groups rows that are the same item (e.g. versions of one atom); the row returned for a
        group is the one with the best rank in any list (the earlier list on a tie).
    """
    acc: dict[int, list[float]] = {}  # group -> [score, best rank, row]
    for lst in lists:
        for rank, (row, _) in enumerate(lst, start=1):
            g = key(row) if key is not None else row
            cur = acc.get(g)
            if cur is None:
                acc[g] = [1.0 / (rrf_k + rank), float(rank), float(row)]
            else:
                cur[0] += 1.0 / (rrf_k + rank)
                if rank < cur[1]:
                    cur[1], cur[2] = float(rank), float(row)
    order = sorted(acc.values(), key=lambda v: (-v[0], v[2]))
    return [(int(v[2]), float(v[0])) for v in order[:k]]


def minmax(scores: np.ndarray) -> np.ndarray:
    """Scale scores to [0, 1] (all ones when they are all equal)."""
    if len(scores) == 0:
        return scores.astype(np.float64)
    lo, hi = float(scores.min()), float(scores.max())
    if hi <= lo:
        return np.ones(len(scores), np.float64)
    return (scores.astype(np.float64) - lo) / (hi - lo)


def weighted(
    rows: np.ndarray, dense: np.ndarray, keyword: np.ndarray, *, dense_weight: float
) -> np.ndarray:
    """Convex combination of min-max normalised dense and keyword scores of the same ``rows``."""
    return dense_weight * minmax(dense) + (1.0 - dense_weight) * minmax(keyword)
