"""Where the security layer meets the engine: :class:`SecurityHooks`, the engine's store hooks.

``aether.open`` passes :data:`HOOKS` to the engine, which calls it through the
:class:`aether.engine.hooks.StoreHooks` protocol (the engine never imports this module):

* ``on_create`` / ``on_load``: create the keyring of a new encrypted store; check the key
  (``KeyRequiredError`` / ``WrongKeyError``) before any data file is read.
* ``after_replay`` / ``apply_extra``: rows that cannot be decrypted (destroyed key) or that an
  erasure named are marked dead; erase records destroy subject keys; the hash-chained log is
  checked against the WAL and completed from it.
* ``after_append``: one log entry per durable transaction.
* ``segment_table`` / ``before_manifest``: at a checkpoint, erased rows are written scrubbed
  (no content, tags, metadata or vector) and rows are sealed; the erased version ids and the log
  head go into the manifest.

State per engine lives in a weak map, so the engine needs no security fields of its own.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import CorruptionError, StorageIOError
from ..storage._fs import io_errors
from ..storage.rows import RowBatch, seal_rows
from ..storage.wal import scan_frames
from .chain import ChainLog, payload_digest, read_entries
from .codec import ERASED, AeadCodec, bind_codec

if TYPE_CHECKING:
    from ..engine.store import Engine


@dataclass
class _State:
    erased: set[int] = field(default_factory=set)
    chain: ChainLog | None = None
    placeholders_done: int = 0
    pending_destroy: list[str] = field(default_factory=list)


_STATE: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()


def state(engine: Engine) -> _State:
    st = _STATE.get(engine)
    if st is None:
        st = _STATE[engine] = _State()
    return st


# ---------------------------------------------------------------------------- open
def on_create(engine: Engine, body: dict[str, Any]) -> None:
    """A new store: with a key, create its keyring and describe it in the manifest."""
    assert engine.path is not None
    codec = engine.codec
    if isinstance(codec, AeadCodec):
        body["encryption"] = codec.create(engine.path, body["store_id"])
    else:
        body["encryption"] = {"mode": "none"}


def on_load(engine: Engine, body: dict[str, Any]) -> None:
    """Check the key against the store before anything else is read (may replace ``engine.codec``)."""
    assert engine.path is not None
    engine.codec = bind_codec(engine.codec, engine.path, body, read_only=engine.read_only)
    st = state(engine)
    if st.chain is not None:
        st.chain.close()
    st.chain = None
    st.placeholders_done = 0
    st.erased = {int(v) for v in body.get("erased", [])}
    if not engine.read_only:
        _precheck_wal(engine, body)


def _precheck_wal(engine: Engine, body: dict[str, Any]) -> None:
    """Before recovery cuts a "torn" WAL tail: refuse if the log shows that record was committed.

    A damaged last WAL record looks like a write torn by a crash and would be cut off silently.
    The log entry of a transaction is written only after its WAL record was fsynced, so if the
    newest log entry's payload digest matches no complete WAL frame, the tail was acknowledged.
    """
    assert engine.path is not None
    log_files = ChainLog(engine.path / "log").files()
    wal_files = sorted(
        (engine.path / "wal").glob("*.wal"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1
    )
    if not log_files or not wal_files:
        return
    try:
        entries, _, _ = read_entries(log_files[-1], check_hashes=False)
    except OSError:
        return
    if not entries or int(entries[-1][1]["seq"]) <= int(body["checkpoint"]["seq"]):
        return  # everything the log knows is in segments: any WAL tail is uncommitted
    want = entries[-1][1]["payload"]
    torn_at: int | None = None
    for i, path in enumerate(reversed(wal_files)):
        with io_errors("read", path):
            data = path.read_bytes()
        frames, torn = scan_frames(path, data)
        if i == 0:
            torn_at = torn
            if torn is None:
                return
        if any(payload_digest(p) == want for _, p in frames):
            return
    raise CorruptionError(
        f"the last WAL record is damaged, but the hash-chained log shows transaction {entries[-1][1]['seq']} "
        "was committed: refusing to cut it off",
        path=str(wal_files[-1]),
        offset=torn_at,
    )


def _mark_placeholders(engine: Engine) -> None:
    """Rows that came back as erased placeholders (no key, or scrubbed) are dead."""
    t = engine.table
    code = t.atom_index.get(ERASED)
    if code is None:
        return
    st = state(engine)
    rows = t.atom_rows.get(code, [])
    if len(rows) > st.placeholders_done:
        t.dead[np.asarray(rows[st.placeholders_done :], np.int64)] = True
        st.placeholders_done = len(rows)


def after_replay(engine: Engine) -> None:
    """After segments and WAL are loaded: apply erasures; check and complete the hash-chained log."""
    st = state(engine)
    _mark_placeholders(engine)
    if st.erased:
        engine.table.dead[engine.table.rows_present(np.asarray(sorted(st.erased), np.int64))] = True
    if engine.path is None or engine.read_only:
        return
    codec = engine.codec
    chain = ChainLog(engine.path / "log", codec.log_key() if isinstance(codec, AeadCodec) else None)
    chain.open(engine.manifest.get("log"), repair=True)
    last = engine.snapshot.last_seq
    if chain.head_seq > last:
        raise CorruptionError(
            f"the log records committed transactions up to seq {chain.head_seq}, but the WAL and segments "
            f"end at seq {last}: committed WAL records are missing or damaged",
            path=str(engine.path / "wal"),
        )
    if chain.head_seq < last:
        _recover_log(engine, chain)
    st.chain = chain
    _destroy_pending(engine, strict=False)


def _recover_log(engine: Engine, chain: ChainLog) -> None:
    """Rebuild log entries lost in a power cut (the WAL was fsynced, the log not yet)."""
    assert engine.wal is not None
    cache: dict[Any, bytes] = {}
    for rec in engine.wal.read(repair=False):
        if rec.seq <= chain.head_seq:
            continue
        data = cache.get(rec.path)
        if data is None:
            data = cache[rec.path] = rec.path.read_bytes()
        length = int.from_bytes(data[rec.offset : rec.offset + 4], "little")
        payload = data[rec.offset + 8 : rec.offset + 8 + length]
        chain.append(
            rec.seq, int(rec.header["tx"]), str(rec.header.get("kind", "tx")), payload, _extra(rec.header)
        )


# ---------------------------------------------------------------------------- commits
def _extra(header: dict[str, Any]) -> dict[str, Any] | None:
    if header.get("kind") != "erase":
        return None
    return {
        "scope": header.get("scope"),
        "versions": len(header.get("erase") or []),
        "keys": len(header.get("destroy") or []),
    }


def after_append(engine: Engine, header: dict[str, Any]) -> None:
    """The WAL record of ``header`` is durable: chain it into the log."""
    st = state(engine)
    wal = engine.wal
    if st.chain is None or wal is None:
        return
    payload = getattr(wal, "last_payload", b"")
    digest = wal.last_observed if wal.observer is payload_digest and isinstance(wal.last_observed, str) else None
    wal.observer = payload_digest  # from now on the WAL hashes each payload while writing it
    try:
        st.chain.append(
            int(header["seq"]), int(header["tx"]), str(header.get("kind", "tx")), payload, _extra(header),
            digest=digest,
        )
    except StorageIOError as exc:
        # The transaction is durable; its entry is rebuilt from the WAL on the next open.
        warnings.warn(
            f"aether: log append failed, will be rebuilt from the WAL: {exc}", RuntimeWarning, stacklevel=3
        )


def apply_extra(engine: Engine, header: dict[str, Any]) -> None:
    """Per applied record: placeholder rows die; an erase record kills its rows and destroys keys."""
    _mark_placeholders(engine)
    if header.get("kind") != "erase":
        return
    st = state(engine)
    t = engine.table
    vids = np.asarray(header.get("erase") or [], np.int64)
    pos = engine.table.rows_present(vids)
    if len(pos):
        t.dead[pos] = True
        for code in np.unique(t.atom_code[pos]):
            engine.forget_access(t.atom_ids[int(code)])
    st.erased.update(int(v) for v in vids)
    kids = [str(k) for k in header.get("destroy") or []]
    if kids and not engine.read_only:
        st.pending_destroy.extend(k for k in kids if k not in st.pending_destroy)
        _destroy_pending(engine, strict=False)


def _destroy_pending(engine: Engine, *, strict: bool) -> None:
    st = state(engine)
    codec = engine.codec
    if not st.pending_destroy or not isinstance(codec, AeadCodec) or codec.keyring is None:
        st.pending_destroy.clear()
        return
    try:
        codec.keyring.destroy(list(st.pending_destroy))
        st.pending_destroy.clear()
    except StorageIOError as exc:
        if strict:
            raise
        warnings.warn(
            f"aether: could not destroy erased keys yet, will retry: {exc}", RuntimeWarning, stacklevel=3
        )


# ---------------------------------------------------------------------------- checkpoints
def scrub(batch: RowBatch, dead: np.ndarray) -> None:
    """Blank erased rows in place: only the version id and times stay (content-free)."""
    for i in np.flatnonzero(dead):
        batch.atom_id[i] = ERASED
        batch.subject[i] = ERASED
        batch.content[i] = ""
        batch.content_meta[i] = "{}"
        batch.tags[i] = {}
        batch.metadata[i] = "{}"
        batch.vectors[i] = 0.0


def segment_table(engine: Engine, start: int, end: int, *, only: np.ndarray | None = None) -> pa.Table:
    """Rows ``[start, end)`` (or the positions ``only`` among them) as a segment table: scrubbed, sealed."""
    t = engine.table
    batch = t.batch_range(start, end)
    if only is not None:
        batch = batch.take(np.asarray(only, np.int64) - start)
        dead = t.dead[np.asarray(only, np.int64)]
    else:
        dead = t.dead[start:end]
    if dead.any():
        batch.vectors = np.array(batch.vectors, np.float32, copy=True)
        scrub(batch, dead)
    return seal_rows(batch.to_arrow(), engine.codec)


def before_manifest(engine: Engine, body: dict[str, Any]) -> None:
    """A checkpoint is about to save the manifest: record erasures and the durable log head."""
    st = state(engine)
    _destroy_pending(engine, strict=True)
    body["erased"] = sorted(st.erased)
    if st.chain is not None:
        body["log"] = st.chain.sync()


def on_close(engine: Engine) -> None:
    st = _STATE.get(engine)
    if st is not None and st.chain is not None:
        st.chain.close()
        st.chain = None


def after_compaction(engine: Engine, *, table_replaced: bool) -> None:
    """The erased rows are gone from the files: forget them (and recount placeholders in a new table)."""
    st = state(engine)
    st.erased.clear()
    if table_replaced:
        st.placeholders_done = 0


class SecurityHooks:
    """The security layer as the engine's :class:`~aether.engine.hooks.StoreHooks` (state per engine in a weak map)."""

    def on_create(self, engine: Engine, body: dict[str, Any]) -> None:
        on_create(engine, body)

    def on_load(self, engine: Engine, body: dict[str, Any]) -> None:
        on_load(engine, body)

    def after_replay(self, engine: Engine) -> None:
        after_replay(engine)

    def apply_extra(self, engine: Engine, header: dict[str, Any]) -> None:
        apply_extra(engine, header)

    def after_append(self, engine: Engine, header: dict[str, Any]) -> None:
        after_append(engine, header)

    def segment_table(self, engine: Engine, start: int, end: int, *, only: np.ndarray | None = None) -> pa.Table:
        return segment_table(engine, start, end, only=only)

    def before_manifest(self, engine: Engine, body: dict[str, Any]) -> None:
        before_manifest(engine, body)

    def after_compaction(self, engine: Engine, *, table_replaced: bool) -> None:
        after_compaction(engine, table_replaced=table_replaced)

    def on_close(self, engine: Engine) -> None:
        on_close(engine)


#: The hooks ``aether.open`` wires into every store it opens.
HOOKS = SecurityHooks()
