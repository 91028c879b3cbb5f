"""The version table's background vector load: segment vectors copied in, newest rows first."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from .table import VersionTable


class _VectorLoader:
    """Copies segment vectors into a table on a background thread, newest rows first, so that an
    open returns before ~1.5 GB per million 384-d rows is decoded and faulted into memory.

    A waiter never depends on the thread alone: if it never started, died, or does not exist in
    this process (after a fork), the waiter runs the remaining jobs itself.
    """

    def __init__(self, table: VersionTable, jobs: list[tuple[int, int, Callable[[], pa.ChunkedArray]]]) -> None:
        self._table = table
        self._jobs = sorted(jobs, key=lambda j: j[0], reverse=True)
        self._next = 0  # jobs before this index are done
        self.end = max(e for _, e, _ in jobs)  # rows [ready_from, end) are in place
        self.ready_from = self.end
        self.error: BaseException | None = None
        self._stopped = False
        self._init_sync()
        _LOADERS.add(self)

    def _init_sync(self) -> None:
        self._cond = threading.Condition()
        self._runner = threading.Lock()  # held by whoever is running jobs
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            if self._thread is not None or self._next >= len(self._jobs):
                return
            th = threading.Thread(target=self._run, name="aether-vectors", daemon=True)
            try:
                th.start()
            except RuntimeError:  # no thread available: waiters run the jobs themselves
                return
            self._thread = th

    def stop(self) -> None:
        """Stop after the current job (the store closed); a later waiter finishes the rest."""
        self._stopped = True

    def _run(self, *, inline: bool = False) -> None:
        with self._runner:
            while True:
                with self._cond:
                    if self._next >= len(self._jobs) or self.error is not None or (self._stopped and not inline):
                        break
                    start, _, fetch = self._jobs[self._next]
                try:
                    self._table._copy_vectors(fetch(), start)
                except BaseException as exc:  # handed to every reader that waits for these rows
                    with self._cond:
                        self.error = exc
                        self._cond.notify_all()
                    return
                with self._cond:
                    self._next += 1
                    # rows segments copied at open (no job) are in place already
                    self.ready_from = 0 if self._next >= len(self._jobs) else start
                    self._cond.notify_all()
            if self._next >= len(self._jobs):
                self._jobs = []  # lets go of the segments' memory maps

    def wait(self, start: int) -> None:
        self.start()
        while True:
            with self._cond:
                if self.ready_from <= start:
                    return
                if self.error is not None:
                    raise self.error
                th = self._thread
                if th is not None and th.is_alive():
                    self._cond.wait(0.5)
                    continue
            if self._runner.acquire(blocking=False):  # nobody is loading: do it here
                self._runner.release()
                self._run(inline=True)
            else:
                with self._cond:
                    self._cond.wait(0.05)

    def _after_fork(self) -> None:
        self._init_sync()


_LOADERS: weakref.WeakSet[_VectorLoader] = weakref.WeakSet()


def _loaders_after_fork() -> None:
    for ld in list(_LOADERS):
        ld._after_fork()


if hasattr(os, "register_at_fork"):  # the child has no loader thread, and locks copied mid-use
    os.register_at_fork(after_in_child=_loaders_after_fork)
