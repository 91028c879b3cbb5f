"""Planning a batch of puts, corrections, retractions and deletes per batch, with vectorised numpy.

The per-row planner (:func:`aether.engine.txplan.plan_rows`) walks each operation's current
versions in Python. When every operation names a different atom, the operations cannot see
each other's pending rows, so the whole batch can be cut at once over the version columns:
one gather of the atoms' rows, one set of interval comparisons, one sort that puts the new
rows in the per-row planner's order. The result is identical to the per-row planner's: the
same closings, the same new rows with the same fields, in the same order, so the same version
ids (``tests/test_bulk_corrections.py`` checks this against the per-row planner and the
bitemporal reference model).

A batch this planner cannot plan exactly (an atom named twice, or any operation the per-row
planner would reject) gets ``None`` back and takes the per-row path, which raises the usual
typed errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from .._time import MIN_US, OPEN
from ..storage.rows import RowBatch

if TYPE_CHECKING:
    from .store import Engine
    from .txplan import Op

#: Below this many operations the per-row planner is as fast (numpy's fixed costs dominate).
BULK_MIN_OPS = 16
#: Gather the atoms' rows with one scan of the code column when ``atoms * SCAN_FACTOR >= rows``
#: (else one ``atom_rows`` lookup per atom).
SCAN_FACTOR = 8

_PUT, _CORRECT, _RETRACT, _DELETE = 0, 1, 2, 3
#: The text columns of a version row.
_TEXT = ("atom_id", "subject", "modality", "content", "content_meta", "tags", "metadata")


def _objects(values: list[Any]) -> np.ndarray:
    """``values`` as a 1-d object array (numpy would read a list of lists as a 2-d array)."""
    out = np.empty(len(values), object)
    out[:] = values
    return out


def _gather(engine: Engine, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All rows of each op's atom (``codes[j] < 0``: none) as ``(rows, owner op)``, grouped by op in
    op order, each atom's rows in the order of ``table.atom_rows`` (ascending row)."""
    t = engine.table
    n = t.n
    m = len(codes)
    have = codes >= 0
    if n and int(have.sum()) * SCAN_FACTOR >= n:
        # Many atoms for the table's size: one pass over the code column beats a lookup per atom.
        op_of = np.full(len(t.atom_ids), -1, np.int64)
        op_of[codes[have]] = np.flatnonzero(have)
        owner_all = op_of[t.atom_code[:n]]
        rows = np.flatnonzero(owner_all >= 0)
        owner = owner_all[rows]
        order = np.argsort(owner, kind="stable")  # grouped by op, rows ascending inside a group
        return rows[order].astype(np.int64), owner[order]
    get = t.atom_rows.get
    lists = [get(int(c), ()) if c >= 0 else () for c in codes.tolist()]
    lens = np.fromiter(map(len, lists), np.int64, count=m)
    rows = np.fromiter(chain.from_iterable(lists), np.int64, count=int(lens.sum()))
    return rows, np.repeat(np.arange(m, dtype=np.int64), lens)


