"""The keyword (BM25) index: a derived index of the engine, and nothing above it.

- :class:`KeywordIndex` — a tantivy BM25 index over atom content (maintained on every write,
  persisted under ``<store>/keyword/``; in RAM for encrypted stores), searched under the row mask
  the engine computes for the bitemporal filters;
- :mod:`.tail` — the in-memory BM25 tail serving the newest rows until tantivy commits.

Keyword and hybrid search (the driver, fusion of the dense and keyword halves) live in
:mod:`aether.retrieval` (``hybrid``, ``fusion``), which uses this index.

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

from .index import PUSHDOWN_MAX_ROWS, KeywordIndex, attach_if_present, available, get_index

__all__ = ["PUSHDOWN_MAX_ROWS", "KeywordIndex", "attach_if_present", "available", "get_index"]
