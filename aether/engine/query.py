"""Pure query helpers shared by the engine's read path and the derived indexes that answer queries.

A leaf module (numpy and ``aether.temporal`` only): ``aether.index`` and ``aether.keyword`` import
these instead of the engine itself, so that the engine core never needs to know them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..temporal import visible_mask


@dataclass(frozen=True)
class Snapshot:
    """What readers see: rows ``[0, n)`` as of transaction time ``last_tx``."""

    n: int
    last_tx: int
    last_seq: int


@dataclass
class Filters:
    """A resolved query filter (all times in microseconds)."""

    as_of: int
    valid_at: int | None
    valid_during: tuple[int, int] | None
    tags: dict[str, Any] | None


def visible_rows(
    table: Any,
    n: int,
    *,
    as_of: int,
    valid_at: int | None,
    valid_during: tuple[int, int] | None,
    tags: dict[str, Any] | None,
) -> np.ndarray:
    """Boolean mask of the rows ``[0, n)`` of a version table that a query sees (erased rows never)."""
    m = visible_mask(
        table.valid_from[:n], table.valid_to[:n], table.tx_from[:n], table.tx_to[:n],
        as_of=as_of, valid_at=valid_at, valid_during=valid_during,
    )
    m &= ~table.dead[:n]
    if tags:
        m &= table.tag_mask(tags, n)
    return m


def topk_rows(rows: np.ndarray, scores: np.ndarray, k: int, atom_code: np.ndarray | None) -> list[tuple[int, float]]:
    """Best ``k`` (row, score) pairs, highest score first; ties broken by row for determinism.

    With ``atom_code`` (the table's atom code per row) only the best version of each atom counts.
    """
    if atom_code is None:
        part = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        order = part[np.lexsort((rows[part], -scores[part]))]
        return [(int(rows[i]), float(scores[i])) for i in order]
    order = np.lexsort((rows, -scores))
    seen: set[int] = set()
    out: list[tuple[int, float]] = []
    for i in order:
        code = int(atom_code[rows[i]])
        if code in seen:
            continue
        seen.add(code)
        out.append((int(rows[i]), float(scores[i])))
        if len(out) == k:
            break
    return out