def plan_bulk(engine: Engine, ops: Sequence[Op], tx: int) -> tuple[dict[str, Any], RowBatch | None, list[int]] | None:
    """Plan ``ops`` (all for distinct atoms) at once; ``None`` when the per-row planner must do it."""
    from .txplan import DeleteOp, PutOp, RetractOp

    m = len(ops)
    ids = [op.atom_id for op in ops]
    if len(set(ids)) != m:
        return None
    t = engine.table
    kind_l: list[int] = []
    lo_l: list[int] = []  # put: valid_from; retract: at
    hi_l: list[int] = []  # put: valid_to
    for op in ops:
        tp = type(op)
        if tp is PutOp:
            kind_l.append(_CORRECT if op.must_exist else _PUT)  # type: ignore[union-attr]
            vf = op.valid_from  # type: ignore[union-attr]
            lo_l.append(tx if vf is None else vf)
            hi_l.append(op.valid_to)  # type: ignore[union-attr]
            if op.content is None and not op.must_exist:  # type: ignore[union-attr]
                return None  # "content is required"
        elif tp is RetractOp:
            kind_l.append(_RETRACT)
            lo_l.append(tx if op.at is None else op.at)  # type: ignore[union-attr]
            hi_l.append(OPEN)
        elif tp is DeleteOp:
            kind_l.append(_DELETE)
            lo_l.append(0)
            hi_l.append(OPEN)
        else:
            return None
    try:
        kind = np.asarray(kind_l, np.int8)
        lo = np.asarray(lo_l, np.int64)
        hi = np.asarray(hi_l, np.int64)
    except OverflowError:
        return None
    put = kind <= _CORRECT
    if bool((put & ((lo < MIN_US) | (hi <= lo))).any()):
        return None  # an invalid interval: the per-row planner names it
    index = t.atom_index.dict()
    get = index.get
    codes = np.fromiter((get(a, -1) for a in ids), np.int64, count=m)
    rows, owner = _gather(engine, codes)
    alive = ~t.dead[rows]
    known = np.bincount(owner[alive], minlength=m) > 0
    if bool((~known & (kind != _PUT)).any()):
        return None  # AtomNotFoundError, raised by the per-row planner for the first such op
    cur = alive & (t.tx_to[rows] == OPEN)
    a, b = t.valid_from[rows], t.valid_to[rows]
    k_r, lo_r, hi_r = kind[owner], lo[owner], hi[owner]
    is_put = k_r <= _CORRECT
    is_ret = k_r == _RETRACT
    # plan_put / plan_retract of aether.temporal, over every row at once.
    close = cur & np.where(is_put, (a < hi_r) & (lo_r < b), np.where(is_ret, b > lo_r, True))
    left = close & (is_put | is_ret) & (a < lo_r)  # keeps [a, lo)
    right = close & is_put & (hi_r < b)  # keeps [hi, b)
    li, ri = np.flatnonzero(left), np.flatnonzero(right)
    pj = np.flatnonzero(put)
    # Base fields of a correction: the atom's latest non-dead version, by (tx_from, row).
    corr = kind == _CORRECT
    if any(ops[j].vector is None for j in np.flatnonzero(kind == _PUT).tolist()):  # type: ignore[union-attr]
        return None  # a put that was not embedded: not for this planner
    base = np.full(m, -1, np.int64)
    if corr.any():
        sel = np.flatnonzero(alive & (k_r == _CORRECT))
        srt = sel[np.lexsort((rows[sel], t.tx_from[rows[sel]], owner[sel]))]
        last = np.r_[owner[srt][1:] != owner[srt][:-1], True] if len(srt) else np.zeros(0, np.bool_)
        base[owner[srt[last]]] = rows[srt[last]]
    # New rows in the per-row planner's order: per op, its remainders (by row, left before right),
    # then its own version.
    ent_op = np.concatenate([owner[li], owner[ri], pj])
    ent_pos = np.concatenate([2 * li, 2 * ri + 1, np.full(len(pj), 2 * len(rows), np.int64)])
    order = np.lexsort((ent_pos, ent_op))
    k = len(order)
    n_rem = len(li) + len(ri)
    src = np.concatenate([rows[li], rows[ri]])[order[order < n_rem]] if n_rem else np.zeros(0, np.int64)
    corr_j = np.flatnonzero(corr)
    # One decode per distinct row: a correction's remainder and its base are usually the same version.
    uniq, inv = np.unique(np.concatenate([src, base[corr_j]]), return_inverse=True)
    txt = t.text_columns(uniq) if len(uniq) else {c: [] for c in _TEXT}
    src_at, base_at = inv[: len(src)], inv[len(src):]
    vf_new = np.concatenate([a[li], hi_r[ri], lo[pj]])[order]
    vt_new = np.concatenate([lo_r[li], b[ri], hi[pj]])[order]
    is_rem = order < n_rem
    rem_at = np.flatnonzero(is_rem)
    prim_at = np.flatnonzero(~is_rem)  # primaries in op order: the sort is by op first
    vectors = t.vectors
    vecs = np.empty((k, t.dim), np.float32)
    quality = np.empty(k, np.float64)
    if len(rem_at):
        vecs[rem_at] = vectors[src]
        quality[rem_at] = t.quality[src]
    pops: list[Any] = [ops[j] for j in pj.tolist()]
    slot = np.full(m, -1, np.int64)
    slot[corr_j] = base_at
    pslot = slot[pj].tolist()  # per primary: its base's position in ``uniq`` (-1: no base)
    defaults = {"subject": "default", "modality": "text", "content_meta": "{}", "metadata": "{}"}
    cols: dict[str, list[Any]] = {}
    for c in _TEXT:
        vals = txt[c]
        col = np.empty(k, object)
        if len(rem_at):
            col[rem_at] = _objects([vals[i] for i in src_at.tolist()])
        if c == "atom_id":
            prim = [op.atom_id for op in pops]
        else:
            given = [getattr(op, c) for op in pops]  # PutOp's fields carry the column names
            dflt: Any = {} if c == "tags" else defaults.get(c)
            # A correction inherits what it does not restate; a plain put takes the defaults.
            prim = [g if g is not None else (vals[s] if s >= 0 else dflt) for g, s in zip(given, pslot, strict=True)]
        if len(prim_at):
            col[prim_at] = _objects(prim)
        cols[c] = col.tolist()
    if len(prim_at):
        q = [op.quality for op in pops]
        q_none = np.fromiter((v is None for v in q), np.bool_, count=len(pops))
        bidx = base[pj]
        quality[prim_at] = np.where(
            q_none & (bidx >= 0), t.quality[np.maximum(bidx, 0)], [1.0 if v is None else v for v in q]
        )
        given_vec = [op.vector for op in pops]
        have = np.fromiter((v is not None for v in given_vec), np.bool_, count=len(pops))
        if have.all():
            vecs[prim_at] = np.stack(given_vec)
        else:
            hv = np.flatnonzero(have)
            if len(hv):
                vecs[prim_at[hv]] = np.stack([given_vec[i] for i in hv.tolist()])
            nv = np.flatnonzero(~have)  # corrections without a vector keep their base's
            vecs[prim_at[nv]] = vectors[base[pj[nv]]]
    closed = np.sort(rows[close])
    vids = t.version_id[closed].tolist()
    header: dict[str, Any] = {"kind": "tx", "close": [[v, tx] for v in vids]}
    if not k:
        return header, None, []
    batch = RowBatch.new_versions(
        engine._next_vid,
        tx,
        atom_id=cols["atom_id"],
        subject=cols["subject"],
        modality=cols["modality"],
        content=cols["content"],
        content_meta=cols["content_meta"],
        tags=cols["tags"],
        metadata=cols["metadata"],
        quality=quality,
        valid_from=vf_new.astype(np.int64, copy=False),
        valid_to=vt_new.astype(np.int64, copy=False),
        vectors=vecs,
    )
    return header, batch, prim_at.tolist()
