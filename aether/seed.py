"""The seed specification's store API, as a thin layer over the one engine.

``BitemporalMemoryStore``, ``MemoryQuery``, ``StorageResult`` and ``ValidationResult`` keep the
names and call shapes of the seed document so code written against it runs on aether. Every
call goes to an :class:`aether.Memory` (``store.memory``): there is no second store, index or
cache here, and the async methods run the engine call in a worker thread
(``asyncio.to_thread``), so they never block the event loop.

Construction
    ``BitemporalMemoryStore()`` is an in-memory store; ``BitemporalMemoryStore(path)`` (or a
    mapping of :func:`aether.open` keyword arguments with a ``"path"``) is durable; an existing
    ``Memory`` can be wrapped (it is then not closed by :meth:`close`). The in-memory default uses
    the default model (all-MiniLM-L6-v2, loaded offline from its package), one instance shared by
    every default store in the process and loaded when the first one is created (a few seconds),
    so later writes and queries are fast. Pass ``embedder=aether.HashingEmbedder()`` for a store
    that needs no model at all.

Field mapping of ``store_memory`` onto :meth:`aether.Memory.add`
    ``atom_id`` (so storing the same atom again writes a new version), ``content.inline``,
    ``content.metadata`` -> ``content_metadata``, ``tags``, ``metadata``, ``modality``, ``subject``,
    ``quality_score``, ``valid_time`` -> ``valid_from``, ``expiration_time`` -> ``valid_to``. The
    transaction time is the store's (the seed also overwrites it); it is written back to the
    caller's atom. ``creation_context`` is not stored (the engine has no column for it).
    ``access_count`` / ``last_accessed`` are per-process counters, not bitemporal history.

Decisions where the seed's code and its tests disagree, or the seed leaves a gap:

* A tag query ``MemoryQuery(tags={"test": "data"})`` must find atoms whose *content metadata*
  holds ``test == "data"`` (the integration test), so each ``key == value`` pair matches the
  atom's tags, else its content metadata, else its metadata. Tag matches use the engine's
  posting lists; the metadata fallback reads the remaining rows that pass the time filters
  (a scan: for large stores use ``store.memory.search(tags=...)``, which is indexed).
* Without ``query_time`` or ``time_range`` a query has no valid-time filter (the seed filters
  only when they are given); ``retrieve_memory(atom_id)`` without ``query_time`` returns the
  atom's current version valid now, else its latest-starting one. ``query_time`` follows
  ``MemoryAtom.is_valid_at_time``: ``valid_from <= t < valid_to``.
* ``time_range=(start, end)`` keeps atoms whose valid interval overlaps ``[start, end)``
  (``None`` ends are open); with ``query_time`` as well, both must hold.
* ``sort_by="relevance"`` is the cosine similarity when ``content_query`` is given, else (as in
  the seed) ``quality_score``; ``"timestamp"`` is the transaction time, newest first;
  ``"access_count"`` the access counter. With ``content_query`` the ``limit`` most similar atoms
  are selected first and ``sort_by`` orders them. Content queries are an exact scan of the
  filtered rows (``store.memory.search`` uses the engine's planner).
* ``as_of`` (not in the seed) queries what the store believed at a past transaction time.
* Errors: ``store_memory`` returns ``StorageResult(success=False, error=...)`` for an invalid atom
  or a failed write, as in the seed. ``retrieve_memory`` and ``query_memories`` log a store
  failure and return ``None`` / ``[]`` as the seed does, but an invalid argument (a naive
  datetime, a malformed query) raises :class:`aether.InvalidInputError`: it is a caller bug.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from . import api
from ._time import OPEN, to_us
from .embed import Embedder, SentenceTransformerEmbedder
from .engine.query import Snapshot
from .engine.store import Engine
from .engine.validate import check_atom_id
from .errors import AetherError, InvalidInputError, InvalidTagError
from .models import MemoryAtom
from .state.consciousness import ValidationResult
from .storage.rows import dumps

logger = logging.getLogger("aether.seed")

SortBy = Literal["relevance", "timestamp", "access_count"]
_SORTS = ("relevance", "timestamp", "access_count")

_default_lock = threading.Lock()
_default: SentenceTransformerEmbedder | None = None


def _default_embedder() -> SentenceTransformerEmbedder:
    """One default-model embedder per process, shared by every default in-memory store."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SentenceTransformerEmbedder()
        return _default


