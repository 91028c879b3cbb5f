"""The read path's planner: time and tag masks, then a top-k scan of the selected rows.

This is the exact planner (one flat scan over the selected rows). The bucketed ANN
planner replaces ``plan_and_search`` while keeping its signature.
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
    mask = engine.mask(snap, as_of=f.as_of, valid_at=f.valid_at, valid_during=f.valid_during, tags=f.tags)
    rows = np.flatnonzero(mask)
    dedupe = f.valid_at is None  # a valid-time range can see several versions of one atom
    results = [engine.exact_topk(q, rows, k, dedupe=dedupe) for q in qvecs]
    plan = [BucketPlan(bucket="all", rows=snap.n, selected=len(rows), strategy="exact")]
    return results, plan, len(rows)
