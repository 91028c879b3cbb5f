"""Ranking beyond similarity for agent memory: the relevance / recency / importance blend and MMR
(:mod:`aether.retrieval.ranking`). Score fusion of the dense and keyword halves lives in
:mod:`aether.keyword.fusion`."""

from __future__ import annotations

from .ranking import DEFAULT_HALF_LIFE, PRESETS, Ranking, blend, mmr, recency, rerank, resolve

__all__ = ["DEFAULT_HALF_LIFE", "PRESETS", "Ranking", "blend", "mmr", "recency", "rerank", "resolve"]
