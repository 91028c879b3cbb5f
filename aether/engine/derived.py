"""Derived indexes: structures rebuilt from the version rows (ANN buckets, the keyword index).

The engine owns the rows; a derived index follows them through these callbacks and can
always be rebuilt from the rows alone, so it never holds the only copy of anything.

The engine never imports an index: ``aether.open`` hands it the callables that attach them
(``Engine(derived=...)``), and :class:`DerivedIndexes`, the engine's registry of attached
indexes, is the one way the engine core, compaction and re-index reach them. Besides the
callbacks of :class:`DerivedIndex`, an index may offer these optional ones:

* ``on_reset(engine)``: the rows moved or got new vectors: rebuild from scratch (default: ``on_open``);
* ``on_erase(engine, rows)``: erased rows must leave the index's own data for good;
* ``wait()``: block until background work has finished (re-raising its error);
* ``dense_search(engine, snap, qvecs, k, filters)``: answer dense queries (else: an exact scan);
* ``hold_publication(engine)``: a context manager that keeps the index from writing files;
* ``remove_files(engine) -> int``: remove the files it owns (they may hold vectors of purged rows).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    from .store import Engine

_T = TypeVar("_T")


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


class DerivedIndexes:
    """The derived indexes attached to one engine, in attach order (iterable)."""

    def __init__(self) -> None:
        self._items: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def add(self, index: DerivedIndex) -> None:
        """Register an index that already loaded itself (``Engine.attach`` calls ``on_open`` first)."""
        self._items.append(index)

    def remove(self, index: DerivedIndex) -> None:
        """Stop notifying ``index`` (replaced, e.g. by one with another recipe)."""
        self._items.remove(index)

    def find(self, kind: type[_T]) -> _T | None:
        """The attached index of type ``kind``, if any."""
        for d in self._items:
            if isinstance(d, kind):
                return d
        return None

    # ------------------------------------------------------------------ engine events
    def commit(self, engine: Engine, start: int, end: int, closed: np.ndarray) -> None:
        for d in self._items:
            d.on_commit(engine, start, end, closed)

    def checkpoint(self, engine: Engine) -> None:
        for d in self._items:
            d.on_checkpoint(engine)

    def close(self, engine: Engine) -> None:
        for d in self._items:
            d.on_close(engine)  # the bucketed index joins its background seal here

    def reopen(self, engine: Engine, *, reset: bool) -> None:
        """The engine replaced its table: rows kept their positions (``reset=False``: indexes re-open
        their files), or moved or got new vectors (``reset=True``: those with ``on_reset`` rebuild)."""
        for d in self._items:
            hook = getattr(d, "on_reset", None) if reset else None
            (hook if callable(hook) else d.on_open)(engine)

    def erase(self, engine: Engine, rows: np.ndarray | list[int]) -> None:
        """Rows were erased: indexes keeping terms or vectors of their own drop them for good."""
        for d in self._items:
            on_erase = getattr(d, "on_erase", None)
            if callable(on_erase):
                on_erase(engine, rows)

    def wait(self, *, quiet: bool = False) -> None:
        """Wait for every index's background work (``quiet``: a failure is ignored: derived data)."""
        for d in self._items:
            wait = getattr(d, "wait", None)
            if callable(wait):
                if quiet:
                    with contextlib.suppress(Exception):
                        wait()
                else:
                    wait()

    # ------------------------------------------------------------------ queries and files
    def dense_searcher(self) -> Any | None:
        """The first index that answers dense queries (``dense_search``), if any."""
        for d in self._items:
            if callable(getattr(d, "dense_search", None)):
                return d
        return None

    @contextlib.contextmanager
    def hold_publication(self, engine: Engine) -> Iterator[None]:
        """Keep every index from writing files while the block runs (compaction)."""
        with contextlib.ExitStack() as stack:
            for d in self._items:
                hold = getattr(d, "hold_publication", None)
                if callable(hold):
                    stack.enter_context(hold(engine))
            yield

    def remove_files(self, engine: Engine) -> int:
        """Remove the files of every index that owns some; returns how many there were."""
        removed = 0
        for d in self._items:
            remove = getattr(d, "remove_files", None)
            if callable(remove):
                removed += int(remove(engine))
        return removed

