"""Keyword and hybrid search under the same bitemporal filters as dense search.

Both halves use the engine's row mask for the query's ``valid_at`` / ``valid_during``,
``as_of`` and ``tags`` (``Engine.mask``), so a row is visible to the keyword half exactly
when it is visible to the dense half. The dense half goes through the normal dense planner
(``engine.search.plan_and_search``), so it uses whatever plan (exact or ANN) dense search uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..models import BucketPlan, FusionPlan, KeywordPlan, RankedHit
from .fusion import DEFAULT_RRF_K, rrf, weighted

if TYPE_CHECKING:
    from ..engine.search import Filters
    from ..engine.store import Engine, Snapshot

MODES = ("dense", "keyword", "hybrid")
#: What ``mode=None`` (the default of ``Memory.search``) means, when tantivy is installed.
#: Measured with benchmarks/bench_quality.py (all-MiniLM-L6-v2, nDCG@10, RRF k=60):
#: SciFact dense 0.648, keyword 0.686, hybrid 0.711; Cranfield 0.374, 0.359, 0.411;
#: CISI 0.426, 0.314, 0.408. Hybrid is best on two of three and on average (0.510 against
#: 0.483 dense); on CISI, where BM25 is 0.11 below dense, equal-weight RRF lands between them.
#: The measurement favours "hybrid"; the default stays "dense" until the rest of the store
#: treats ``keyword/`` as a derived directory (tests/test_corruption.py lists ``index/`` only),
#: because a hybrid default writes a tantivy index into every store searched by text.
DEFAULT_MODE = "dense"
FUSIONS = ("rrf", "weighted")
#: Candidates taken from each half before fusion (at least ``k``).
DEFAULT_DEPTH = 100

Ranked = list[tuple[int, float]]


def resolve_mode(mode: str | None) -> str:
    """The mode a search runs in: ``mode`` itself, or for ``None`` the measured default
    (:data:`DEFAULT_MODE`), falling back to ``"dense"`` when tantivy is not installed."""
    if mode is not None:
        return mode
    from .index import available

    return DEFAULT_MODE if available() else "dense"


def check_options(mode: Any, fusion: Any, rrf_k: Any, dense_weight: Any, depth: Any) -> None:
    """Validate the search-mode options (raises ``InvalidInputError``)."""
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if fusion not in FUSIONS:
        raise InvalidInputError(f"fusion must be one of {', '.join(FUSIONS)}; got {fusion!r}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 1:
        raise InvalidInputError("rrf_k must be a positive int")
    if isinstance(dense_weight, bool) or not isinstance(dense_weight, int | float) or not 0 <= dense_weight <= 1:
        raise InvalidInputError("dense_weight must be a number in [0, 1]")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise InvalidInputError("depth must be a positive int")


def _ranked(engine: Engine, res: Ranked, n: int) -> list[RankedHit]:
    t = engine.table
    return [
        RankedHit(atom_id=t.atom_ids[int(t.atom_code[r])], version_id=int(t.version_id[r]), rank=i + 1, score=s)
        for i, (r, s) in enumerate(res[:n])
    ]


def run(
    engine: Engine,
    snap: Snapshot,
    queries: list[Any],
    k: int,
    f: Filters,
    *,
    mode: str,
    fusion: str = "rrf",
    rrf_k: int = DEFAULT_RRF_K,
    dense_weight: float = 0.5,
    depth: int | None = None,
) -> tuple[list[Ranked], list[BucketPlan], int, dict[str, Any]]:
    """Keyword or hybrid search for a batch of queries.

    Returns the ``(row, score)`` lists per query, the dense half's bucket plan, the number of
    rows the filters select, and extra :class:`~aether.models.SearchPlan` fields (``keyword``,
    ``fusion``, ``notes``) describing the first query.
    """
    from ..engine import search as dense_search
    from .index import get_index

    check_options(mode, fusion, rrf_k, dense_weight, depth)
    texts = [q if isinstance(q, str) else None for q in queries]
    if mode == "keyword" and any(t is None for t in texts):
        raise InvalidInputError("keyword search needs text queries, not vectors")
    for t in texts:
        if t is not None and not t.strip():
            raise InvalidInputError("query text is empty")
    idx = get_index(engine)
    mask = engine.mask(snap, as_of=f.as_of, valid_at=f.valid_at, valid_during=f.valid_during, tags=f.tags)
    selected = int(mask.sum())
    dedupe = f.valid_at is None  # as in dense search: a valid-time range can see several versions
    notes: list[str] = []
    extra: dict[str, Any] = {"notes": notes}
    results: list[Ranked] = []
    info: dict[str, Any]
    if mode == "keyword":
        for i, text in enumerate(texts):
            assert text is not None
            res, info = idx.search(engine, snap, text, mask, k, dedupe=dedupe)
            results.append(res)
            if i == 0:
                extra["keyword"] = KeywordPlan(**info, hits=_ranked(engine, res, k))
        buckets = [BucketPlan(bucket="keyword", rows=snap.n, selected=selected, strategy="bm25")]
        return results, buckets, selected, extra

    depth_ = max(k, depth if depth is not None else DEFAULT_DEPTH)
    qvecs = engine.query_vectors(queries)
    dense_res, buckets, _ = dense_search.plan_and_search(engine, snap, qvecs, depth_, f)
    key = (lambda r: int(engine.table.atom_code[r])) if dedupe else None
    for i, text in enumerate(texts):
        dres = dense_res[i]
        if text is None:
            kres: Ranked = []
            info = {"strategy": "none"}
            if i == 0:
                notes.append("vector query: no keyword half; hybrid returns the dense hits and scores")
        else:
            kres, info = idx.search(engine, snap, text, mask, depth_, dedupe=dedupe)
        if text is None:
            fused = dres[:k]  # nothing to fuse: the dense hits, with their cosine scores
        elif fusion == "rrf":
            fused = rrf([dres, kres], k, rrf_k=rrf_k, key=key)
        else:
            fused = _weighted(engine, idx, qvecs[i], text, dres, kres, k, dense_weight, dedupe)
        results.append(fused)
        if i == 0:
            extra["keyword"] = KeywordPlan(**info, hits=_ranked(engine, kres, k))
            extra["fusion"] = FusionPlan(
                method=fusion, rrf_k=rrf_k, dense_weight=float(dense_weight), depth=depth_,
                dense_hits=_ranked(engine, dres, k), keyword_hits=_ranked(engine, kres, k),
            )
    return results, buckets, selected, extra


def _weighted(
    engine: Engine, idx: Any, qvec: np.ndarray, text: str | None, dres: Ranked, kres: Ranked, k: int,
    dense_weight: float, dedupe: bool,
) -> Ranked:
    """Weighted fusion over the union of both halves' candidates, each scored by both halves.

    A candidate found by one half only gets its exact score from the other half (cosine from
    its vector; BM25 through the keyword index), not a made-up zero.
    """
    from ..engine.store import topk_rows

    rows = np.asarray(sorted({r for r, _ in dres} | {r for r, _ in kres}), dtype=np.int64)
    if len(rows) == 0:
        return []
    dense = engine.table.vectors[rows] @ qvec
    kw = idx.scores_for(engine, text, rows) if text is not None else np.zeros(len(rows))
    fused = weighted(rows, dense, kw, dense_weight=dense_weight)
    return topk_rows(rows, fused, k, engine.table.atom_code if dedupe else None)