@dataclass
class StorageResult:
    """Outcome of :meth:`BitemporalMemoryStore.store_memory`."""

    success: bool
    atom_id: str | None = None
    storage_timestamp: datetime | None = None
    error: str | None = None
    version_id: int | None = None


def _opt_us(value: Any, name: str) -> int | None:
    return None if value is None else to_us(value, name=name)


@dataclass(kw_only=True)
class MemoryQuery:
    """A seed-style query: filters, an optional semantic query, an order and a limit.

    Parameters
    ----------
    tags
        ``key == value`` pairs that must all hold (tags, else content metadata, else metadata).
    content_query
        Text to rank by semantic similarity.
    query_time
        Valid time the atoms must hold at.
    time_range
        ``(start, end)``: atoms whose valid interval overlaps ``[start, end)``.
    as_of
        Transaction time: what the store believed then (default the latest commit).
    sort_by
        ``"relevance"``, ``"timestamp"`` or ``"access_count"``.
    limit
        Largest number of atoms returned.
    """

    tags: dict[str, Any] | None = None
    content_query: str | None = None
    query_time: datetime | None = None
    time_range: tuple[datetime | None, datetime | None] | None = None
    as_of: datetime | None = None
    sort_by: SortBy = "relevance"
    limit: int = 10

    def __post_init__(self) -> None:
        if self.tags is not None and (
            not isinstance(self.tags, Mapping) or not all(isinstance(k, str) and k for k in self.tags)
        ):
            raise InvalidTagError("MemoryQuery.tags must be a dict with non-empty str keys")
        if self.content_query is not None and (
            not isinstance(self.content_query, str) or not self.content_query.strip()
        ):
            raise InvalidInputError("MemoryQuery.content_query must be a non-empty str")
        _opt_us(self.query_time, "query_time")
        _opt_us(self.as_of, "as_of")
        if self.time_range is not None:
            api._during(self.time_range)  # validates the pair, its times and its order
        if self.sort_by not in _SORTS:
            raise InvalidInputError(f"MemoryQuery.sort_by must be one of {list(_SORTS)}, got {self.sort_by!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise InvalidInputError("MemoryQuery.limit must be a positive int")


class _AtomsView(Mapping[str, MemoryAtom]):
    """``store.memory_atoms``: the atoms the store currently believes, read live from the engine."""

    def __init__(self, store: BitemporalMemoryStore) -> None:
        self._store = store

    def __getitem__(self, atom_id: str) -> MemoryAtom:
        row = self._store._current_row(atom_id, None) if isinstance(atom_id, str) else None
        if row is None:
            raise KeyError(atom_id)
        return self._store._engine.atom_at(row)

    def _ids(self) -> list[str]:
        eng = self._store._engine
        snap = eng.snapshot
        t = eng.table
        n = snap.n
        live = (t.tx_to[:n] == OPEN) & ~t.dead[:n]
        return [t.atom_ids[c] for c in np.unique(t.atom_code[:n][live])]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids())

    def __len__(self) -> int:
        return len(self._ids())

    def __contains__(self, atom_id: object) -> bool:
        return isinstance(atom_id, str) and self._store._current_row(atom_id, None) is not None


