"""The local batch engine: embed parts in this process, or in a pool of worker processes.

In-process is the default and the right choice for a torch model: torch already spreads one
forward pass over every core, so extra processes only compete for them. A process pool pays
off for embedders that hold the GIL (pure-Python ones such as the hashing embedder) on a
machine with spare cores. Either way, parts come back in order and the vectors of a text do
not depend on which worker embedded it.

Index builds (:meth:`LocalEngine.build_indexes`) run on threads of this process: each build is
single-threaded and deterministic, FAISS releases the GIL, and the vectors are not copied to
other processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from ..embed import Embedder
from . import IndexJob, Part, PartSource, build_indexes_in_process, embed_texts, embedder_from_spec

_WORKER_EMBEDDER: Embedder | None = None


def _init_worker(spec: Any) -> None:
    global _WORKER_EMBEDDER
    _WORKER_EMBEDDER = embedder_from_spec(spec)


def _embed_in_worker(texts: list[str], batch_size: int) -> np.ndarray:
    assert _WORKER_EMBEDDER is not None
    return embed_texts(_WORKER_EMBEDDER, texts, batch_size)


class _SourceCache:
    """Keeps the last segment read: parts of one segment come one after another."""

    def __init__(self, src: PartSource) -> None:
        self.src = src
        self.name: str | None = None
        self.content: list[str] = []

    def texts(self, part: Part) -> list[str]:
        if part.source != self.name:
            self.content = self.src.read(part.source, ["content"]).column("content").to_pylist()
            self.name = part.source
        return self.content[part.start : part.stop]


class LocalEngine:
    """Embeds parts in this process (``workers`` ``None``/``1``) or in ``workers`` processes.

    Parameters
    ----------
    workers
        Number of worker processes; ``None`` or ``1`` embeds in the calling process.
        Also the number of index-build threads (``None``: one per CPU).
    """

    name = "local"

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = max(1, int(workers or 1))
        self.build_threads = max(1, int(workers)) if workers else (os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    @property
    def in_process(self) -> bool:
        """Embeds in the calling process (then ``spec`` may be the embedder object itself)."""
        return self.workers == 1

    def embed_parts(
        self, src: PartSource, parts: Sequence[Part], spec: Any, *, batch_size: int
    ) -> Iterator[tuple[Part, np.ndarray]]:
        cache = _SourceCache(src)
        if self.workers == 1:
            embedder = embedder_from_spec(spec)
            for part in parts:
                yield part, embed_texts(embedder, cache.texts(part), batch_size)
            return
        # "spawn": a forked child of a process that already runs torch or OpenMP threads can deadlock.
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(spec,)
        )
        try:
            window: deque[tuple[Part, Future[np.ndarray]]] = deque()
            for part in parts:
                window.append((part, self._pool.submit(_embed_in_worker, cache.texts(part), batch_size)))
                # Keep every worker busy plus one part queued, and yield in order.
                while len(window) > self.workers + 1:
                    p, fut = window.popleft()
                    yield p, fut.result()
            while window:
                p, fut = window.popleft()
                yield p, fut.result()
        finally:
            self.close()

    def build_indexes(self, jobs: Sequence[IndexJob]) -> list[np.ndarray]:
        """Serialised FAISS index of each job, built on ``build_threads`` threads of this process."""
        return build_indexes_in_process(jobs, threads=self.build_threads)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
