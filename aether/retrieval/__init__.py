"""Retrieval above the indexes: keyword and hybrid search, score fusion, and agent-memory ranking.

- :mod:`.hybrid` — the search driver for ``mode="keyword"`` / ``"hybrid"`` and every re-ranked
  search: the dense half through the engine's planner, the keyword half through
  :class:`aether.keyword.KeywordIndex`, both under the same bitemporal row mask;
- :mod:`.fusion` — fusing the two halves (RRF, convex, adaptive);
- :mod:`.ranking` — the relevance / recency / importance blend and MMR.
"""

from __future__ import annotations

from .fusion import DEFAULT_RRF_K, minmax, rrf, weighted
from .hybrid import DEFAULT_DEPTH, FUSIONS, MODES, check_options, run
from .ranking import DEFAULT_HALF_LIFE, PRESETS, Ranking, blend, mmr, recency, rerank, resolve

__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_HALF_LIFE",
    "DEFAULT_RRF_K",
    "FUSIONS",
    "MODES",
    "PRESETS",
    "Ranking",
    "blend",
    "check_options",
    "minmax",
    "mmr",
    "recency",
    "rerank",
    "resolve",
    "rrf",
    "run",
    "weighted",
]
