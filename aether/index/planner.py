"""The recall-preserving filtered-search planner (DESIGN.md, "The read path").

Per partition: prune by time bounds; find the candidate position range by binary search
on ``valid_from``; build the row mask over that range with vectorised numpy; then scan
the selected rows exactly when they are few (or the partition has no ANN index), else
search the partition's ANN index with a FAISS ``IDSelector`` and ``efSearch`` / ``nprobe``
raised as the selected fraction falls. The tail (unsealed rows) is scanned exactly.
Per-partition top-k lists are merged (one best version per atom when deduplicating).

Batches (:func:`search` with many queries, ``Memory.search_many``) share everything that does
not depend on the query: one mask and one selector per partition, one FAISS call per partition
for all queries (HNSW / IVF), one matrix product and one vectorised ``argpartition`` for the
exact scans. Their thread count comes from :func:`batch_threads`.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from ..engine.query import topk_rows
from ..models import BucketPlan
from .partition import Partition
from .recipes import PlannerParams

if TYPE_CHECKING:
    from ..engine.query import Filters, Snapshot
    from ..engine.store import Engine
    from .bucketed import IndexState

_NEG_INF = -(2**63)
_POS_INF = 2**63 - 1

Cand = tuple[np.ndarray, np.ndarray]  # (rows, scores)


@dataclass
class _Ctx:
    engine: Engine
    f: Filters
    a: int  # rows need valid_to > a
    b: int  # ... and valid_from < b
    tags: np.ndarray | None  # global tag mask over [0, snap.n), or None
    dead: np.ndarray | None  # the table's dead column when any row is dead
    dedupe: bool
    k: int
    params: PlannerParams


def _interval(f: Filters) -> tuple[int, int]:
    if f.valid_at is not None:
        return f.valid_at, f.valid_at + 1
    if f.valid_during is not None:
        return f.valid_during
    return _NEG_INF, _POS_INF


def search(
    engine: Engine, st: IndexState, snap: Snapshot, qvecs: np.ndarray, k: int, f: Filters, params: PlannerParams
) -> tuple[list[list[tuple[int, float]]], list[BucketPlan], int]:
    """Top-k ``(row, score)`` lists per query, the per-partition plan and the number of selected rows."""
    t = engine.table
    n = snap.n
    a, b = _interval(f)
    tags = t.tag_mask(f.tags, n) if f.tags else None
    dead = t.dead if bool(t.dead[:n].any()) else None
    ctx = _Ctx(engine, f, a, b, tags, dead, f.valid_at is None, k, params)
    qvecs = np.ascontiguousarray(qvecs, np.float32)
    cands: list[list[Cand]] = [[] for _ in range(len(qvecs))]
    plans: list[BucketPlan] = []
    selected = 0
    covered = min(st.covered, n)
    # An as-of query far in the past: rows are appended in commit order, so every row the store
    # knew at ``as_of`` lies in a prefix of the table. Below ann_min_fraction of the rows the
    # partitions would all be scanned exactly (a bitmap test per row of every partition, then the
    # same products), so one exact scan of the prefix is cheaper; above it, filtered ANN wins.
    prefix = t.tx_prefix(f.as_of, n) if f.as_of < snap.last_tx else None
    if prefix is not None and not (prefix < params.ann_min_fraction * n and prefix <= params.prefix_max_rows):
        prefix = None
    # Single queries never start thread teams (see ip_rows); a batch uses batch_threads() of them.
    threads = batch_threads(len(qvecs)) if len(qvecs) >= _BLAS_MIN_QUERIES else 0
    with _thread_limit(threads) if threads else contextlib.nullcontext():
        if prefix is not None:
            plan, got = _search_tail(ctx, 0, prefix, qvecs, label="as-of prefix")
            plans.append(plan)
            selected += plan.selected
            for i, c in enumerate(got):
                cands[i].append(c)
        for p in st.partitions if prefix is None else ():
            plan, got = _search_partition(ctx, p, qvecs)
            plans.append(plan)
            selected += plan.selected
            for i, c in enumerate(got):
                cands[i].append(c)
        if n > covered and prefix is None:
            plan, got = _search_tail(ctx, covered, n, qvecs)
            plans.append(plan)
            selected += plan.selected
            for i, c in enumerate(got):
                cands[i].append(c)
    code = t.atom_code if ctx.dedupe else None
    out: list[list[tuple[int, float]]] = []
    for lists in cands:
        lists = [c for c in lists if len(c[0])]
        if not lists:
            out.append([])
            continue
        rows = np.concatenate([c[0] for c in lists])
        scores = np.concatenate([c[1] for c in lists])
        out.append(_topk(rows, scores, k, code))
    return out, plans, selected


def _topk(rows: np.ndarray, scores: np.ndarray, k: int, code: np.ndarray | None) -> list[tuple[int, float]]:
    if code is not None and len(scores) > 8 * k:
        # Deduplicating sorts its input: sort only the best 4k unless they hold fewer than k atoms.
        part = np.argpartition(-scores, 4 * k)[: 4 * k]
        top = topk_rows(rows[part], scores[part], k, code)
        if len(top) == k:
            return top
    return topk_rows(rows, scores, k, code)


def _tx_mask(ctx: _Ctx, txf: np.ndarray, txto: np.ndarray, skip_txf: bool) -> np.ndarray:
    as_of = ctx.f.as_of
    m = txto > as_of
    if not skip_txf:
        m &= txf <= as_of
    return m


def _search_partition(ctx: _Ctx, p: Partition, q: np.ndarray) -> tuple[BucketPlan, list[Cand]]:
    nq = len(q)
    f = ctx.f
    empty: list[Cand] = [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * nq
    if p.m == 0 or p.min_txf > f.as_of or int(p.vf[0]) >= ctx.b or p.max_vt <= ctx.a:
        return BucketPlan(bucket=p.label, rows=p.m, selected=0, strategy="pruned"), empty
    lo, hi = p.bounds(ctx.a, ctx.b)
    skip_txf = p.max_txf <= f.as_of
    mask = _tx_mask(ctx, p.txf[lo:hi], p.txto[lo:hi], skip_txf)
    if ctx.a > _NEG_INF:
        mask &= p.vt[lo:hi] > ctx.a
    if ctx.dead is not None or ctx.tags is not None:
        r = p.rows[lo:hi]
        if ctx.dead is not None:
            mask &= ~ctx.dead[r]
        if ctx.tags is not None:
            mask &= ctx.tags[r]
    # Exceptions (long valid intervals) that lie before the range.
    exc = p.exc[: int(np.searchsorted(p.exc, lo))]
    if len(exc):
        em = _tx_mask(ctx, p.txf[exc], p.txto[exc], skip_txf) & (p.vt[exc] > ctx.a)
        if ctx.dead is not None:
            em &= ~ctx.dead[p.rows[exc]]
        if ctx.tags is not None:
            em &= ctx.tags[p.rows[exc]]
        exc = exc[em]
    n_slice = int(np.count_nonzero(mask))
    s = n_slice + len(exc)
    params: dict[str, Any] = {"range": [lo, hi], "tier": p.tier.name}
    if s == 0:
        return BucketPlan(bucket=p.label, rows=p.m, selected=0, strategy="empty", params=params), empty
    frac = s / p.m
    pp = ctx.params
    kind = p.tier.kind
    base = int(p.tier.search.get("efSearch" if kind == "hnsw" else "nprobe", 64 if kind == "hnsw" else 8))
    kk = min(s, ctx.k * (pp.fetch_factor if ctx.dedupe else 1))
    ef = int(min(pp.ef_search_max, max(base, kk, math.ceil(base / math.sqrt(frac)))))
    # Cost model: an exact scan costs ~s row products; an HNSW search ~ef * ann_cost_per_ef of them.
    cheaper_exact = kind == "hnsw" and s <= ef * pp.ann_cost_per_ef
    if kind == "flat" or s <= pp.exact_rows or frac < pp.ann_min_fraction or cheaper_exact:
        got, how = _exact_partition(ctx, p, q, lo, hi, mask, n_slice, exc)
        params["scan"] = how
        return BucketPlan(bucket=p.label, rows=p.m, selected=s, strategy="exact", params=params), got
    # ANN with a selector: a contiguous range when the mask is full, else a bitmap.
    if n_slice == hi - lo and not len(exc):
        sel: Any = faiss.IDSelectorRange(lo, hi)
        params["selector"] = "range"
        keep: Any = None
    else:
        bits = np.zeros(p.m, np.bool_)
        bits[lo:hi] = mask
        bits[exc] = True
        keep = np.packbits(bits, bitorder="little")
        sel = faiss.IDSelectorBitmap(p.m, faiss.swig_ptr(keep))
        params["selector"] = "bitmap"
    if kind == "hnsw":
        sp: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        sp.efSearch = ef
        params["efSearch"] = ef
    else:
        nlist = int(p.index.nlist)
        nprobe = int(min(nlist, max(base, math.ceil(base / frac))))
        sp = faiss.SearchParametersIVF()
        sp.nprobe = nprobe
        params["nprobe"] = nprobe
    sp.sel = sel
    got = _ann(ctx, p, q, kk, sp, s)
    del keep
    return BucketPlan(bucket=p.label, rows=p.m, selected=s, strategy=kind, params=params), got


def _ann(ctx: _Ctx, p: Partition, q: np.ndarray, kk: int, sp: Any, s: int) -> list[Cand]:
    code = ctx.engine.table.atom_code if ctx.dedupe else None
    while True:
        scores, ids = p.index.search(q, kk, params=sp)
        out: list[Cand] = []
        short = False
        for i in range(len(q)):
            ok = ids[i] >= 0
            rows = p.rows[ids[i][ok]]
            sc = scores[i][ok]
            if code is not None and len(rows) == kk and len(np.unique(code[rows])) < ctx.k:
                short = True  # many versions of few atoms: fetch deeper so k distinct atoms survive
            out.append((rows, sc))
        if not short or kk >= s:
            return out
        kk = min(s, kk * 4)
        if hasattr(sp, "efSearch"):
            sp.efSearch = max(sp.efSearch, kk)


def _exact_partition(
    ctx: _Ctx, p: Partition, q: np.ndarray, lo: int, hi: int, mask: np.ndarray, n_slice: int, exc: np.ndarray
) -> tuple[list[Cand], str]:
    if len(q) < _BLAS_MIN_QUERIES:
        got = knn_scan(ctx, p.vecs, lo, hi, mask, n_slice, q, p.rows)
        if len(exc):  # the few long-interval rows before the range
            sc = ip_rows(p.vecs, exc, q)
            got = [(np.concatenate([r, p.rows[exc]]), np.concatenate([g, sc[i]])) for i, (r, g) in enumerate(got)]
            got = _per_query_merge(ctx, got)
        return got, "scan"
    dense = n_slice >= ctx.params.dense_slice_fraction * (hi - lo)
    if dense:
        pos = np.flatnonzero(mask)
        sc = ip_slice(p.vecs, lo, hi, q)
        if len(pos) < hi - lo:
            sc = sc[:, pos]
        pos = pos + lo
    else:
        pos = np.flatnonzero(mask) + lo
        sc = ip_rows(p.vecs, pos, q)
    if len(exc):
        pos = np.concatenate([pos, exc])
        sc = np.concatenate([sc, ip_rows(p.vecs, exc, q)], axis=1)
    rows = p.rows[pos]
    return _per_query_topk(ctx, rows, sc), "slice" if dense else "gather"


def knn_scan(
    ctx: _Ctx, vecs: np.ndarray, lo: int, hi: int, mask: np.ndarray, n_sel: int, q: np.ndarray,
    rows_of: np.ndarray | None,
) -> list[Cand]:
    """Exact top-k over the rows of ``vecs[lo:hi]`` selected by ``mask``: one sequential pass that
    skips unselected rows (FAISS's SIMD kernel with an ``IDSelectorBitmap``), no gather, no BLAS."""
    m = hi - lo
    code = ctx.engine.table.atom_code if ctx.dedupe else None
    keep = None
    sel: Any = None
    if n_sel < m:
        keep = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(m, faiss.swig_ptr(keep))
    base = vecs[lo:hi]
    kk = min(n_sel, ctx.k * (ctx.params.fetch_factor if code is not None else 1))
    while True:
        dist = np.empty((len(q), kk), np.float32)
        ids = np.empty((len(q), kk), np.int64)
        faiss.knn_inner_product(
            faiss.swig_ptr(q), faiss.swig_ptr(base), vecs.shape[1], len(q), m, kk,
            faiss.swig_ptr(dist), faiss.swig_ptr(ids), sel,
        )
        out: list[Cand] = []
        short = False
        for i in range(len(q)):
            ok = ids[i] >= 0
            pos = ids[i][ok] + lo
            rows = rows_of[pos] if rows_of is not None else pos
            if code is not None and len(rows) == kk and len(np.unique(code[rows])) < ctx.k:
                short = True
            out.append((rows, dist[i][ok]))
        if not short or kk >= n_sel:
            del keep
            return _per_query_merge(ctx, out) if code is not None else out
        kk = min(n_sel, kk * 4)


def _per_query_merge(ctx: _Ctx, cands: list[Cand]) -> list[Cand]:
    code = ctx.engine.table.atom_code if ctx.dedupe else None
    out: list[Cand] = []
    for rows, sc in cands:
        top = _topk(rows, sc, ctx.k, code)
        out.append((np.fromiter((r for r, _ in top), np.int64, len(top)),
                    np.fromiter((v for _, v in top), np.float32, len(top))))
    return out


#: Below this many queries, exact scores use FAISS's single-threaded SIMD kernels rather than BLAS:
#: a multi-threaded BLAS matrix-vector product is slow and erratic on a busy machine.
_BLAS_MIN_QUERIES = 8

#: Environment variable: the number of threads one batched search may use (overrides :func:`batch_threads`).
THREADS_ENV = "AETHER_SEARCH_THREADS"

#: A batch gets at most one thread per this many queries.
_QUERIES_PER_THREAD = 16


def batch_threads(nq: int) -> int:
    """How many FAISS (OpenMP) threads one batched HNSW / IVF search of ``nq`` queries uses:
    one per 16 queries, at most one per core, at least one; ``AETHER_SEARCH_THREADS`` overrides.

    Measured on 2 shared cores (``benchmarks/bench_batch.py``, 100 queries over 100k rows in four
    HNSW partitions): 2 threads 0.37 ms/query against 0.6 ms with 1 at load average ~1.9; only under
    heavy load (5.6) did 2 threads lose (56-72 ms against 46 ms per 100-query HNSW batch). Exact
    scans inside a batch use one BLAS thread (see :func:`_thread_limit`): there a thread team on a
    busy core cost up to 10x (100 queries x 320 rows: 4.6 ms with 2 threads against 0.27 ms).
    """
    env = os.environ.get(THREADS_ENV)
    if env:
        with contextlib.suppress(ValueError):
            return max(1, int(env))
    try:
        ncpu = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ncpu = os.cpu_count() or 1
    return max(1, min(ncpu, nq // _QUERIES_PER_THREAD))


class _BlasLimit:
    """Limit numpy's BLAS thread pool while batches run (via ``threadpoolctl``, when installed).

    Only pthreads-based BLAS libraries are touched: OpenMP-based ones (FAISS's own OpenBLAS) follow
    the calling thread's OpenMP setting already. The pool size is process-global: the first batch
    to start sets it and the last to finish restores it, so overlapping batches never leave it changed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._libs: list[Any] | None = None
        self._saved: list[tuple[Any, int]] = []

    def _find(self) -> list[Any]:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # an optional speed-up only (threadpoolctl comes with scikit-learn)
            return []
        return [
            lc for lc in ThreadpoolController().lib_controllers
            if lc.user_api == "blas" and getattr(lc, "threading_layer", None) != "openmp"
        ]

    def enter(self, n: int) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            if self._libs is None:
                self._libs = self._find()
            self._saved = [(lc, int(lc.num_threads)) for lc in self._libs]
            for lc, before in self._saved:
                if before != n:
                    lc.set_num_threads(n)

    def exit(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                for lc, before in self._saved:
                    if int(lc.num_threads) != before:
                        lc.set_num_threads(before)
                self._saved = []


_blas_limit = _BlasLimit()


@contextlib.contextmanager
def _thread_limit(n: int) -> Iterator[None]:
    """Run a batch with ``n`` FAISS OpenMP threads (set for the calling thread only: OpenMP's
    thread count is per thread, so concurrent searches and background index builds keep theirs)
    and one BLAS thread."""
    before = faiss.omp_get_max_threads()
    if n != before:  # only when needed: batches measured slower after a set even to the same count
        faiss.omp_set_num_threads(n)
    # numpy's BLAS runs single-threaded inside a batch: the products the planner hands it are at most
    # a flat partition or the tail, too small for a thread team to pay on a shared machine.
    _blas_limit.enter(1)
    try:
        yield
    finally:
        _blas_limit.exit()
        if n != before:
            faiss.omp_set_num_threads(before)


def ip_slice(vecs: np.ndarray, lo: int, hi: int, q: np.ndarray) -> np.ndarray:
    """Inner products of every query with rows ``vecs[lo:hi]``: an ``(nq, hi - lo)`` matrix
    (one row per query, so that per-query selection reads contiguous memory)."""
    m = hi - lo
    if len(q) >= _BLAS_MIN_QUERIES or m == 0:
        return q @ vecs[lo:hi].T
    out = np.empty((len(q), m), np.float32)
    base = vecs[lo:hi]
    for i in range(len(q)):
        faiss.fvec_inner_products_ny(  # type: ignore[attr-defined]
            faiss.swig_ptr(out[i]), faiss.swig_ptr(q[i]), faiss.swig_ptr(base), vecs.shape[1], m
        )
    return out


def ip_rows(vecs: np.ndarray, pos: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Inner products of every query with rows ``vecs[pos]``: ``(nq, len(pos))``.

    Single queries avoid both BLAS and ``faiss.fvec_inner_products_by_idx``: each opens an
    OpenMP/BLAS thread team, and on a loaded machine the team's barrier costs milliseconds.
    """
    if len(q) >= _BLAS_MIN_QUERIES or len(pos) == 0:
        return q @ vecs[pos].T
    return np.einsum("qj,ij->qi", q, vecs[pos])


def _per_query_topk(ctx: _Ctx, rows: np.ndarray, sc: np.ndarray) -> list[Cand]:
    """Per query, keep the best k (distinct atoms when deduplicating) of an ``(nq, len(rows))`` score matrix.

    One ``argpartition`` over the whole matrix picks every query's best ``k`` (``4k`` when
    deduplicating, like :func:`_topk`) in C; only those candidates are sorted per query.
    """
    code = ctx.engine.table.atom_code if ctx.dedupe else None
    k = ctx.k
    s = sc.shape[1]
    kk = min(s, 4 * k if code is not None else k)
    part = np.argpartition(-sc, kk - 1, axis=1)[:, :kk] if 0 < kk < s else None
    out: list[Cand] = []
    for i in range(sc.shape[0]):
        if part is None:
            top = _topk(rows, sc[i], k, code)
        else:
            top = _topk(rows[part[i]], sc[i, part[i]], k, code)
            if code is not None and len(top) < k:  # the best 4k rows hold fewer than k atoms
                top = _topk(rows, sc[i], k, code)
        out.append((np.fromiter((r for r, _ in top), np.int64, len(top)),
                    np.fromiter((v for _, v in top), np.float32, len(top))))
    return out


def _search_tail(
    ctx: _Ctx, start: int, n: int, q: np.ndarray, *, label: str = "tail"
) -> tuple[BucketPlan, list[Cand]]:
    """Exact scan of table rows ``[start, n)``: the unsealed tail, or the prefix of an as-of query."""
    from ..temporal import visible_mask

    t = ctx.engine.table
    f = ctx.f
    mask = visible_mask(
        t.valid_from[start:n], t.valid_to[start:n], t.tx_from[start:n], t.tx_to[start:n],
        as_of=f.as_of, valid_at=f.valid_at, valid_during=f.valid_during,
    )
    if ctx.dead is not None:
        mask &= ~ctx.dead[start:n]
    if ctx.tags is not None:
        mask &= ctx.tags[start:n]
    s = int(np.count_nonzero(mask))
    plan = BucketPlan(bucket=label, rows=n - start, selected=s, strategy="exact" if s else "empty")
    if s == 0:
        return plan, [(np.zeros(0, np.int64), np.zeros(0, np.float32))] * len(q)
    if len(q) < _BLAS_MIN_QUERIES:
        plan.params["scan"] = "scan"
        return plan, knn_scan(ctx, t.vectors_from(start), start, n, mask, s, q, None)
    pos = np.flatnonzero(mask)
    if s >= ctx.params.dense_slice_fraction * (n - start):
        sc = ip_slice(t.vectors_from(start), start, n, q)
        if s < n - start:
            sc = sc[:, pos]
        plan.params["scan"] = "slice"
    else:
        sc = ip_rows(t.vectors_from(start), pos + start, q)
        plan.params["scan"] = "gather"
    return plan, _per_query_topk(ctx, pos + start, sc)
