"""Agent-memory ranking: a blend of relevance, recency and importance, and MMR diversification.

Both re-rank the candidates a search found *under its bitemporal and tag filters* (the row mask
of ``valid_at`` / ``valid_during``, ``as_of`` and ``tags``), so they can reorder what was valid
and known, never add a row the filters excluded: no future fact, no retracted or superseded
version, nothing recorded after ``as_of`` can surface through them.

The blend follows Park et al. 2023 ("Generative Agents: Interactive Simulacra of Human
Behavior"): each candidate gets

    score = (w_rel * relevance + w_rec * recency + w_imp * importance) / (w_rel + w_rec + w_imp)

where ``relevance`` is the search's own score min-max scaled over the candidates, ``recency`` is
``0.5 ** (age / half_life)`` with ``age`` the time from the version's ``valid_from`` to the
query's ``valid_at`` (for a ``valid_during`` range, the range's end or now, whichever is earlier)
-- or, on the transaction-time axis, from its ``tx_from`` to the query's ``as_of`` (what the
store learned last, as it knew things then) -- clipped at 0, and ``importance`` is the version's
``quality_score`` min-max scaled over the candidates (all equal: no effect). Scores lie in [0, 1].

MMR (Carbonell and Goldstein, 1998) then picks hits one by one maximising
``lam * score - (1 - lam) * max cosine to the hits already picked`` (``diversity=lam``;
1 is the plain ranking, 0 only diversity). A hit keeps its (blended) score, so with MMR the
scores of consecutive hits need not decrease.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import numpy as np

from ..errors import InvalidInputError

#: Recency axes: the version's valid time (when the fact started to hold) or its transaction
#: time (when the store learned it).
AXES = ("valid", "tx")
#: Default half-life of the recency decay: one week. Park et al. decay by 0.995 per (game) hour,
#: a half-life of 138 hours, about 5.8 days; a week is the round figure near it.
DEFAULT_HALF_LIFE = timedelta(days=7)


@dataclass(frozen=True)
class Ranking:
    """Weights of the blend (see the module docstring) and the MMR lambda.

    Attributes
    ----------
    relevance, recency, importance
        Non-negative weights; their sum must be positive.
    half_life
        Half-life of the recency decay.
    axis
        ``"valid"`` (decay in valid time) or ``"tx"`` (decay in transaction time).
    diversity
        MMR lambda in [0, 1], or ``None`` for no MMR.
    """

    relevance: float = 1.0
    recency: float = 0.0
    importance: float = 0.0
    half_life: timedelta = DEFAULT_HALF_LIFE
    axis: str = "valid"
    diversity: float | None = None

    @property
    def blends(self) -> bool:
        """Whether the blend changes the order (some weight beside relevance)."""
        return self.recency > 0 or self.importance > 0

    @property
    def active(self) -> bool:
        """Whether any re-ranking happens at all."""
        return self.blends or self.diversity is not None


#: Named presets (``ranking=`` of ``Memory.search``); explicit weights override a preset's.
PRESETS: dict[str, Ranking] = {
    # Park et al.: relevance, recency and importance with equal weight.
    "generative_agents": Ranking(relevance=1.0, recency=1.0, importance=1.0),
    # Conversation memory: relevance first, the newest of similar memories ahead.
    "recent": Ranking(relevance=1.0, recency=0.5, importance=0.0),
    "relevance": Ranking(),
}


def _weight(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0")
    return float(v)


def resolve(
    *,
    ranking: str | None = None,
    relevance: float | None = None,
    recency: float | None = None,
    importance: float | None = None,
    half_life: timedelta | float | None = None,
    recency_axis: str | None = None,
    diversity: float | None = None,
) -> Ranking:
    """Validate the ranking keyword arguments into a :class:`Ranking` (a preset, then overrides).

    ``half_life`` is a ``timedelta`` or a number of seconds. Raises ``InvalidInputError``.
    """
    if ranking is None:
        base = Ranking()
    elif isinstance(ranking, str) and ranking in PRESETS:
        base = PRESETS[ranking]
    else:
        raise InvalidInputError(f"ranking must be one of {', '.join(sorted(PRESETS))}; got {ranking!r}")
    changes: dict[str, Any] = {}
    for name, v in (("relevance", relevance), ("recency", recency), ("importance", importance)):
        if v is not None:
            changes[name] = _weight(name, v)
    if half_life is not None:
        if isinstance(half_life, timedelta):
            secs = half_life.total_seconds()
        elif isinstance(half_life, int | float) and not isinstance(half_life, bool):
            secs = float(half_life)
        else:
            raise InvalidInputError("half_life must be a timedelta or a number of seconds")
        if not math.isfinite(secs) or secs <= 0:
            raise InvalidInputError("half_life must be positive")
        changes["half_life"] = timedelta(seconds=secs)
    if recency_axis is not None:
        if recency_axis not in AXES:
            raise InvalidInputError(f"recency_axis must be one of {', '.join(AXES)}; got {recency_axis!r}")
        changes["axis"] = recency_axis
    if diversity is not None:
        if isinstance(diversity, bool) or not isinstance(diversity, int | float) or not 0 <= diversity <= 1:
            raise InvalidInputError("diversity must be a number in [0, 1]")
        changes["diversity"] = float(diversity)
    out = replace(base, **changes)
    if out.relevance + out.recency + out.importance <= 0:
        raise InvalidInputError("relevance, recency and importance weights must not all be 0")
    return out


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.ones(len(x), np.float64)
    return (x - lo) / (hi - lo)


def recency(times_us: np.ndarray, ref_us: int, half_life: timedelta) -> np.ndarray:
    """``0.5 ** (max(0, ref - t) / half_life)`` per time (microseconds)."""
    hl = half_life.total_seconds() * 1e6
    age = np.maximum(0.0, float(ref_us) - times_us.astype(np.float64))
    return np.asarray(np.exp2(-age / hl), np.float64)


def blend(
    scores: np.ndarray, times_us: np.ndarray, quality: np.ndarray, ref_us: int, r: Ranking
) -> np.ndarray:
    """The blended score of each candidate (module docstring), in [0, 1]."""
    if len(scores) == 0:
        return np.zeros(0, np.float64)
    rel = _minmax(np.asarray(scores, np.float64))
    total = r.relevance * rel
    if r.recency > 0:
        total = total + r.recency * recency(times_us, ref_us, r.half_life)
    if r.importance > 0:
        total = total + r.importance * _minmax(np.asarray(quality, np.float64))
    return np.asarray(total / (r.relevance + r.recency + r.importance), np.float64)


def mmr(vectors: np.ndarray, scores: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: indices of ``k`` candidates in pick order.

    ``scores`` are min-max scaled first so that the relevance and the similarity penalty share a
    scale; ``vectors`` are unit rows (cosine = dot product). Ties go to the earlier candidate.
    """
    n = len(scores)
    if n == 0 or k <= 0:
        return []
    rel = _minmax(np.asarray(scores, np.float64))
    sims = np.asarray(vectors, np.float64) @ np.asarray(vectors, np.float64).T
    picked: list[int] = []
    max_sim = np.full(n, -np.inf)
    free = np.ones(n, bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        obj = np.where(free, lam * rel - (1.0 - lam) * penalty, -np.inf)
        i = int(np.argmax(obj))
        picked.append(i)
        free[i] = False
        max_sim = np.maximum(max_sim, sims[i])
    return picked


def rerank(
    engine: Any, res: list[tuple[int, float]], k: int, r: Ranking, ref_us: int
) -> list[tuple[int, float]]:
    """Re-rank one query's filtered candidates ``(row, score)`` with ``r``; the best ``k``."""
    if not res:
        return []
    t = engine.table
    rows = np.asarray([row for row, _ in res], np.int64)
    scores = np.asarray([s for _, s in res], np.float64)
    if r.blends:
        times = (t.valid_from if r.axis == "valid" else t.tx_from)[rows]
        scores = blend(scores, times, t.quality[rows], ref_us, r)
        # Stable: equal blended scores keep the search's order.
        order = np.argsort(-scores, kind="stable")
    else:
        order = np.arange(len(rows))
    if r.diversity is None:
        top = order[:k]
    else:
        sub = order[: max(k, len(order))]
        picked = mmr(t.vectors[rows[sub]], scores[sub], k, r.diversity)
        top = sub[picked]
    return [(int(rows[i]), float(scores[i])) for i in top]
