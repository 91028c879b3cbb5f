"""One index partition: the rows of a run of consecutive buckets, ordered by ``valid_from``, and their FAISS index.

Inside a partition, row ``i`` of the FAISS index is the ``i``-th row in ``(valid_from, row)``
order. A valid-time bound is then a contiguous range of positions (binary search),
an exact scan is a matrix product over a slice of the index's own vector storage, and
ANN search can take an ``IDSelectorRange``. Rows whose valid interval is much longer
than the partition's typical one (the ``exceptions``) are checked separately, so the
lower end of the range can be tightened too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from ..errors import InvalidVectorError
from .recipes import Tier

#: Quantile of valid-interval lengths below which a row is "regular" (the rest are exceptions).
_REACH_QUANTILE = 0.95
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


def _sat(x: int) -> int:
    return max(_I64_MIN, min(_I64_MAX, x))


@dataclass
class Partition:
    """A sealed, immutable partition (only ``tx_to`` is refreshed when versions are closed)."""

    klo: int
    khi: int
    label: str
    rows: np.ndarray  # int64 table rows in (valid_from, row) order
    vf: np.ndarray
    vt: np.ndarray
    txf: np.ndarray
    txto: np.ndarray  # copy of the table's tx_to, kept current by the derived index
    exc: np.ndarray  # sorted local positions of rows longer than ``reach``
    reach: int
    max_vt: int
    min_txf: int
    max_txf: int
    tier: Tier
    index: Any  # faiss.Index whose vectors are stored in local order
    vecs: np.ndarray  # (m, dim) float32, a view of the index's storage (or its own copy)
    #: For a run (the sealed tail, not yet merged into the bucket partitions): its table rows ``[start, end)``.
    run: tuple[int, int] | None = None

    @property
    def m(self) -> int:
        return len(self.rows)

    def bounds(self, a: int, b: int) -> tuple[int, int]:
        """Local ``[lo, hi)`` that holds every regular row with ``valid_from < b`` and ``valid_to > a``."""
        hi = int(np.searchsorted(self.vf, b, "left"))
        lo = int(np.searchsorted(self.vf, _sat(a - self.reach), "right")) if self.reach < _I64_MAX else 0
        return min(lo, hi), hi


def order_rows(rows: np.ndarray, valid_from: np.ndarray) -> np.ndarray:
    """``rows`` sorted by ``(valid_from, row)``."""
    return rows[np.lexsort((rows, valid_from[rows]))]


def vectors_view(index: Any, m: int, dim: int) -> np.ndarray | None:
    """Zero-copy view of a flat or HNSW-flat index's vectors, or ``None`` for other index types."""
    target = index
    if isinstance(index, faiss.IndexHNSW):
        target = faiss.downcast_index(index.storage)
    if isinstance(target, faiss.IndexFlat) and target.ntotal == m:
        if m == 0:
            return np.zeros((0, dim), np.float32)
        view: np.ndarray = faiss.rev_swig_ptr(target.get_xb(), m * dim).reshape(m, dim)
        view.flags.writeable = False  # may be a read-only file mapping (IO_FLAG_MMAP_IFC)
        return view
    return None


