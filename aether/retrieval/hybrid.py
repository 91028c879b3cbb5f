"""Keyword and hybrid search under the same bitemporal filters as dense search, and the
agent-memory re-ranking (:mod:`aether.retrieval.ranking`) for every mode.

Both halves use the engine's row mask for the query's ``valid_at`` / ``valid_during``,
``as_of`` and ``tags`` (``Engine.mask``), so a row is visible to the keyword half exactly
when it is visible to the dense half. The dense half goes through the normal dense planner
(``engine.search.plan_and_search``), so it uses whatever plan (exact or ANN) dense search uses.
Re-ranking (recency / importance blend, MMR) only reorders those filtered candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..models import BucketPlan, FusedHit, FusionPlan, KeywordPlan, RankedHit
from . import ranking as _ranking
from .fusion import ADAPTIVE_BASE, DEFAULT_RRF_K, adaptive_weight, rrf, weighted

if TYPE_CHECKING:
    from ..engine.query import Filters, Snapshot
    from ..engine.store import Engine

MODES = ("dense", "keyword", "hybrid")
#: What ``mode=None`` (the default of ``Memory.search``) means when tantivy is installed:
#: hybrid search with :data:`DEFAULT_FUSION`. Measured with ``benchmarks/fusion_study.py`` and
#: ``benchmarks/bench_quality.py`` (all-MiniLM-L6-v2, nDCG@10). "adaptive (held out)": each
#: collection scored with the constants chosen on the other two (leave-one-collection-out);
#: "default": the shipped constants (base 0.6, evidence share 0.5; see ``fusion.ADAPTIVE_BASE``):
#:
#: ==========  =====  =======  =====  ====================  =======
#: collection  dense  keyword  RRF    adaptive (held out)   default
#: ==========  =====  =======  =====  ====================  =======
#: SciFact     0.648  0.686    0.711  0.732                 0.738
#: Cranfield   0.374  0.359    0.411  0.411                 0.410
#: CISI        0.426  0.315    0.410  0.434                 0.434
#: mean        0.483  0.453    0.511  0.526                 0.527
#: ==========  =====  =======  =====  ====================  =======
#:
#: (``k=100`` searches, 100 candidates a side; as ``k=10`` searches, 30 a side: 0.735 / 0.409 /
#: 0.444, mean 0.529.)
#:
#: Held out, adaptive fusion is at least the better single half on every collection and 0.030
#: above the mean of the better halves (0.495); equal-weight RRF falls below dense on CISI,
#: where BM25 is 0.11 behind. On the generated temporal agent-memory set
#: (``benchmarks/bench_temporal.py``, seed 17; tag-filtered, point-in-time questions, constants
#: not fitted to it) the default is at or above dense: ``facts`` memory hit@1 0.507 / MRR@10
#: 0.645 against dense 0.490 / 0.630; ``log`` memory recall@5 0.743 / MRR@10 0.517 against 0.736 /
#: 0.518 (hit@1 0.341 against 0.352), where it was 0.310 hit@1 before the keyword half was scored
#: with the visible rows' statistics (see ``_convex``). Without tantivy
#: (``pip install 'aether[hybrid]'``) the default is dense. A hybrid default also makes a text
#: search create the store's keyword index (``<store>/keyword/``, derived data rebuilt when
#: missing or damaged).
DEFAULT_MODE = "hybrid"
FUSIONS = ("rrf", "weighted", "adaptive")
#: The fusion of the default mode (``mode=None``). An explicit ``mode="hybrid"`` keeps RRF as its
#: default fusion, as before.
DEFAULT_FUSION = "adaptive"
#: Candidates taken for re-ranking (at least ``k``), and the most each half gives to fusion
#: when ``depth`` is not given (see :func:`candidate_depth`).
DEFAULT_DEPTH = 100
#: The fewest candidates a half gives to fusion when ``depth`` is not given.
MIN_DEPTH = 30


def candidate_depth(k: int, selected: int) -> int:
    """Candidates each half gives to fusion for a top-``k`` search over ``selected`` visible rows,
    when ``depth`` is not given: ``3k`` within ``[MIN_DEPTH, DEFAULT_DEPTH]`` (never below ``k``),
    or every visible row when there are at most :data:`DEFAULT_DEPTH`.

    Fusion quality does not need a hundred candidates for a top 10: nDCG@10 with 30 a side was
    within 0.003 of 100 a side on SciFact, Cranfield and CISI (CISI +0.007), and each half costs
    about half as much (HNSW's efSearch and tantivy's top-N grow with it). A small visible set is
    taken whole, so that adaptive fusion sees every visible matching row (see ``_convex``).
    """
    d = max(k, min(DEFAULT_DEPTH, max(MIN_DEPTH, 3 * k)))
    return max(d, selected) if selected <= DEFAULT_DEPTH else d

Ranked = list[tuple[int, float]]


def resolve_mode(mode: str | None, fusion: str | None = None) -> tuple[str, str]:
    """The ``(mode, fusion)`` a search runs with.

    ``mode=None`` is the measured default (:data:`DEFAULT_MODE` with :data:`DEFAULT_FUSION`,
    unless ``fusion`` is given), falling back to ``"dense"`` when tantivy is not installed.
    An explicit mode with ``fusion=None`` fuses with RRF.
    """
    if mode is not None:
        return mode, fusion if fusion is not None else "rrf"
    from ..keyword.index import available

    if not available():
        return "dense", fusion if fusion is not None else "rrf"
    return DEFAULT_MODE, fusion if fusion is not None else DEFAULT_FUSION


def check_options(mode: Any, fusion: Any, rrf_k: Any, dense_weight: Any, depth: Any) -> None:
    """Validate the search-mode options (raises ``InvalidInputError``)."""
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if fusion not in FUSIONS:
        raise InvalidInputError(f"fusion must be one of {', '.join(FUSIONS)}; got {fusion!r}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 1:
        raise InvalidInputError("rrf_k must be a positive int")
    if dense_weight is not None and (
        isinstance(dense_weight, bool) or not isinstance(dense_weight, int | float) or not 0 <= dense_weight <= 1
    ):
        raise InvalidInputError("dense_weight must be a number in [0, 1]")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise InvalidInputError("depth must be a positive int")


#: The ranking keyword arguments of ``Memory.search`` (passed through to :func:`run`).
RANKING_OPTIONS = ("ranking", "relevance", "recency", "importance", "half_life", "recency_axis", "diversity")


def wants_run(mode: str, options: dict[str, Any]) -> bool:
    """Whether a search must go through :func:`run` (keyword, hybrid, or any re-ranking option)."""
    return mode != "dense" or any(options.get(o) is not None for o in RANKING_OPTIONS)


def _ranked(engine: Engine, res: Ranked, n: int) -> list[RankedHit]:
    t = engine.table
    return [
        RankedHit(atom_id=t.atom_ids[int(t.atom_code[r])], version_id=int(t.version_id[r]), rank=i + 1, score=s)
        for i, (r, s) in enumerate(res[:n])
    ]


def _ref_time(engine: Engine, f: Filters) -> int:
    """The recency reference: ``valid_at``, or for a valid-time range its end clipped to now."""
    if f.valid_at is not None:
        return int(f.valid_at)
    now = int(engine.clock())
    if f.valid_during is not None:
        return min(int(f.valid_during[1]), now)
    return now


def run(
    engine: Engine,
    snap: Snapshot,
    queries: list[Any],
    k: int,
    f: Filters,
    *,
    mode: str,
    fusion: str | None = "rrf",
    rrf_k: int = DEFAULT_RRF_K,
    dense_weight: float | None = None,
    depth: int | None = None,
    plan: bool = True,
    **rank_opts: Any,
) -> tuple[list[Ranked], list[BucketPlan], int, dict[str, Any]]:
    """Dense, keyword or hybrid search for a batch of queries, then the optional re-ranking.

    ``rank_opts`` are :data:`RANKING_OPTIONS` (see :func:`aether.retrieval.ranking.resolve`).
    Returns the ``(row, score)`` lists per query, the dense half's bucket plan, the number of
    rows the filters select, and extra :class:`~aether.models.SearchPlan` fields (``keyword``,
    ``fusion``, ``notes``) describing the first query (with ``plan=False`` no ``keyword`` and
    ``fusion`` fields: a plain search does not build them).
    """
    from ..engine import search as dense_search

    fusion = fusion if fusion is not None else "rrf"
    check_options(mode, fusion, rrf_k, dense_weight, depth)
    unknown = set(rank_opts) - set(RANKING_OPTIONS)
    if unknown:
        raise InvalidInputError(f"unknown search option(s): {', '.join(sorted(unknown))}")
    rk = _ranking.resolve(**rank_opts)
    texts = [q if isinstance(q, str) else None for q in queries]
    if mode == "keyword" and any(t is None for t in texts):
        raise InvalidInputError("keyword search needs text queries, not vectors")
    for t in texts:
        if t is not None and not t.strip():
            raise InvalidInputError("query text is empty")
    dedupe = f.valid_at is None  # as in dense search: a valid-time range can see several versions
    notes: list[str] = []
    extra: dict[str, Any] = {"notes": notes}
    depth_ = max(k, depth if depth is not None else DEFAULT_DEPTH)
    fetch = depth_ if rk.active else k  # re-ranking looks deeper than k
    auto_depth = depth is None and not rk.active  # fusion depth from k and the visible rows

    if mode == "hybrid" and all(t is None for t in texts):
        # Nothing to fuse: exactly the dense search (same k, so the same plan as mode="dense").
        notes.append("vector query: no keyword half; hybrid returns the dense hits and scores")
        mode = "dense"
    if mode == "dense":
        qvecs = engine.query_vectors(queries)
        results, buckets, selected = dense_search.plan_and_search(engine, snap, qvecs, fetch, f)
    else:
        results, buckets, selected = _lexical(
            engine, snap, queries, texts, k if not rk.active else fetch, f, mode=mode, fusion=fusion,
            rrf_k=rrf_k, dense_weight=dense_weight, depth_=depth_, dedupe=dedupe, extra=extra, plan=plan,
            auto_depth=auto_depth,
        )
    if rk.active:
        ref = _ref_time(engine, f) if rk.axis == "valid" else int(f.as_of)
        results = [_ranking.rerank(engine, res, k, rk, ref) for res in results]
        notes.append(
            f"re-ranked {fetch} filtered candidates: relevance {rk.relevance:g}, recency {rk.recency:g} "
            f"({rk.axis} time, half-life {rk.half_life}), importance {rk.importance:g}"
            + (f", MMR lambda {rk.diversity:g}" if rk.diversity is not None else "")
        )
    halves = extra.pop("_halves", None)
    fp = extra.get("fusion")
    if isinstance(fp, FusionPlan) and halves is not None and results:
        fp.hits = _fused_hits(engine, results[0], *halves)
    return results, buckets, selected, extra


def _lexical(
    engine: Engine, snap: Snapshot, queries: list[Any], texts: list[str | None], k: int, f: Filters, *,
    mode: str, fusion: str, rrf_k: int, dense_weight: float | None, depth_: int, dedupe: bool,
    extra: dict[str, Any], plan: bool = True, auto_depth: bool = False,
) -> tuple[list[Ranked], list[BucketPlan], int]:
    from ..engine import search as dense_search
    from ..keyword.index import get_index

    notes: list[str] = extra["notes"]
    idx = get_index(engine)
    mask = engine.mask(snap, as_of=f.as_of, valid_at=f.valid_at, valid_during=f.valid_during, tags=f.tags)
    selected = int(mask.sum())
    results: list[Ranked] = []
    info: dict[str, Any]
    if mode == "keyword":
        for i, text in enumerate(texts):
            assert text is not None
            res, info = idx.search(engine, snap, text, mask, k, dedupe=dedupe)
            results.append(res)
            if i == 0 and plan:
                extra["keyword"] = KeywordPlan(**info, hits=_ranked(engine, res, k))
        return results, [BucketPlan(bucket="keyword", rows=snap.n, selected=selected, strategy="bm25")], selected

    if auto_depth:
        depth_ = candidate_depth(k, selected)
    qvecs = engine.query_vectors(queries)
    # One half after the other in this thread: at a store's usual sizes each half takes well under
    # a millisecond, less than handing one to a worker thread costs (a thread pool ran hybrid at
    # several times dense latency, worse on a busy machine).
    dense_res, buckets, _ = dense_search.plan_and_search(engine, snap, qvecs, depth_, f)
    kw_res = [idx.search(engine, snap, text, mask, depth_, dedupe=dedupe) if text is not None
              else ([], {"strategy": "none"}) for text in texts]
    key = (lambda r: int(engine.table.atom_code[r])) if dedupe else None
    for i, text in enumerate(texts):
        dres = dense_res[i]
        w_used: float | None = None
        known: dict[int, tuple[float, float]] | None = None
        kres: Ranked
        kres, info = kw_res[i]
        if text is None and i == 0:
            notes.append("vector query: no keyword half; hybrid returns the dense hits and scores")
        if text is None:
            fused = dres[:k]  # nothing to fuse: the dense hits, with their cosine scores
        elif fusion == "rrf":
            fused = rrf([dres, kres], k, rrf_k=rrf_k, key=key)
        else:
            # Adaptive fusion under a filter whose keyword ranking ended before the depth: the
            # visible rows are a small sub-collection, scored with its own term statistics (not
            # over a valid-time range, whose one-version-per-atom lists leave other versions out).
            visible = selected if (fusion == "adaptive" and not dedupe and selected < snap.n
                                   and (len(kres) < depth_ or selected <= depth_)) else None
            if fusion == "weighted":
                w_used = 0.5 if dense_weight is None else float(dense_weight)
            else:
                w_used = ADAPTIVE_BASE if dense_weight is None else float(dense_weight)
            fused, known, w_used = _convex(engine, idx, qvecs[i], text, dres, kres, k, w_used, dedupe, depth_,
                                           adaptive=fusion == "adaptive", visible=visible,
                                           pad_to=min(DEFAULT_DEPTH, selected))
        results.append(fused)
        if i == 0 and plan:
            extra["keyword"] = KeywordPlan(**info, hits=_ranked(engine, kres, k))
            base = dense_weight if dense_weight is not None else (ADAPTIVE_BASE if fusion == "adaptive" else 0.5)
            fp = FusionPlan(
                method=fusion, rrf_k=rrf_k, dense_weight=float(base), depth=depth_,
                dense_hits=_ranked(engine, dres, k), keyword_hits=_ranked(engine, kres, k),
                effective_dense_weight=w_used,
            )
            extra["fusion"] = fp
            extra["_halves"] = (dres, kres, qvecs[i], text, idx, known)
    return results, buckets, selected


def _fused_hits(
    engine: Engine, fused: Ranked, dres: Ranked, kres: Ranked, qvec: np.ndarray, text: str | None, idx: Any,
    known: dict[int, tuple[float, float]] | None,
) -> list[FusedHit]:
    """Each returned hit with both halves' rank (``None``: beyond the half's ``depth`` candidates)
    and score (the cosine; BM25, 0 where no term matched, ``None`` for a vector query)."""
    drank = {r: i + 1 for i, (r, _) in enumerate(dres)}
    krank = {r: i + 1 for i, (r, _) in enumerate(kres)}
    t = engine.table
    rows = np.asarray([r for r, _ in fused], np.int64)
    if known is not None and all(int(r) in known for r in rows):  # both scores from the fusion itself
        cos = np.asarray([known[int(r)][0] for r in rows])
        bm: np.ndarray | None = np.asarray([known[int(r)][1] for r in rows])
    else:
        cos = t.vectors[rows] @ qvec if len(rows) else np.zeros(0)
        bm = idx.scores_for(engine, text, rows) if text is not None and len(rows) else None
    return [
        FusedHit(
            atom_id=t.atom_ids[int(t.atom_code[r])], version_id=int(t.version_id[r]), rank=i + 1, score=s,
            dense_rank=drank.get(r), dense_score=float(cos[i]),
            keyword_rank=krank.get(r), keyword_score=float(bm[i]) if bm is not None else None,
        )
        for i, (r, s) in enumerate(fused)
    ]


def _convex(
    engine: Engine, idx: Any, qvec: np.ndarray, text: str | None, dres: Ranked, kres: Ranked, k: int,
    dense_weight: float, dedupe: bool, depth: int, *, adaptive: bool = False, visible: int | None = None,
    pad_to: int | None = None,
) -> tuple[Ranked, dict[int, tuple[float, float]], float]:
    """Convex fusion over the union of both halves' candidates, each scored by both halves.

    A candidate found by one half only gets its exact score from the other half (cosine from
    its vector; BM25 through the keyword index), not a made-up zero; both halves are min-max
    scaled over the union, so the fused score lies in [0, 1]. The BM25 of the keyword half's own
    candidates is already known; when that half returned fewer than ``depth`` rows its ranking
    was exhausted, so every other row matches no term (BM25 0) and the index is not asked again
    (unless hits are one version per atom: another version of a hit may match).
    With ``adaptive`` the dense weight is the per-query :func:`~.fusion.adaptive_weight` around
    ``dense_weight``. ``visible`` (the number of rows the filters select) says the keyword half's
    ranking under the filters ended before ``depth``, so the union holds every visible row that
    matches a term: the keyword signal is then BM25 with the visible rows' own term statistics
    (``KeywordIndex.visible_scores``), and the keyword weight shrinks by the share of the
    store-wide BM25 that survives them. Under a person's tag filter the person's name matches
    every visible row: store-wide it is a rare, heavy term that ranks those rows by length alone;
    over the visible rows it weighs nothing, and a query with no other matching term falls back
    to the dense half.
    Also returns ``row -> (cosine, bm25)`` of the union (store-wide BM25) and the dense weight used.
    """
    from ..engine.query import topk_rows

    rows = np.asarray(sorted({r for r, _ in dres} | {r for r, _ in kres}), dtype=np.int64)
    if len(rows) == 0:
        return [], {}, dense_weight
    dense = engine.table.vectors[rows] @ qvec
    kmap = dict(kres)
    kw = np.asarray([kmap.get(int(r), 0.0) for r in rows], np.float64)
    signal = kw
    w = dense_weight
    if text is not None and visible is not None:
        kw, signal = idx.visible_scores(engine, text, rows, visible)
        own = np.asarray([signal[i] for i, r in enumerate(rows) if int(r) in kmap])
        w = adaptive_weight([s for _, s in dres], np.sort(own)[::-1], base=dense_weight, pad_to=pad_to)
        top = float(kw.max()) if len(kw) else 0.0
        kept = min(1.0, float(signal.max()) / top) if top > 0 else 0.0
        w = 1.0 - (1.0 - w) * kept
    else:
        # With one version per atom (dedupe) another version of a keyword hit may still match a term.
        if text is not None and (len(kres) >= depth or dedupe):
            other = np.asarray([i for i, r in enumerate(rows) if int(r) not in kmap], np.int64)
            if len(other):
                kw[other] = idx.scores_for(engine, text, rows[other])
        if adaptive:
            w = adaptive_weight([s for _, s in dres], [s for _, s in kres], base=dense_weight, pad_to=pad_to)
    fused = weighted(rows, dense, signal, dense_weight=w)
    known = {int(r): (float(d), float(b)) for r, d, b in zip(rows, dense, kw, strict=True)}
    return topk_rows(rows, fused, k, engine.table.atom_code if dedupe else None), known, w
