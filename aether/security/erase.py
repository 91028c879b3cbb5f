"""Erasure (GDPR): ``erase(engine, subject=...)`` or ``erase(engine, atom_id=...)``.

An erasure is one durable transaction whose WAL record is content-free: the version ids it
kills, the data keys it destroys, and its scope. Applying it (live or on replay) marks the
rows dead, so no get, search, history or as-of view returns them again, and, for a subject
of an encrypted store, destroys every data key the subject ever had. A key-destroying erasure
then purges the subject's ciphertext from the store's files at once (the segments holding its
rows are rewritten, older WAL files and the index files are removed): a keyring copy taken
earlier, with the master key of its time, would otherwise still unwrap the destroyed key and
decrypt those files. Copies of data files taken before the erasure stay readable with a keyring
copy of the same age (they were readable then). Other erasures leave the rows to
:func:`aether.engine.compact.compact`. The hash-chained log records the erasure as a tombstone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from .._time import OPEN
from ..errors import AtomNotFoundError, InvalidInputError
from .codec import AeadCodec

if TYPE_CHECKING:
    from ..engine.store import Engine


@dataclass(frozen=True)
class EraseResult:
    """What an erasure did."""

    #: versions (rows) erased
    versions: int
    #: data keys destroyed (for a subject of an encrypted store: one per key it had, else 0)
    keys_destroyed: int
    #: sequence number of the erasure's transaction (0 when nothing was erased)
    seq: int


def subject_rows(engine: Engine, subject: str, n: int) -> np.ndarray:
    """Rows ``< n`` whose subject is ``subject`` (a columnar scan of the table's text chunks)."""
    out: list[np.ndarray] = []
    for start, values in engine.table.column_slices("subject", 0, n):
        if isinstance(values, list):
            hit = np.fromiter((s == subject for s in values), np.bool_, count=len(values))
        else:
            hit = np.asarray(pc.equal(values, subject).to_numpy(zero_copy_only=False), np.bool_)
        out.append(np.flatnonzero(hit) + start)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def erase(engine: Engine, *, subject: str | None = None, atom_id: str | None = None) -> EraseResult:
    """Erase every version of a subject or of one atom (see the module docstring).

    Raises
    ------
    InvalidInputError
        Neither or both of ``subject`` and ``atom_id`` given.
    AtomNotFoundError
        ``atom_id`` names no (unerased) atom.
    """
    if (subject is None) == (atom_id is None):
        raise InvalidInputError("give exactly one of subject= or atom_id=")
    for name, v in (("subject", subject), ("atom_id", atom_id)):
        if v is not None and (not isinstance(v, str) or not v or len(v) > 256):
            raise InvalidInputError(f"{name} must be a non-empty str of at most 256 chars")
    engine.check_writable()
    with engine.write_lock:
        engine.check_writable()
        t = engine.table
        snap = engine.snapshot
        n = snap.n
        if atom_id is not None:
            code = t.atom_index.get(atom_id)
            rows = (
                np.asarray([r for r in t.atom_rows.get(code, []) if r < n], np.int64)
                if code is not None
                else None
            )
            if rows is None or not len(rows) or bool(t.dead[rows].all()):
                raise AtomNotFoundError(f"no atom {atom_id!r}")
        else:
            assert subject is not None
            rows = subject_rows(engine, subject, n)
        rows = rows[~t.dead[rows]]
        destroy: list[str] = []
        codec = engine.codec
        if subject is not None and isinstance(codec, AeadCodec) and codec.keyring is not None:
            destroy.extend(codec.keyring.key_ids_of(subject))  # every rotation gave it a new one
        if not len(rows) and not destroy:
            return EraseResult(0, 0, 0)
        tx = max(engine.clock(), snap.last_tx + 1)
        header: dict[str, Any] = {
            "kind": "erase",
            "scope": "subject" if subject is not None else "atom",
            # Close what is still believed, so derived indexes hear about the rows through on_commit.
            "close": [[int(t.version_id[r]), tx] for r in rows if t.tx_to[r] == OPEN],
            "erase": [int(v) for v in t.version_id[rows]],
            "destroy": destroy,
            "seq": snap.last_seq + 1,
            "tx": tx,
        }
        engine.commit_record(header)
        if len(rows):
            # A derived index that keeps terms or vectors of its own (the keyword index) drops the
            # erased rows for good, not only hides them.
            engine.derived.erase(engine, rows)
        if destroy and engine.path is not None and len(rows):
            _purge(engine)
        return EraseResult(len(rows), len(destroy), int(header["seq"]))


def _purge(engine: Engine) -> None:
    """Rewrite only the files holding erased rows (no merging); the erasure itself is durable already."""
    import warnings

    from ..engine.compact_policy import compact_policy
    from ..errors import StorageIOError

    try:
        compact_policy(engine, merge_below=0)
    except StorageIOError as exc:  # the erasure stands; the next compaction purges the rows
        warnings.warn(f"aether: could not purge the erased rows yet: {exc}", RuntimeWarning, stacklevel=3)
