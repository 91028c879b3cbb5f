"""Re-indexing: build a new generation of the store's vectors offline, then swap it in atomically.

A *generation* is one embedding model applied to every version row (plus the per-bucket
indexes built from those vectors). ``reindex`` builds generation ``g + 1`` while the store
keeps serving reads and writes from generation ``g``::

    checkpoint ─► plan parts (row slices of the live segments)
               ─► batch engine embeds parts (local process pool or Ray) ─► staged segment files
               ─► catch up: segments checkpointed meanwhile become parts too (outside the lock)
               ─► under the write lock: last checkpoint, last catch-up, swap (manifest = commit point)

Durability and resumption: each finished part is a complete Parquet segment written under
``reindex/<g>/segments/`` (sealed with the AAD of its final name, so it can be moved into
``segments/`` unchanged), and ``reindex/<g>/state.json`` lists the finished parts. A process
killed at any point leaves the live store untouched; the next ``reindex`` with the same model
verifies and keeps the finished parts and embeds only the rest.

Readers never mix generations: the swap (``Engine.generation_swap``) keeps ``engine.gen_seq`` odd while it
replaces the table, the embedder and the derived indexes, and readers retry a query that
overlapped a swap (see :meth:`aether.Memory.search`).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import crc32c
import numpy as np
import pyarrow as pa

from .._resources import data_dir
from ..batch import BatchEngine, Part, build_indexes_in_process, embed_texts, embedder_spec, get_batch_engine
from ..embed import Embedder
from ..engine.compact import REINDEX_STAGING
from ..engine.table import VersionTable
from ..errors import ConfigError, EmbeddingError, ReindexConflictError
from ..index import find_index, install_partitions, load_recipe, plan_partitions
from ..index.catalog import gen_dir
from ..storage._fs import write_atomic
from ..storage.rows import open_rows, seal_rows
from ..storage.segments import read_table, write_table

if TYPE_CHECKING:
    from ..engine.store import Engine

#: Rows per part: the unit of work, of progress and of resumption.
DEFAULT_PART_ROWS = 16_384
#: Texts per embedding call.
DEFAULT_BATCH_SIZE = 256
#: Catch-up rounds run outside the write lock until at most this many rows remain for the last one.
FINAL_CATCHUP_ROWS = 4_096
STATE_DIR = REINDEX_STAGING  # compaction removes it (the parts were built from segments it deleted)

#: ``progress(rows_done, rows_total)``; ``rows_total`` grows when a catch-up adds rows.
ProgressFn = Callable[[int, int], None]


@dataclass
class ReindexResult:
    """What a re-index did."""

    generation: int
    model: str
    dim: int
    rows: int
    parts: int
    resumed_parts: int
    seconds: float
    engine: str
    #: What happened besides the re-embedding (e.g. an index pre-build that failed and will be redone).
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class _Source:
    """Reads live segment files for the batch engines (verified and decrypted)."""

    def __init__(self, engine: Engine) -> None:
        assert engine.path is not None
        self.root: Path = engine.path
        self.plain = not engine.codec.encrypted
        self._engine = engine
        self.entries: dict[str, dict[str, Any]] = {}

    def read(self, source: str, columns: Sequence[str] | None = None) -> pa.Table:
        codec = self._engine.codec
        table = open_rows(read_table(self.root, self.entries[source], codec, self._engine.store_id), codec)
        return table.select(list(columns)) if columns else table


class _State:
    """``reindex/<g>/state.json``: the target model and the finished parts (JSON, no pickle)."""

    def __init__(self, root: Path, generation: int, identity: str, dim: int, part_rows: int) -> None:
        self.dir = root / STATE_DIR / str(generation)
        self.generation = generation
        self.identity = identity
        self.dim = dim
        self.part_rows = part_rows
        self.done: dict[str, dict[str, Any]] = {}

    @property
    def file(self) -> Path:
        return self.dir / "state.json"

    @classmethod
    def open(cls, root: Path, generation: int, embedder: Embedder, part_rows: int) -> _State:
        """Resume the state of an interrupted re-index to the same model, or start a fresh one."""
        base = root / STATE_DIR
        state = cls(root, generation, embedder.identity, embedder.dim, part_rows)
        if base.is_dir():
            for d in base.iterdir():
                if d != state.dir:  # another generation's leftovers: that build can never be installed now
                    shutil.rmtree(d, ignore_errors=True)
        if state.file.exists():
            try:
                doc = json.loads(state.file.read_text())
            except (OSError, ValueError):
                doc = {}
            if doc.get("identity") == embedder.identity and doc.get("dim") == embedder.dim:
                state.part_rows = int(doc.get("part_rows", part_rows))
                state.done = {k: v for k, v in doc.get("done", {}).items() if state._intact(v)}
                return state
            shutil.rmtree(state.dir, ignore_errors=True)  # a different target model: start over
        state.dir.mkdir(parents=True, exist_ok=True)
        state.save()
        return state

    def _intact(self, entry: dict[str, Any]) -> bool:
        path = self.dir / entry["file"]
        try:
            data = path.read_bytes()
        except OSError:
            return False
        return len(data) == entry["bytes"] and crc32c.crc32c(data) == entry["crc32c"]

    def save(self) -> None:
        doc = {
            "generation": self.generation,
            "identity": self.identity,
            "dim": self.dim,
            "part_rows": self.part_rows,
            "done": self.done,
        }
        write_atomic(self.file, json.dumps(doc, sort_keys=True).encode())

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        base = self.dir.parent
        if base.is_dir() and not any(base.iterdir()):
            base.rmdir()


def check_recipe(recipe: str | None) -> None:
    """Raise ``ConfigError`` for a recipe name that ``indexes/`` does not ship."""
    if recipe is None:
        return
    try:
        known = sorted(p.stem for p in data_dir("indexes").glob("*.json"))
    except ConfigError:
        return
    if recipe not in known:
        raise ConfigError(f"unknown index recipe {recipe!r}; known recipes: {', '.join(known)}")


def _plan(entries: Sequence[dict[str, Any]], generation: int, part_rows: int) -> list[Part]:
    parts: list[Part] = []
    for entry in entries:
        # Named by the source's first version id (or a hash of its name) and by the source file's
        # checksum: stable across runs, unique across sources, never equal to a live segment's
        # name, and never reused for another source. A compaction (or an erasure's purge) writes
        # a segment with the same first version id but other rows; without the checksum a re-index
        # resumed after it would install the parts of the deleted segment (rows lost, erased
        # rows back).
        key = entry.get("min_version")
        if key is None:
            key = zlib.crc32(entry["file"].encode())
        src = int(entry["crc32c"]) ^ zlib.crc32(entry["file"].encode())
        for start in range(0, int(entry["rows"]), part_rows):
            stop = min(start + part_rows, int(entry["rows"]))
            out = f"segments/g{generation:04d}-{int(key):020d}-{src:08x}-{start:010d}.parquet"
            parts.append(Part(entry["file"], start, stop, out))
    return parts


def _new_entries(segments: Sequence[dict[str, Any]], planned: list[str]) -> list[dict[str, Any]]:
    """Segments checkpointed since the plan; the planned ones must still be the live prefix."""
    files = [e["file"] for e in segments]
    if files[: len(planned)] != planned:
        raise ReindexConflictError(
            "the store's segments were rewritten (compacted) during the re-index; run the re-index again"
        )
    return list(segments[len(planned) :])


def _with_vectors(table: pa.Table, vectors: np.ndarray) -> pa.Table:
    """``table`` with its ``vector`` column replaced (the new dimension goes into the schema)."""
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    col = pa.FixedSizeListArray.from_arrays(flat, dim)
    i = table.schema.get_field_index("vector")
    return table.set_column(i, pa.field("vector", pa.list_(pa.float32(), dim)), col)


class _Run:
    """One re-index run: the plan, the batch engine and the progress counters."""

    def __init__(
        self,
        engine: Engine,
        embedder: Embedder,
        state: _State,
        batch: BatchEngine,
        *,
        batch_size: int,
        progress: ProgressFn | None,
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.state = state
        self.batch = batch
        self.batch_size = batch_size
        self.progress = progress
        self.src = _Source(engine)
        self.parts: list[Part] = []
        self.planned: list[str] = []
        #: planned parts found finished by an earlier, interrupted run
        self.resumed = 0
        self._cache_name: str | None = None
        self._cache: pa.Table | None = None

    @property
    def total(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def done_rows(self) -> int:
        return sum(p.rows for p in self.parts if p.out in self.state.done)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done_rows, self.total)

    def add(self, entries: Sequence[dict[str, Any]]) -> list[Part]:
        """Plan ``entries`` (new live segments) and return the parts still to embed."""
        for e in entries:
            self.src.entries[e["file"]] = e
        new = _plan(entries, self.state.generation, self.state.part_rows)
        self.parts.extend(new)
        self.planned.extend(e["file"] for e in entries)
        self.resumed += sum(1 for p in new if p.out in self.state.done)
        return [p for p in new if p.out not in self.state.done]

    def _source_table(self, name: str) -> pa.Table:
        if self._cache_name != name:
            self._cache = self.src.read(name)
            self._cache_name = name
        assert self._cache is not None
        return self._cache

    def run(self, pending: Sequence[Part]) -> None:
        self._report()
        if not pending:
            return
        # In-process engines use the embedder object itself (no second copy of the model to load).
        spec = self.embedder if getattr(self.batch, "in_process", False) else embedder_spec(self.embedder)
        eng = self.engine
        for part, vecs in self.batch.embed_parts(self.src, pending, spec, batch_size=self.batch_size):
            vecs = np.asarray(vecs, dtype=np.float32)
            if vecs.shape != (part.rows, self.embedder.dim) or not np.isfinite(vecs).all():
                raise EmbeddingError(
                    f"{self.batch.name} engine returned vectors of shape {vecs.shape} for {part.rows} rows "
                    f"of {part.source} (expected dimension {self.embedder.dim}, finite values)"
                )
            table = _with_vectors(self._source_table(part.source).slice(part.start, part.rows), vecs)
            vids = table.column("version_id").to_numpy()
            entry = write_table(self.state.dir, part.out, seal_rows(table, eng.codec), eng.codec, eng.store_id)
            entry.update(min_version=int(vids[0]), max_version=int(vids[-1]))
            self.state.done[part.out] = entry
            self.state.save()
            self._report()
        self._cache = None
        self._cache_name = None


def reindex(
    engine: Engine,
    embedder: Embedder,
    *,
    recipe: str | None = None,
    batch_engine: str | BatchEngine = "local",
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    part_rows: int = DEFAULT_PART_ROWS,
    progress: ProgressFn | None = None,
) -> ReindexResult:
    """Re-embed every version row with ``embedder`` into a new generation and swap it in.

    See :meth:`aether.Memory.reindex` for the parameters. Resumes an interrupted re-index to
    the same model. Raises ``ReindexConflictError`` if a compaction rewrote the segments meanwhile.
    """
    engine.check_writable()
    check_recipe(recipe)
    t0 = time.perf_counter()
    if engine.path is None:
        rows = _reindex_in_memory(engine, embedder, batch_size=batch_size, progress=progress)
        return ReindexResult(0, embedder.identity, embedder.dim, rows, 1, 0, time.perf_counter() - t0, "local")
    with engine.write_lock:
        engine.check_writable()
        engine.checkpoint()
        generation = int(engine.manifest.get("index", {}).get("generation", 0)) + 1
    state = _State.open(engine.path, generation, embedder, part_rows)
    batch = (
        get_batch_engine(batch_engine, address=address, workers=workers)
        if isinstance(batch_engine, str)
        else batch_engine
    )
    run = _Run(engine, embedder, state, batch, batch_size=batch_size, progress=progress)
    try:
        # Outside the write lock: the bulk, then catch-up rounds while writers keep checkpointing.
        for round_ in range(4):
            with engine.write_lock:
                if round_:
                    engine.checkpoint()
                new = _new_entries(engine.manifest["segments"], run.planned)
            if round_ and sum(int(e["rows"]) for e in new) <= FINAL_CATCHUP_ROWS:
                break
            run.run(run.add(new))
        # The new generation's bucket indexes, built from the staged parts while the store serves
        # the old one; rows caught up below join the index's exact tail and are sealed later.
        notes = _prebuild_index(engine, run, generation, recipe)
        # Under the write lock: nothing can commit between the last catch-up and the swap.
        with engine.write_lock:
            engine.check_writable()
            engine.checkpoint()
            run.run(run.add(_new_entries(engine.manifest["segments"], run.planned)))
            body = dict(engine.manifest)
            body["segments"] = [state.done[p.out] for p in run.parts]
            if [int(e["rows"]) for e in body["segments"]] != [p.rows for p in run.parts]:
                state.remove()  # a stale staged part (never reused: its name names its source)
                raise ReindexConflictError("staged re-index parts do not match the live segments; run it again")
            body["model"] = {"identity": embedder.identity, "dim": embedder.dim}
            index = dict(body.get("index") or {})
            index["generation"] = generation
            if recipe is not None:
                index["recipe"] = recipe
            body["index"] = index
            moves = [(state.dir / p.out, engine.path / p.out) for p in run.parts]
            engine.install_generation(body, embedder, moves)
    finally:
        batch.close()
    state.remove()
    shutil.rmtree(gen_dir(engine.path, generation - 1), ignore_errors=True)  # the old generation's
    return ReindexResult(
        generation=generation,
        model=embedder.identity,
        dim=embedder.dim,
        rows=run.total,
        parts=len(run.parts),
        resumed_parts=run.resumed,
        seconds=time.perf_counter() - t0,
        engine=batch.name,
        notes=notes,
    )


def _prebuild_index(engine: Engine, run: _Run, generation: int, recipe: str | None) -> list[str]:
    """Build and install ``index/<generation>/`` from the staged parts (derived data: failures only note).

    The partition plan is made here; the batch engine builds the partitions' FAISS indexes
    (threads of this process, or Ray tasks) and returns their serialisations, written here.
    """

    assert engine.path is not None
    shutil.rmtree(gen_dir(engine.path, generation), ignore_errors=True)  # a stale aborted build
    try:
        live = find_index(engine)
        section = engine.manifest.get("index") or {}
        if recipe is None and live is not None:
            rec = live.recipe  # what the live index will load the new generation with
        else:
            rec = load_recipe(recipe or str(section.get("recipe", "default")))
            if section.get("bucket"):
                rec = rec.with_overrides(bucket=str(section["bucket"]))
        entries = [run.state.done[p.out] for p in run.parts]
        table = VersionTable(run.embedder.dim, capacity=sum(int(e["rows"]) for e in entries) + 1024)
        codec = engine.codec
        if hasattr(codec, "dim"):  # a row-sealing codec opens vectors at the store's (old) dimension
            codec = copy.copy(codec)
            codec.dim = run.embedder.dim
        for e in entries:
            staged = read_table(run.state.dir, e, codec, engine.store_id)
            table.append_arrow(open_rows(staged, codec))
        n = table.n
        if n < rec.tail_rows:
            return []  # below one sealed tail: the index scans these rows exactly anyway
        specs = plan_partitions(table.valid_from[:n], rec)
        jobs = [(np.ascontiguousarray(table.vectors[s.rows]), s.tier) for s in specs]
        build = getattr(run.batch, "build_indexes", None)  # a custom engine may not build indexes
        blobs = build(jobs) if build is not None else build_indexes_in_process(jobs)
        if len(blobs) != len(specs):
            raise EmbeddingError(f"{run.batch.name} engine returned {len(blobs)} indexes for {len(specs)} partitions")
        install_partitions(
            engine,
            generation,
            list(zip(specs, blobs, strict=True)),
            recipe=rec,
            version_ids=table.version_id[:n],
            dim=run.embedder.dim,
        )
        return []
    except Exception as exc:  # derived data, whatever failed (e.g. a Ray task): rebuilt from the rows later
        shutil.rmtree(gen_dir(engine.path, generation), ignore_errors=True)
        return [f"index pre-build failed ({exc}); the index is rebuilt from the rows after the swap"]


def _reindex_in_memory(
    engine: Engine, embedder: Embedder, *, batch_size: int, progress: ProgressFn | None
) -> int:
    """An in-memory store has no files to stage: re-embed under the write lock and swap the table."""

    with engine.write_lock:
        old = engine.table
        n = old.n
        batch = old.batch_range(0, n)
        if progress is not None:
            progress(0, n)
        batch.vectors = embed_texts(embedder, batch.content, batch_size) if n else np.zeros((0, embedder.dim))
        table = VersionTable(embedder.dim, capacity=n + 1024)
        table.append(batch)
        table.dead[:n] = old.dead[:n]
        if progress is not None:
            progress(n, n)
        with engine.generation_swap():
            engine.replace_table(table, embedder=embedder)
            engine.derived.reopen(engine, reset=False)
    return n
