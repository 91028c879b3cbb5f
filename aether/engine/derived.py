"""Derived indexes: structures rebuilt from the version rows (ANN buckets, the keyword index).

The engine owns the rows; a derived index follows them through these callbacks and can
always be rebuilt from the rows alone, so it never holds the only copy of anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .store import Engine


class DerivedIndex(Protocol):
    """Callbacks the engine makes; each runs under the engine's write lock (or during open)."""

    name: str

    def on_open(self, engine: Engine) -> None:
        """The table is loaded and the WAL replayed: load persisted state or rebuild."""

    def on_commit(self, engine: Engine, start: int, end: int, closed: np.ndarray) -> None:
        """Rows ``[start, end)`` were appended and rows ``closed`` had ``tx_to`` set."""

    def on_checkpoint(self, engine: Engine) -> None:
        """A checkpoint was written: persist what is worth persisting."""

    def on_close(self, engine: Engine) -> None:
        """The store is closing."""
