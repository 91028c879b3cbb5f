"""Planning a transaction: which current versions a batch of operations closes, and the new rows.

Pure with respect to the store: it reads the engine's table and raises (typed errors) before
anything is written; ``Engine.commit`` then makes the result durable and applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from .._time import MIN_US, OPEN, check_interval
from ..errors import AtomNotFoundError, InvalidInputError
from ..storage.rows import RowBatch, dumps
from ..temporal import Piece, plan_put, plan_retract
from . import bulkplan

if TYPE_CHECKING:
    from .columns import ColumnsPut
    from .query import Snapshot
    from .store import Engine


@dataclass
class PutOp:
    """Insert a version of ``atom_id`` (validated fields; ``None`` times mean "now" / open)."""

    atom_id: str
    content: str | None
    content_meta: str | None
    tags: dict[str, Any] | None
    metadata: str | None
    modality: str | None
    subject: str | None
    quality: float | None
    valid_from: int | None
    valid_to: int
    vector: np.ndarray | None
    must_exist: bool = False


@dataclass
class RetractOp:
    atom_id: str
    at: int | None


@dataclass
class DeleteOp:
    atom_id: str


Op = PutOp | RetractOp | DeleteOp
#: What :meth:`Engine.commit` takes: operations, or one column batch (``engine/columns.py``).
AnyOp: TypeAlias = "Op | ColumnsPut"


@dataclass
class _Pending:
    fields: dict[str, Any]
    vector: np.ndarray
    valid_from: int
    valid_to: int
    live: bool = True



def current_pieces(engine: Engine, code: int | None, closed: dict[int, int] | set[int]) -> list[Piece[tuple[str, int]]]:
    if code is None:
        return []
    t = engine.table
    out = []
    for r in t.atom_rows.get(code, ()):
        if t.tx_to[r] == OPEN and not t.dead[r] and r not in closed:
            out.append(Piece(("r", r), int(t.valid_from[r]), int(t.valid_to[r])))
    return out

def row_fields(engine: Engine, r: int) -> dict[str, Any]:
    t = engine.table
    txt = t.text(r)
    return {
        "atom_id": txt["atom_id"],
        "subject": txt["subject"],
        "modality": txt["modality"],
        "content": txt["content"],
        "content_meta": dumps(txt["content_meta"]),
        "tags": txt["tags"],
        "metadata": dumps(txt["metadata"]),
        "quality": float(t.quality[r]),
    }

def plan_new_atoms(engine: Engine, ops: list[Op], tx: int) -> RowBatch | None:
    """The rows of a batch that only inserts brand-new atoms (bulk ingest), built column by column.

    ``None`` when the batch is anything else (an existing or repeated atom id, a correction, a
    retraction, an invalid interval...): :func:`plan` then takes its general path, which raises the
    same errors as always.
    """
    if len(ops) < 64 or any(type(op) is not PutOp or op.must_exist for op in ops):
        return None
    puts: list[PutOp] = ops  # type: ignore[assignment]
    ids = [op.atom_id for op in puts]
    if not all_new(engine, ids):
        return None
    if any(op.content is None or op.vector is None for op in puts):
        return None
    try:
        vf = np.fromiter((tx if op.valid_from is None else op.valid_from for op in puts), np.int64, count=len(puts))
        vt = np.fromiter((op.valid_to for op in puts), np.int64, count=len(puts))
    except (OverflowError, TypeError):
        return None
    if bool((vf < MIN_US).any() or (vt <= vf).any()):
        return None  # (valid_to > OPEN cannot be: int64) the general path raises the exact error
    return new_atom_rows(
        engine,
        tx,
        atom_id=ids,
        subject=["default" if op.subject is None else op.subject for op in puts],
        modality=["text" if op.modality is None else op.modality for op in puts],
        content=[op.content for op in puts],  # type: ignore[misc]
        content_meta=["{}" if op.content_meta is None else op.content_meta for op in puts],
        tags=[{} if op.tags is None else op.tags for op in puts],
        metadata=["{}" if op.metadata is None else op.metadata for op in puts],
        quality=np.fromiter((1.0 if op.quality is None else op.quality for op in puts), np.float64, count=len(puts)),
        valid_from=vf,
        valid_to=vt,
        vectors=np.stack([op.vector for op in puts]).astype(np.float32, copy=False),  # type: ignore[misc]
    )


def all_new(engine: Engine, ids: list[str]) -> bool:
    """Whether ``ids`` are distinct and none is in the store yet (the bulk-ingest fast paths)."""
    return len(set(ids)) == len(ids) and engine.table.atom_index.dict().keys().isdisjoint(ids)


def new_atom_rows(
    engine: Engine,
    tx: int,
    *,
    atom_id: list[str],
    subject: list[str],
    modality: list[str],
    content: list[str],
    content_meta: list[str],
    tags: list[dict[str, Any]],
    metadata: list[str],
    quality: np.ndarray,
    valid_from: np.ndarray,
    valid_to: np.ndarray,
    vectors: np.ndarray,
) -> RowBatch:
    """The rows of brand-new atoms (checked with :func:`all_new`), numbered and stamped with ``tx``."""
    return RowBatch.new_versions(
        engine._next_vid,
        tx,
        atom_id=atom_id,
        subject=subject,
        modality=modality,
        content=content,
        content_meta=content_meta,
        tags=tags,
        metadata=metadata,
        quality=quality,
        valid_from=valid_from,
        valid_to=valid_to,
        vectors=vectors,
        extra={"new_atoms": True},  # the table then skips its id look-ups
    )


def plan(
    engine: Engine, any_ops: Sequence[AnyOp], tx: int, snap: Snapshot
) -> tuple[dict[str, Any], RowBatch | None, list[int]]:
    """Turn operations into closings and new rows; raises before anything is written."""
    from .columns import ColumnsPut

    if len(any_ops) == 1 and isinstance(any_ops[0], ColumnsPut):  # Memory.add_columns
        bulk = any_ops[0].rows(engine, tx)
        if bulk is not None:
            return {"kind": "tx", "close": []}, bulk, list(range(len(bulk)))
        ops: list[Op] = list(any_ops[0].to_puts())  # existing or repeated ids: the general path
    else:
        ops = [op for op in any_ops if not isinstance(op, ColumnsPut)]
        if len(ops) != len(any_ops):
            raise InvalidInputError("a column batch must be a transaction of its own")
    fast = plan_new_atoms(engine, ops, tx)
    if fast is not None:
        return {"kind": "tx", "close": []}, fast, list(range(len(fast)))
    if len(ops) >= bulkplan.BULK_MIN_OPS:  # many atoms (corrections, retractions): planned per batch
        bulk_plan = bulkplan.plan_bulk(engine, ops, tx)
        if bulk_plan is not None:
            return bulk_plan
    return plan_rows(engine, ops, tx)


def plan_rows(engine: Engine, ops: Sequence[Op], tx: int) -> tuple[dict[str, Any], RowBatch | None, list[int]]:
    """The per-row planner: each operation in turn, seeing the pending rows of those before it.

    The reference for :func:`aether.engine.bulkplan.plan_bulk`, and the path of any batch that
    names an atom twice; it raises the typed error of the first invalid operation.
    """
    rp = _RowPlan(engine, tx)
    index = engine.table.atom_index.dict()
    for op in ops:
        if type(op) is PutOp and not op.must_exist and op.atom_id not in rp.by_atom and op.atom_id not in index:
            rp.put_new(op)
        elif isinstance(op, PutOp):
            rp.put(op)
        elif isinstance(op, RetractOp):
            rp.retract(op)
        else:
            rp.delete(op)
    return rp.result()


class _RowPlan:
    """The state of :func:`plan_rows`: the table rows closed so far and the pending new rows.

    A piece key is ``("r", row)`` for a stored version or ``("p", i)`` for pending row ``i``.
    """

    def __init__(self, engine: Engine, tx: int) -> None:
        self.engine = engine
        self.t = engine.table
        self.tx = tx
        self.closed: dict[int, int] = {}
        self.pending: list[_Pending] = []
        self.by_atom: dict[str, list[int]] = {}
        self.primary: list[int] = []

    # ------------------------------------------------------------------ what the atom has now
    def pieces(self, atom_id: str) -> list[Piece[tuple[str, int]]]:
        """The atom's believed versions: stored ones not closed yet, then the live pending ones."""
        # no set(closed): O(n^2) per batch
        cur = current_pieces(self.engine, self.t.atom_index.get(atom_id), self.closed)
        pending = self.pending
        cur += [
            Piece(("p", i), pending[i].valid_from, pending[i].valid_to)
            for i in self.by_atom.get(atom_id, ())
            if pending[i].live
        ]
        return cur

    def known(self, atom_id: str) -> bool:
        t = self.t
        code = t.atom_index.get(atom_id)
        return (code is not None and any(not t.dead[r] for r in t.atom_rows.get(code, ()))) or bool(
            self.by_atom.get(atom_id)
        )

    def _source(self, key: tuple[str, int]) -> tuple[dict[str, Any], np.ndarray]:
        kind, i = key
        if kind == "r":
            return row_fields(self.engine, i), self.t.vectors[i]
        return self.pending[i].fields, self.pending[i].vector

    # ------------------------------------------------------------------ changes
    def _close(self, key: tuple[str, int]) -> None:
        kind, i = key
        if kind == "r":
            self.closed[i] = self.tx
        else:
            self.pending[i].live = False

    def _add_pending(self, fields: dict[str, Any], vec: np.ndarray, vf: int, vt: int) -> int:
        self.pending.append(_Pending(fields, vec, vf, vt))
        self.by_atom.setdefault(fields["atom_id"], []).append(len(self.pending) - 1)
        return len(self.pending) - 1

    def _apply_cut(self, close_keys: list[Any], keep: list[Piece[Any]]) -> None:
        """Close ``close_keys``; the parts of them in ``keep`` come back as new rows with their fields."""
        sources = {k: self._source(k) for k in close_keys}
        for k in close_keys:
            self._close(k)
        for p in keep:
            f, v = sources[p.key]
            self._add_pending(dict(f), v, p.valid_from, p.valid_to)

    # ------------------------------------------------------------------ one operation each
    def put_new(self, op: PutOp) -> None:
        """A brand-new atom (the bulk-ingest case): nothing to cut, no defaults to inherit."""
        vf = self.tx if op.valid_from is None else op.valid_from
        check_interval(vf, op.valid_to)
        if op.content is None:
            raise InvalidInputError("content is required")
        assert op.vector is not None
        fields = {
            "atom_id": op.atom_id,
            "subject": "default" if op.subject is None else op.subject,
            "modality": "text" if op.modality is None else op.modality,
            "content": op.content,
            "content_meta": "{}" if op.content_meta is None else op.content_meta,
            "tags": {} if op.tags is None else op.tags,
            "metadata": "{}" if op.metadata is None else op.metadata,
            "quality": 1.0 if op.quality is None else op.quality,
        }
        self.primary.append(len(self.pending))
        self.by_atom[op.atom_id] = [len(self.pending)]
        self.pending.append(_Pending(fields, op.vector, vf, op.valid_to))

    def put(self, op: PutOp) -> None:
        """A version of an atom that may exist: cut what it overlaps; a correction inherits the rest."""
        if op.must_exist and not self.known(op.atom_id):
            raise AtomNotFoundError(f"no atom {op.atom_id!r} to correct")
        vf = self.tx if op.valid_from is None else op.valid_from
        check_interval(vf, op.valid_to)
        cur = self.pieces(op.atom_id)
        base: dict[str, Any] | None = None
        if op.must_exist:  # a correction inherits what it does not restate
            base = latest_fields(self.engine, op.atom_id, self.pending, self.by_atom)
        close_keys, keep = plan_put(cur, vf, op.valid_to)
        self._apply_cut(close_keys, keep)
        fields = {
            "atom_id": op.atom_id,
            "subject": op.subject if op.subject is not None else (base or {}).get("subject", "default"),
            "modality": op.modality if op.modality is not None else (base or {}).get("modality", "text"),
            "content": op.content if op.content is not None else (base or {}).get("content"),
            "content_meta": op.content_meta
            if op.content_meta is not None
            else (base or {}).get("content_meta", "{}"),
            "tags": op.tags if op.tags is not None else (base or {}).get("tags", {}),
            "metadata": op.metadata if op.metadata is not None else (base or {}).get("metadata", "{}"),
            "quality": op.quality if op.quality is not None else (base or {}).get("quality", 1.0),
        }
        if fields["content"] is None:
            raise InvalidInputError("content is required")
        vec = op.vector
        if vec is None:
            vec = (base or {}).get("_vector")
        assert vec is not None
        self.primary.append(self._add_pending(fields, vec, vf, op.valid_to))

    def retract(self, op: RetractOp) -> None:
        """End what is believed from ``op.at`` on (the parts before it stay, as new rows)."""
        if not self.known(op.atom_id):
            raise AtomNotFoundError(f"no atom {op.atom_id!r}")
        at = self.tx if op.at is None else op.at
        close_keys, keep = plan_retract(self.pieces(op.atom_id), at)
        self._apply_cut(close_keys, keep)

    def delete(self, op: DeleteOp) -> None:
        """Stop believing every version of the atom."""
        if not self.known(op.atom_id):
            raise AtomNotFoundError(f"no atom {op.atom_id!r}")
        for k in [p.key for p in self.pieces(op.atom_id)]:
            self._close(k)

    # ------------------------------------------------------------------ the plan
    def result(self) -> tuple[dict[str, Any], RowBatch | None, list[int]]:
        """The WAL header (closings), the new rows (live pending ones) and the positions of the primary rows."""
        pending = self.pending
        live = [i for i, p in enumerate(pending) if p.live]
        remap = {old: new for new, old in enumerate(live)}
        rows = None
        if live:
            ps = [pending[i] for i in live]
            rows = RowBatch.new_versions(
                self.engine._next_vid,
                self.tx,
                atom_id=[p.fields["atom_id"] for p in ps],
                subject=[p.fields["subject"] for p in ps],
                modality=[p.fields["modality"] for p in ps],
                content=[p.fields["content"] for p in ps],
                content_meta=[p.fields["content_meta"] for p in ps],
                tags=[p.fields["tags"] for p in ps],
                metadata=[p.fields["metadata"] for p in ps],
                quality=np.asarray([p.fields["quality"] for p in ps], np.float64),
                valid_from=np.asarray([p.valid_from for p in ps], np.int64),
                valid_to=np.asarray([p.valid_to for p in ps], np.int64),
                vectors=np.stack([p.vector for p in ps]).astype(np.float32, copy=False),
            )
        t = self.t
        header: dict[str, Any] = {
            "kind": "tx",
            "close": [[int(t.version_id[r]), txv] for r, txv in sorted(self.closed.items())],
        }
        return header, rows, [remap[i] for i in self.primary if i in remap]


def latest_fields(
    engine: Engine, atom_id: str, pending: list[_Pending], by_atom: dict[str, list[int]]
) -> dict[str, Any]:
    """Fields of the atom's most recently written version (for a correction's defaults)."""
    for i in reversed(by_atom.get(atom_id, [])):
        f = dict(pending[i].fields)
        f["_vector"] = pending[i].vector
        return f
    t = engine.table
    code = t.atom_index[atom_id]
    rows = [r for r in t.atom_rows[code] if not t.dead[r]]
    r = max(rows, key=lambda x: (t.tx_from[x], x))
    f = row_fields(engine, r)
    f["_vector"] = t.vectors[r]
    return f