def factory_for(tier: Tier, m: int) -> str:
    """The tier's factory string for ``m`` rows: ``{nlist}`` becomes ``m / rows_per_list`` inverted
    lists (``build`` settings ``rows_per_list``, default 512, and ``max_nlist``, default 1024; at least 4)."""
    if "{nlist}" not in tier.factory:
        return tier.factory
    per = max(1, int(tier.build.get("rows_per_list", 512)))
    nlist = max(4, min(int(tier.build.get("max_nlist", 1024)), m // per))
    return tier.factory.replace("{nlist}", str(nlist))


def new_index(tier: Tier, dim: int, vecs: np.ndarray) -> Any:
    """Build the tier's FAISS index (inner product on unit vectors = cosine) over ``vecs``."""
    index: Any = faiss.index_factory(dim, factory_for(tier, len(vecs)), faiss.METRIC_INNER_PRODUCT)
    if tier.kind == "hnsw":
        index.hnsw.efConstruction = int(tier.build.get("efConstruction", 40))
        index.hnsw.efSearch = int(tier.search.get("efSearch", 64))
    elif tier.kind == "ivf":
        if not index.is_trained:
            # k-means on a small sample with few iterations (FAISS defaults: 256 points a list, 25
            # iterations): a run must be searchable within seconds of its commit; recall is kept by
            # the planner's nprobe (tests/test_tail.py checks it against exact search).
            index.cp.niter = int(tier.build.get("niter", 10))
            index.cp.max_points_per_centroid = int(tier.build.get("max_points_per_centroid", 48))
            index.cp.min_points_per_centroid = 1
            index.train(vecs)
        index.nprobe = int(tier.search.get("nprobe", 8))
    index.add(vecs)
    return index


@dataclass(frozen=True)
class PartitionSpec:
    """One partition of a build plan: its bucket range, label, size tier and table rows in index order.

    Produced by :func:`aether.index.plan_partitions`; the FAISS index of each spec is built by
    :func:`build_index_bytes` (anywhere: this process, a worker process, a Ray task) and the
    results are written by :func:`aether.index.install_partitions`.
    """

    klo: int
    khi: int
    label: str
    rows: np.ndarray  # int64 table rows in (valid_from, row) order: row i of the index
    tier: Tier

    @property
    def m(self) -> int:
        return len(self.rows)


def build_index_bytes(vectors: np.ndarray, tier: Tier, *, threads: int | None = 1) -> np.ndarray:
    """Build one partition's FAISS index over ``vectors`` and return its serialisation.

    A pure function of its arguments, meant to run in worker processes and Ray tasks: the
    result is ``faiss.serialize_index`` output (a 1-D ``uint8`` array, FAISS's own format,
    no pickle), which :func:`aether.index.install_partitions` writes to disk.

    Parameters
    ----------
    vectors
        ``(m, dim)`` float32 unit rows, in the partition's index order.
    tier
        The size tier (factory string, build and search parameters) the partition gets.
    threads
        OpenMP threads for the build. The default ``1`` makes HNSW builds deterministic: the same
        vectors in the same order give byte-identical indexes on every engine and machine
        (a multi-threaded HNSW insert links nodes in a racy order). ``None``: FAISS's default.

    Returns
    -------
    numpy.ndarray
        The serialised index (``uint8``); ``faiss.deserialize_index`` reads it back.
    """
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    if vecs.ndim != 2:
        raise InvalidVectorError(f"partition vectors must be a 2-D array, not shape {vecs.shape}")
    if threads is None:
        return np.asarray(faiss.serialize_index(new_index(tier, vecs.shape[1], vecs)), np.uint8)
    # The OpenMP thread count is per calling thread (libgomp ICV): other threads of this process,
    # e.g. queries served meanwhile, keep theirs.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(threads)))
    try:
        index = new_index(tier, vecs.shape[1], vecs)
    finally:
        faiss.omp_set_num_threads(before)
    return np.asarray(faiss.serialize_index(index), np.uint8)


def make_partition(
    *,
    klo: int,
    khi: int,
    label: str,
    rows: np.ndarray,
    table: Any,
    tier: Tier,
    index: Any | None = None,
    run: tuple[int, int] | None = None,
) -> Partition:
    """Assemble a partition from ordered ``rows``; builds the FAISS index unless one is given."""
    m = len(rows)
    vf = table.valid_from[rows].copy()
    vt = table.valid_to[rows].copy()
    txf = table.tx_from[rows].copy()
    if index is None:
        index = new_index(tier, table.dim, np.ascontiguousarray(table.vectors[rows]))
    vecs = vectors_view(index, m, table.dim)
    if vecs is None:  # IVF and other non-flat storage: keep our own copy for exact scans
        vecs = np.ascontiguousarray(table.vectors[rows])
    reach = _I64_MAX
    exc = np.zeros(0, np.int64)
    if m:
        dur = vt.astype(np.float64) - vf.astype(np.float64)
        q = float(np.quantile(dur, _REACH_QUANTILE))
        if q < 2.0**62:
            reach = int(q)
            exc = np.flatnonzero((vt - reach) > vf).astype(np.int64)
    return Partition(
        klo=klo,
        khi=khi,
        label=label,
        rows=rows,
        vf=vf,
        vt=vt,
        txf=txf,
        txto=table.tx_to[rows].copy(),
        exc=exc,
        reach=reach,
        max_vt=int(vt.max()) if m else _I64_MIN,
        min_txf=int(txf.min()) if m else _I64_MAX,
        max_txf=int(txf.max()) if m else _I64_MIN,
        tier=tier,
        index=index,
        vecs=vecs,
        run=run,
    )
