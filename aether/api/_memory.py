"""``Memory`` (the parts of ``_writes``, ``_corrections``, ``_reads`` and ``_maintenance`` combined) and ``View``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .._time import TimeLike, from_us, to_us
from ..embed import Embedder
from ..engine import search as _search
from ..engine.store import Engine
from ..engine.txplan import PutOp
from ..errors import InvalidInputError, ReadOnlyError
from ..models import MemoryAtom, StoreStats
from ._corrections import _Corrections
from ._helpers import _opt_time, _seals, _tail_rows
from ._maintenance import _Maintenance
from ._reads import _Reads
from ._writes import _Writes


class Memory(_Corrections, _Writes, _Maintenance, _Reads):
    """A bitemporal memory store. Create one with :func:`aether.open`.

    Every write is one durable transaction; reads see the state as of a valid time
    (``valid_at``, default now) and a transaction time (``as_of``, default the latest commit).
    """

    def __init__(self, engine: Engine, *, max_payload_bytes: int | None = None) -> None:
        from .. import payloads

        self._engine = engine
        limit = payloads.DEFAULT_MAX_PAYLOAD_BYTES if max_payload_bytes is None else max_payload_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"max_payload_bytes must be a positive int, got {max_payload_bytes!r}")
        self._max_payload_bytes = limit

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> str | None:
        """The store directory, or ``None`` for an in-memory store."""
        return str(self._engine.path) if self._engine.path is not None else None

    @property
    def embedder(self) -> Embedder:
        """The embedder this store uses."""
        return self._engine.embedder

    @property
    def read_only(self) -> bool:
        return self._engine.read_only

    @property
    def last_commit(self) -> datetime | None:
        """Transaction time of the latest commit (``None`` for an empty store)."""
        snap = self._engine.snapshot
        return from_us(snap.last_tx) if snap.last_seq else None

    # ------------------------------------------------------------------ package-internal
    # For the modules of this package that build on a Memory (ingest, the seed API): not public API.
    @property
    def engine(self) -> Engine:
        """The engine behind this store (package-internal: ``aether.ingest`` and ``aether.seed`` use it)."""
        return self._engine

    def check_writable(self) -> None:
        """Raise ``StoreClosedError`` or ``ReadOnlyError`` unless writes are accepted (a view: read-only)."""
        self._check_write()

    def prepare_put(self, content: Any, **options: Any) -> PutOp:
        """The validated put operation that :meth:`add` would commit (package-internal: ingest batches them)."""
        return self._put_op(content, **options)



    def view(self, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None) -> View:
        """A read-only view pinned at ``valid_at`` / ``as_of`` (defaults: now / the latest commit)."""
        snap = self._engine.snapshot
        v = self._valid_at(valid_at)
        t = self._engine.resolve_as_of(_opt_time(as_of, "as_of"), snap)
        return View(self._engine, valid_at=v, as_of=t)

    def stats(self) -> StoreStats:
        """Counts and sizes."""
        seals, seal_seconds = _seals(self._engine)
        return StoreStats(**self._engine.stats_dict(), tail_rows=_tail_rows(self._engine), seals=seals,
                          seal_seconds=seal_seconds)

    def refresh(self) -> None:
        """For a read-only store: see what the writer committed since open."""
        self._engine.refresh()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Checkpoint and release the store (idempotent)."""
        self._engine.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path or "in-memory"
        return f"<aether.Memory {where} model={self._engine.embedder.identity}>"


class View(Memory):
    """A read-only, time-pinned view of a store (from :meth:`Memory.view`). Writes raise ``ReadOnlyError``."""

    def __init__(self, engine: Engine, *, valid_at: int, as_of: int) -> None:
        super().__init__(engine)
        self._pin_valid = valid_at
        self._pin_as_of = as_of

    @property
    def valid_at(self) -> datetime | None:
        return from_us(self._pin_valid)

    @property
    def as_of(self) -> datetime | None:
        return from_us(self._pin_as_of)

    def _check_write(self) -> None:
        raise ReadOnlyError("a time-travel view is read-only")

    def checkpoint(self) -> bool:
        raise ReadOnlyError("a time-travel view is read-only")

    def _valid_at(self, valid_at: TimeLike | None) -> int:
        return self._pin_valid if valid_at is None else to_us(valid_at, name="valid_at")

    def get(
        self, atom_id: str, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None
    ) -> MemoryAtom | None:
        return super().get(atom_id, valid_at=valid_at, as_of=self._pinned(as_of))

    def _pinned(self, as_of: TimeLike | None) -> TimeLike | None:
        # A view never sees past its pinned transaction time.
        pinned = self._pin_as_of if as_of is None else min(to_us(as_of, name="as_of"), self._pin_as_of)
        return from_us(pinned)

    def history(self, atom_id: str) -> list[MemoryAtom]:
        return _search.atoms_at(self._engine, self._engine.history_rows(atom_id, self._pin_as_of))

    def _filters(self, valid_at: Any, as_of: Any, valid_during: Any, tags: Any) -> _search.Filters:
        return super()._filters(valid_at, self._pinned(as_of), valid_during, tags)

    def view(self, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None) -> View:
        return super().view(valid_at=valid_at if valid_at is not None else from_us(self._pin_valid),
                            as_of=self._pinned(as_of))

    def close(self) -> None:
        """A view does not own the store; closing it does nothing."""

