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


#: Adaptive fusion's base dense weight and the share of the per-query evidence in the weight.
#: From ``benchmarks/fusion_study.py`` (leave-one-collection-out over SciFact, Cranfield and CISI,
#: grid base 0.4-0.7 x share 0.25-1.0): the folds chose (0.7, 0.25) twice and (0.6, 0.5) once,
#: held-out nDCG@10 0.732 / 0.411 / 0.434. Every pair with base 0.6-0.7 lies within 0.005 of
#: the best mean; of those (0.6, 0.5) leans least on the dense half and most on the per-query
#: evidence, the safer side for stores where keyword matching is the stronger half (conversational
#: memory: the issue's held-out set has BM25 ahead of dense). Below base 0.55 CISI falls under dense.
ADAPTIVE_BASE = 0.6
ADAPTIVE_EVIDENCE = 0.5


def evidence(scores: np.ndarray | Sequence[float]) -> float:
    """How sharply a half's ranked list singles out its best hit: ``(max - mean) / std`` of the
    list's scores (0 for fewer than two hits or equal scores).

    Scale-free, so a cosine list and a BM25 list can be compared: a list whose top hit stands far
    out of the rest (a rare matched term, a near-duplicate) shows strong evidence; a flat list
    (a long verbose query matching many common terms) shows little.
    """
    s = np.asarray(scores, np.float64)
    if len(s) < 2:
        return 0.0
    sd = float(s.std())
    if sd <= 0 or not np.isfinite(sd):
        return 0.0
    return float((s.max() - s.mean()) / sd)


def adaptive_weight(
    dense_scores: np.ndarray | Sequence[float],
    keyword_scores: np.ndarray | Sequence[float],
    *,
    base: float = ADAPTIVE_BASE,
    share: float = ADAPTIVE_EVIDENCE,
    pad_to: int | None = None,
) -> float:
    """Per-query dense weight: ``(1 - share) * base + share * e_d / (e_d + e_k)``.

    ``e_d`` and ``e_k`` are the :func:`evidence` of each half's own ranked list. The keyword list
    is padded with zeros to the dense list's length: a row outside it matches no query term, so
    its BM25 is 0, and a term only one memory holds is strong evidence, not none. ``pad_to``
    pads it further (hybrid search passes the visible row count, at most 100), so that the
    keyword evidence does not depend on how many dense candidates were fetched. A half that
    found nothing (no keyword term matched) gets no weight; with no evidence on either side the
    weight is ``base``.
    """
    if len(keyword_scores) == 0:
        return 1.0
    if len(dense_scores) == 0:
        return 0.0
    ks = np.asarray(keyword_scores, np.float64)
    n = max(len(dense_scores), pad_to or 0)
    if len(ks) < n:
        ks = np.concatenate([ks, np.zeros(n - len(ks))])
    ed, ek = evidence(dense_scores), evidence(ks)
    if ed + ek <= 0:
        return float(base)
    return float((1.0 - share) * base + share * ed / (ed + ek))
