"""The read path's entry point: hand a resolved query to the planner.

With a :class:`~aether.index.BucketedIndex` attached (the default), the bucketed planner
of ``aether.index.planner`` runs: time pruning, vectorised masks, exact scan or filtered
ANN per partition, merged top-k. Without one, every selected row is scanned exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models import BucketPlan

if TYPE_CHECKING:
    from .store import Engine, Snapshot


@dataclass
class Filters:
    """A resolved query filter (all times in microseconds)."""

    as_of: int
    valid_at: int | None
    valid_during: tuple[int, int] | None
    tags: dict[str, Any] | None


def plan_and_search(
    engine: Engine, snap: Snapshot, qvecs: np.ndarray, k: int, f: Filters
) -> tuple[list[list[tuple[int, float]]], list[BucketPlan], int]:
    """Top-k (row, score) lists per query, the per-bucket plan, and the number of selected rows."""
    from ..index import find_index
    from ..index.planner import search

    idx = find_index(engine)
    if idx is not None:
        st = idx.state
        if st.table is not engine.table:  # the engine reloaded its table (refresh): follow it
            with engine._wlock:
                idx.on_open(engine)
            st = idx.state
        return search(engine, st, snap, qvecs, k, f, idx.recipe.planner)
    return exact_search(engine, snap, qvecs, k, f)


def exact_search(
    engine: Engine, snap: Snapshot, qvecs: np.ndarray, k: int, f: Filters
) -> tuple[list[list[tuple[int, float]]], list[BucketPlan], int]:
    """The reference planner: one exact scan over every selected row."""
    mask = engine.mask(snap, as_of=f.as_of, valid_at=f.valid_at, valid_during=f.valid_during, tags=f.tags)
    rows = np.flatnonzero(mask)
    dedupe = f.valid_at is None  # a valid-time range can see several versions of one atom
    results = [engine.exact_topk(q, rows, k, dedupe=dedupe) for q in qvecs]
    plan = [BucketPlan(bucket="all", rows=snap.n, selected=len(rows), strategy="exact")]
    return results, plan, len(rows)