class BitemporalMemoryStore:
    """The seed's store, backed by one :class:`aether.Memory` (see the module docstring).

    Parameters
    ----------
    config
        ``None`` (in-memory), a store directory, a mapping of :func:`aether.open` keyword
        arguments (``{"path": ..., "model": ...}``), or an open :class:`aether.Memory` to wrap.
    embedder
        The embedding model (default: the store's recorded model, or all-MiniLM-L6-v2).
    """

    def __init__(self, config: Any = None, *, embedder: Embedder | None = None) -> None:
        self._owns = True
        if isinstance(config, api.Memory):
            if embedder is not None:
                raise InvalidInputError("give embedder= when opening a store, not when wrapping a Memory")
            self._memory = config
            self._owns = False
        elif config is None:
            emb: Embedder = embedder if embedder is not None else _default_embedder()
            if embedder is None:
                emb.embed(["warm-up"])  # load the shared model now, not inside the first write
            self._memory = api.open(embedder=emb)
        elif isinstance(config, str | os.PathLike):
            self._memory = api.open(config, embedder=embedder)
        elif isinstance(config, Mapping):
            kwargs = dict(config)
            path = kwargs.pop("path", None)
            if embedder is not None:
                kwargs["embedder"] = embedder
            try:
                self._memory = api.open(path, **kwargs)
            except TypeError as exc:
                raise InvalidInputError(f"bad store config: {exc}") from None
        else:
            raise InvalidInputError("config must be None, a path, a mapping of aether.open options, or a Memory")
        self.config = config
        #: The atoms currently believed, by id (a live view of the engine, not a copy).
        self.memory_atoms: Mapping[str, MemoryAtom] = _AtomsView(self)

    @property
    def memory(self) -> api.Memory:
        """The underlying :class:`aether.Memory` (the full bitemporal API)."""
        return self._memory

    @property
    def path(self) -> str | None:
        """The store directory, or ``None`` in memory (so a ``StatePersistenceManager`` can share it)."""
        return self._memory.path

    @property
    def _engine(self) -> Engine:
        return self._memory.engine

    # ------------------------------------------------------------------ helpers
    def _current_row(self, atom_id: str, as_of: int | None) -> int | None:
        """The atom's version believed at ``as_of``: the one valid now, else the latest-starting one."""
        eng = self._engine
        snap = eng.snapshot
        t_ = eng.resolve_as_of(as_of, snap)
        t = eng.table
        rows = [r for r in eng.atom_rows(atom_id, snap) if t.tx_from[r] <= t_ < t.tx_to[r]]
        if not rows:
            return None
        now = eng.clock()
        return max(rows, key=lambda r: (bool(t.valid_from[r] <= now < t.valid_to[r]), int(t.valid_from[r])))

    @staticmethod
    def _validate_memory_atom(memory_atom: MemoryAtom) -> ValidationResult:
        """The seed's checks (the engine re-checks everything before it writes)."""
        errors: list[str] = []
        if not memory_atom.atom_id:
            errors.append("Missing atom_id")
        if not memory_atom.content.inline or not memory_atom.content.inline.strip():
            errors.append("Missing content")
        if not memory_atom.modality:
            errors.append("Missing modality")
        q = memory_atom.quality_score
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
            errors.append("Invalid quality_score")
        return ValidationResult(is_valid=not errors, errors=errors)

    # ------------------------------------------------------------------ store
    def _store(self, memory_atom: MemoryAtom) -> StorageResult:
        if not isinstance(memory_atom, MemoryAtom):
            return StorageResult(success=False, error="store_memory takes a MemoryAtom")
        check = self._validate_memory_atom(memory_atom)
        if not check.is_valid:
            return StorageResult(success=False, error=f"Memory atom validation failed: {check.errors}")
        stored = self._memory.add(
            memory_atom.content.inline,
            tags=memory_atom.tags,
            metadata=memory_atom.metadata,
            valid_from=memory_atom.valid_from,
            valid_to=memory_atom.valid_to,
            modality=getattr(memory_atom.modality, "value", memory_atom.modality),  # an enum, or its str
            subject=memory_atom.subject,
            quality_score=memory_atom.quality_score,
            atom_id=memory_atom.atom_id,
            content_metadata=memory_atom.content.metadata,
        )
        memory_atom.tx_from = stored.tx_from
        memory_atom.version_id = stored.version_id
        return StorageResult(
            success=True, atom_id=stored.atom_id, storage_timestamp=stored.tx_from, version_id=stored.version_id
        )

    async def store_memory(self, memory_atom: MemoryAtom) -> StorageResult:
        """Store ``memory_atom`` as a new version (seed API; failures come back as ``success=False``)."""
        try:
            return await asyncio.to_thread(self._store, memory_atom)
        except AetherError as exc:
            logger.error("Memory storage failed: %s: %s", type(exc).__name__, exc)
            return StorageResult(success=False, error=f"Memory storage failed: {exc}")

    # ------------------------------------------------------------------ retrieve
    def _retrieve(self, atom_id: str, query_time: datetime | None, as_of: datetime | None) -> MemoryAtom | None:
        check_atom_id(atom_id)
        t = _opt_us(as_of, "as_of")
        if query_time is not None:
            row = self._engine.get_row(atom_id, to_us(query_time, name="query_time"), t)
        else:
            row = self._current_row(atom_id, t)
        if row is None:
            return None
        self._engine.record_access(atom_id)
        return self._engine.atom_at(row)

    async def retrieve_memory(
        self, atom_id: str, query_time: datetime | None = None, *, as_of: datetime | None = None
    ) -> MemoryAtom | None:
        """The atom's version valid at ``query_time`` (default: its current one), or ``None``; counts an access."""
        try:
            return await asyncio.to_thread(self._retrieve, atom_id, query_time, as_of)
        except InvalidInputError:
            raise
        except AetherError as exc:
            logger.error("Memory retrieval failed: %s: %s", type(exc).__name__, exc)
            return None

    # ------------------------------------------------------------------ query
    def _mask(self, query: MemoryQuery, snap: Snapshot) -> np.ndarray:
        eng = self._engine
        as_of = eng.resolve_as_of(_opt_us(query.as_of, "as_of"), snap)
        valid_at = _opt_us(query.query_time, "query_time")
        m = eng.mask(snap, as_of=as_of, valid_at=valid_at, valid_during=None, tags=None)
        if query.time_range is not None:
            m &= eng.mask(snap, as_of=as_of, valid_at=None, valid_during=api._during(query.time_range), tags=None)
        if query.tags:
            m &= self._tag_mask(dict(query.tags), m, snap.n)
        return m

    def _tag_mask(self, tags: dict[str, Any], candidates: np.ndarray, n: int) -> np.ndarray:
        """Rows where every pair holds in the tags (indexed), else the content metadata or metadata (scanned)."""
        t = self._engine.table
        fast = t.tag_mask(tags, n)  # a value tags cannot hold (a list...) simply has no posting
        out = fast & candidates
        want = {k: dumps(v) for k, v in tags.items()}
        for r in np.flatnonzero(candidates & ~fast):
            txt = t.text(int(r))
            if all(
                any(k in d and dumps(d[k]) == v for d in (txt["tags"], txt["content_meta"], txt["metadata"]))
                for k, v in want.items()
            ):
                out[r] = True
        return out

    def _query(self, query: MemoryQuery) -> list[MemoryAtom]:
        if not isinstance(query, MemoryQuery):
            raise InvalidInputError("query_memories takes a MemoryQuery")
        eng = self._engine
        snap = eng.snapshot
        rows = np.flatnonzero(self._mask(query, snap))
        t = eng.table
        if query.content_query is not None:
            q = eng.query_vectors([query.content_query])[0]
            # The ``limit`` most similar atoms; another sort_by then reorders them.
            picked = [r for r, _ in eng.exact_topk(q, rows, query.limit, dedupe=True)]
        else:
            # One version per atom: the one valid now, else the latest-starting one.
            now = eng.clock()
            valid_now = (t.valid_from[rows] <= now) & (now < t.valid_to[rows])
            order = np.lexsort((t.valid_from[rows], valid_now, t.atom_code[rows]))
            codes = t.atom_code[rows][order]
            last = np.ones(len(order), np.bool_)
            last[:-1] = codes[1:] != codes[:-1]
            picked = [int(r) for r in rows[order][last]]
            if query.sort_by == "relevance":
                picked.sort(key=lambda r: (-float(t.quality[r]), -int(t.tx_from[r]), t.atom_ids[t.atom_code[r]]))
        if query.sort_by == "timestamp":
            picked.sort(key=lambda r: (-int(t.tx_from[r]), t.atom_ids[t.atom_code[r]]))
        elif query.sort_by == "access_count":
            counts = {r: eng.access_of(t.atom_ids[t.atom_code[r]])[0] for r in picked}
            picked.sort(key=lambda r: -counts[r])  # stable: ties keep relevance order
        return [eng.atom_at(r) for r in picked[: query.limit]]

    async def query_memories(self, query: MemoryQuery) -> list[MemoryAtom]:
        """Atoms matching ``query``, ordered by ``query.sort_by``, at most ``query.limit``."""
        try:
            return await asyncio.to_thread(self._query, query)
        except InvalidInputError:
            raise
        except AetherError as exc:
            logger.error("Memory query failed: %s: %s", type(exc).__name__, exc)
            return []

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the underlying store (not when it wraps a ``Memory`` it did not open)."""
        if self._owns:
            self._memory.close()

    def __enter__(self) -> BitemporalMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> BitemporalMemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"<aether.BitemporalMemoryStore {self._memory!r}>"


__all__ = ["BitemporalMemoryStore", "MemoryQuery", "StorageResult", "ValidationResult"]
