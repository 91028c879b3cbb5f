"""Keyword (BM25) and hybrid retrieval under the store's bitemporal filters.

- :class:`KeywordIndex` — a tantivy BM25 index over atom content, a derived index of the engine
  (maintained on every write, persisted under ``<store>/keyword/``; in RAM for encrypted stores).
- :func:`run` — keyword and hybrid searches, applying the same row mask as dense search.
- :func:`rrf`, :func:`weighted` — the fusion methods.

tantivy is an optional dependency: ``pip install 'aether[hybrid]'``.
"""

from __future__ import annotations

from .fusion import DEFAULT_RRF_K, minmax, rrf, weighted
from .index import PUSHDOWN_MAX_ROWS, KeywordIndex, attach_if_present, available, get_index
from .search import DEFAULT_DEPTH, FUSIONS, MODES, check_options, run

__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_RRF_K",
    "FUSIONS",
    "MODES",
    "PUSHDOWN_MAX_ROWS",
    "KeywordIndex",
    "attach_if_present",
    "available",
    "check_options",
    "get_index",
    "minmax",
    "rrf",
    "run",
    "weighted",
]
