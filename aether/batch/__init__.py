"""Batch engines: embed the rows of a store in bulk, locally (a process pool) or on Ray.

The re-indexer (:mod:`aether.maintenance.reindex`) cuts the store's segments into *parts*
(row slices of one segment file), and a batch engine turns parts into vectors::

    parts ──► BatchEngine.embed_parts ──► (part, vectors) in part order ──► new segment files

and then builds the new generation's per-bucket indexes::

    plan_partitions ──► BatchEngine.build_indexes ──► FAISS bytes per partition ──► install_partitions

Two engines share that contract and give identical results for the same model (index builds
run single-threaded, which makes even HNSW graphs byte-identical):

* :class:`~aether.batch.local.LocalEngine`: in-process, or a process pool (``workers > 1``)
  for embedding; index builds on a thread pool of this process;
* :class:`~aether.batch.ray_engine.RayEngine`: Ray Data reads the Parquet segments and embeds
  them with an actor pool, and each partition's index is built by a Ray task
  (extra ``aether[ray]``; imported lazily).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from ..embed import Embedder, embedder_from_identity
from ..errors import AetherError, ConfigError

if TYPE_CHECKING:
    from ..index.recipes import Tier

#: One index build: a partition's vectors (``(m, dim)`` float32, in index order) and its size tier.
IndexJob = tuple[np.ndarray, "Tier"]

__all__ = [
    "BatchEngine",
    "IndexJob",
    "Part",
    "PartSource",
    "build_indexes_in_process",
    "embedder_from_spec",
    "embedder_spec",
    "get_batch_engine",
]


@dataclass(frozen=True)
class Part:
    """Rows ``[start, stop)`` of the segment file ``source``, to be written as ``out``."""

    source: str
    start: int
    stop: int
    out: str

    @property
    def rows(self) -> int:
        return self.stop - self.start


class PartSource(Protocol):
    """Where a batch engine finds the rows of a part."""

    root: Path
    #: Whether segment files are plain Parquet (readable by other tools, e.g. Ray Data).
    plain: bool

    def read(self, source: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole segment file ``source`` (decrypted and verified)."""
        ...


class BatchEngine(Protocol):
    """Embeds the ``content`` of parts; yields ``(part, vectors)`` in the order of ``parts``."""

    name: str

    def embed_parts(
        self, src: PartSource, parts: Sequence[Part], spec: Any, *, batch_size: int
    ) -> Iterator[tuple[Part, np.ndarray]]: ...

    def build_indexes(self, jobs: Sequence[IndexJob]) -> list[np.ndarray]:
        """Serialised FAISS index of each job (:func:`aether.index.build_index_bytes`), in job order."""
        ...

    def close(self) -> None: ...


def embedder_spec(embedder: Embedder) -> Any:
    """What a worker process needs to rebuild ``embedder``: its identity string when that suffices.

    Custom embedders that cannot be rebuilt from their identity travel as the object itself
    (pickled over the worker pipe, never to disk), so they must be picklable.
    """
    try:
        rebuilt = embedder_from_identity(embedder.identity)
    except AetherError:
        return embedder
    if rebuilt.identity == embedder.identity and type(rebuilt) is type(embedder):
        return ("identity", embedder.identity)
    return embedder


def embedder_from_spec(spec: Any) -> Embedder:
    """The inverse of :func:`embedder_spec` (runs inside a worker)."""
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] == "identity":
        return embedder_from_identity(spec[1])
    return spec


def embed_texts(embedder: Embedder, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """Embed ``texts`` in batches of ``batch_size``; unit float32 rows."""
    out = np.empty((len(texts), embedder.dim), np.float32)
    for s in range(0, len(texts), batch_size):
        chunk = list(texts[s : s + batch_size])
        vecs = np.asarray(embedder.embed(chunk), dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        norms[norms == 0] = 1.0  # an all-zero row stays zero rather than NaN; as_unit_vectors rejects it later
        out[s : s + len(chunk)] = vecs / norms
    return out


def build_indexes_in_process(jobs: Sequence[IndexJob], *, threads: int = 1) -> list[np.ndarray]:
    """Build each job's index in this process, on ``threads`` threads; results in job order.

    Every build is single-threaded (deterministic, see :func:`aether.index.build_index_bytes`);
    parallelism comes from building several partitions at once (FAISS releases the GIL).
    """
    from ..index.partition import build_index_bytes

    if threads <= 1 or len(jobs) <= 1:
        return [build_index_bytes(vecs, tier) for vecs, tier in jobs]
    out: list[np.ndarray | None] = [None] * len(jobs)
    # Largest first: the last partitions to finish are small ones, so no thread idles long.
    order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][0]))
    with ThreadPoolExecutor(max_workers=min(threads, len(jobs)), thread_name_prefix="aether-index-build") as pool:
        futures = {i: pool.submit(build_index_bytes, jobs[i][0], jobs[i][1]) for i in order}
        for i, fut in futures.items():
            out[i] = fut.result()
    return [o for o in out if o is not None]


def get_batch_engine(name: str, *, address: str | None = None, workers: int | None = None) -> BatchEngine:
    """A batch engine by name: ``local`` (default) or ``ray``.

    Parameters
    ----------
    name
        ``"local"`` or ``"ray"``.
    address
        Ray cluster address (``ray`` only); ``None`` starts a local Ray.
    workers
        Local: worker processes (``None``/``1``: embed in this process) and index-build threads
        (``None``: one per CPU). Ray: embedding actors.
    """
    if name == "local":
        from .local import LocalEngine

        return LocalEngine(workers=workers)
    if name == "ray":
        from .ray_engine import RayEngine

        return RayEngine(address=address, actors=workers)
    raise ConfigError(f"unknown batch engine {name!r}; use 'local' or 'ray'")
