"""The Ray batch engine: Ray Data reads the segments and embeds them with an actor pool.

Install with ``pip install 'aether[ray]'``. Ray is imported only when this engine is used.

* Plain stores: ``ray.data.read_parquet`` reads the segment files themselves (only the
  ``version_id`` and ``content`` columns), so on a cluster the workers read the files (put the
  store on shared or object storage). Encrypted segments are not plain Parquet: the driver
  decrypts them and hands Arrow tables to Ray (``ray.data.from_arrow``).
* ``map_batches`` with a callable class runs an actor pool; each actor loads the model once.
  Each actor embeds only the rows of parts still to do, so a resumed run re-embeds nothing.
* Order is preserved (``preserve_order``), and every batch carries its ``version_id`` column,
  which the driver checks against the part it fills: a reordering can never go unnoticed.
* Per-bucket index builds are Ray tasks (:meth:`RayEngine.build_indexes`): each partition's
  vectors go to the object store, a task builds the FAISS index single-threaded and returns
  its serialisation (``uint8``), so the files equal the local engine's byte for byte.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import EmbeddingError, MissingDependencyError
from ..index.partition import build_index_bytes
from ..index.recipes import Tier
from . import IndexJob, Part, PartSource, embed_texts, embedder_from_spec


def import_ray() -> Any:
    """``ray`` (with Ray Data), or ``MissingDependencyError`` naming the extra."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(
            "the Ray engine needs Ray Data: pip install 'aether[ray]'"
        ) from exc
    return ray


class _Embed:
    """The actor: loads the embedder once, embeds the rows of pending version-id ranges."""

    def __init__(self, spec: Any, ranges: np.ndarray, batch_size: int, threads: int) -> None:
        # Ray pins OMP_NUM_THREADS to the actor's (fractional, here) CPU share rounded down to 1;
        # give torch the share this actor really has.
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        else:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        self.embedder = embedder_from_spec(spec)
        self.lo = ranges[:, 0] if len(ranges) else np.zeros(0, np.int64)
        self.hi = ranges[:, 1] if len(ranges) else np.zeros(0, np.int64)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vids = np.asarray(batch["version_id"], dtype=np.int64)
        # Pending ranges are disjoint and sorted: a row is pending when the last range starting
        # at or before it also ends at or after it.
        i = np.searchsorted(self.lo, vids, side="right") - 1
        keep = (i >= 0) & (vids <= self.hi[np.maximum(i, 0)])
        texts = [str(t) for t in np.asarray(batch["content"], dtype=object)[keep]]
        vecs = embed_texts(self.embedder, texts, self.batch_size)
        return {"version_id": vids[keep], "vector": vecs}


def _build_task(vectors: np.ndarray, tier: Tier) -> np.ndarray:
    """Body of the index-build Ray task: one partition, single-threaded (deterministic)."""
    return build_index_bytes(vectors, tier, threads=1)


class RayEngine:
    """Embeds parts on Ray (local or a cluster).

    Parameters
    ----------
    address
        Cluster address (``ray://host:10001`` or ``auto``); ``None`` starts a local Ray,
        or uses the one already initialised in this process.
    actors
        Embedding actors; default: one per CPU Ray reports.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, actors: int | None = None) -> None:
        self.ray = import_ray()
        self.address = address
        self.actors = actors
        self._started = False

    def _init(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if self.address is not None:
                kwargs["address"] = self.address
            else:
                kwargs["include_dashboard"] = False
            ray.init(**kwargs)
            self._started = True

    def _cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", os.cpu_count() or 1)))

    def embed_parts(
        self, src: PartSource, parts: Sequence[Part], spec: Any, *, batch_size: int
    ) -> Iterator[tuple[Part, np.ndarray]]:
        if not parts:
            return
        self._init()
        ray = self.ray
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False  # aether reports progress itself
        sources = list(dict.fromkeys(p.source for p in parts))
        if src.plain:
            ds = ray.data.read_parquet([str(src.root / s) for s in sources]).select_columns(["version_id", "content"])
        else:
            ds = ray.data.from_arrow([src.read(s, ["version_id", "content"]) for s in sources])
        rows = sum(p.rows for p in parts)
        # A segment is one block: split it so that every actor gets work (order is kept).
        ds = ds.repartition(max(1, min(rows // max(batch_size, 1), 4 * (self.actors or self._cpus()))))
        # Pending version-id ranges: a resumed run embeds only the parts still to do.
        vids_of = {
            s: np.asarray(src.read(s, ["version_id"]).column(0).to_numpy(), np.int64) for s in sources
        }
        bounds = [(int(vids_of[p.source][p.start]), int(vids_of[p.source][p.stop - 1])) for p in parts]
        ranges = np.asarray(sorted(bounds), dtype=np.int64).reshape(-1, 2)
        cpus = self._cpus()
        n_actors = self.actors or cpus
        # The actors reserve all CPUs but one: with every CPU held by an actor, the file listing and
        # Parquet read tasks that feed them could never be scheduled (a deadlock). Their torch
        # threads still use the real share of the machine (``threads``).
        share = max(0.1, (cpus - 1) / n_actors)
        ds = ds.map_batches(
            _Embed,
            fn_constructor_kwargs={
                "spec": spec, "ranges": ranges, "batch_size": batch_size, "threads": max(1, round(cpus / n_actors)),
            },
            batch_size=max(batch_size, 1024),
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=share,
        )
        want = iter(zip(parts, bounds, strict=True))
        cur: tuple[Part, tuple[int, int]] | None = next(want, None)
        buf_v: list[np.ndarray] = []
        buf_i: list[np.ndarray] = []
        have = 0
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            vids = np.asarray(batch["version_id"], np.int64)
            vecs = np.asarray(batch["vector"], np.float32).reshape(len(vids), -1)
            pos = 0
            while pos < len(vids):
                if cur is None:
                    raise EmbeddingError("the Ray engine returned more rows than were asked for")
                part, _ = cur
                take = min(part.rows - have, len(vids) - pos)
                buf_i.append(vids[pos : pos + take])
                buf_v.append(vecs[pos : pos + take])
                have += take
                pos += take
                if have == part.rows:
                    got = np.concatenate(buf_i)
                    if not np.array_equal(got, vids_of[part.source][part.start : part.stop]):
                        raise EmbeddingError(f"the Ray engine returned rows out of order for {part.source}")
                    yield part, np.concatenate(buf_v)
                    buf_i, buf_v, have = [], [], 0
                    cur = next(want, None)
        if cur is not None:
            raise EmbeddingError("the Ray engine returned fewer rows than were asked for")

    def build_indexes(self, jobs: Sequence[IndexJob]) -> list[np.ndarray]:
        """Serialised FAISS index of each job, one Ray task per partition; results in job order."""
        if not jobs:
            return []
        self._init()
        ray = self.ray
        task = ray.remote(num_cpus=1)(_build_task)
        # Largest first, so the small partitions fill in at the end; vectors travel through the object store.
        order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][0]))
        refs = {i: task.remote(ray.put(np.ascontiguousarray(jobs[i][0], np.float32)), jobs[i][1]) for i in order}
        return [np.asarray(d, np.uint8) for d in ray.get([refs[i] for i in range(len(jobs))])]

    def close(self) -> None:
        """Ray stays up for the next call in this process; ``ray.shutdown()`` ends it."""
