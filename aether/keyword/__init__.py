"""Keyword (BM25) and hybrid retrieval under the store's bitemporal filters.

- :class:`KeywordIndex` — a tantivy BM25 index over atom content, a derived index of the engine
  (maintained on every write, persisted under ``<store>/keyword/``; in RAM for encrypted stores).
- :func:`run` — keyword and hybrid searches, applying the same row mask as dense search.
- :func:`rrf`, :func:`weighted` — the fusion methods.

tantivy is an optional dependency: ``pip install 'aether[hybrid]'``.

Why tantivy rather than bm25s (measured on SciFact, 5,183 documents, same analyzer: English
stop words and Snowball stemming; ``benchmarks/bench_quality.py`` and the issue 8 report):

=====================  ==================  ==================
                       tantivy 0.27        bm25s 0.3.16
=====================  ==================  ==================
nDCG@10                0.685               0.686
build 5,183 docs       0.40 s              1.10 s
query (top 100)        0.23 ms             0.49 ms
add one document       add + commit        full re-index, 1.2 s
filter pushdown        term set on ids     none
on-disk format         incremental, crash  one snapshot file
                       safe (atomic meta)
=====================  ==================  ==================

Same ranking quality; bm25s has no incremental add, so every write would re-index the store.

Durability choice: the index is persisted (``<store>/keyword/``) rather than rebuilt on every
open, because a rebuild re-analyses every row (about 13,000 rows/s on one core: 0.4 s for
SciFact, over a minute for a million memories) while loading the persisted index and catching
up the rows after its last commit costs milliseconds. Encrypted stores rebuild in RAM instead.
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
