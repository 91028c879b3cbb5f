"""The engine: the write path (transactions), recovery, checkpoints and the read path.

One ``Engine`` owns one store (a directory, or nothing for an in-memory store). Writes
are serialised by a lock and made durable in the WAL before they are applied; reads
take a snapshot of the published state and never block on writes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import uuid
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._time import OPEN, Clock, from_us, from_us_strict, now_us
from .._timing import phase as _phase
from .._version import __version__
from ..embed import Embedder, as_unit_vectors, embed_queries
from ..errors import (
    CorruptionError,
    EmbeddingError,
    InvalidInputError,
    ModelMismatchError,
    ReadOnlyError,
    StorageIOError,
    StoreClosedError,
    StoreError,
)
from ..models import MemoryAtom, MemoryModality, content_from_stored
from ..storage import manifest as mf
from ..storage._fs import io_errors as _fs_errors
from ..storage._fs import tree_bytes
from ..storage.codec import Codec, PlainCodec
from ..storage.lock import WriterLock
from ..storage.rows import RowBatch, open_rows, seal_rows
from ..storage.segments import closings_table, read_segment, read_table, write_table
from ..storage.wal import WriteAheadLog
from .columns import ColumnsPut
from .derived import DerivedIndex, DerivedIndexes
from .hooks import NoHooks, StoreHooks
from .query import Snapshot, topk_rows, visible_rows
from .table import VersionTable
from .txplan import AnyOp, PutOp, plan
from .validate import DEFAULT_MAX_CONTENT_BYTES

#: Checkpoint once the WAL grows past this many bytes.
DEFAULT_CHECKPOINT_BYTES = 64 << 20
#: Read-only loads retried while a writer's checkpoint makes files look damaged or missing (~2 s).
_READ_RETRIES = 30


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer (bytes), got {value!r}")


def _retry_reads(read: Callable[[], None]) -> None:
    """Run ``read``, retrying a few times when files look damaged or missing: a writer's checkpoint
    (manifest replaced, old WAL files deleted) can race a reader."""
    for attempt in range(_READ_RETRIES):
        try:
            read()
            return
        except (CorruptionError, StorageIOError):
            if attempt == _READ_RETRIES - 1:
                raise
            time.sleep(min(0.1, 0.005 * (attempt + 1)))


#: Test hooks, by name, called at points where a race with another process can be widened
#: deterministically (``before_lock``: a writer open, just before it takes the writer lock).
TEST_HOOKS: dict[str, Callable[[], None]] = {}


def _hook(name: str) -> None:
    fn = TEST_HOOKS.get(name)
    if fn is not None:
        fn()


@dataclass
class CommitResult:
    tx: int
    seq: int
    rows: list[int] = field(default_factory=list)


class Engine:
    """A bitemporal store: see :class:`aether.Memory` for the public API."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        embedder: Embedder | None,
        read_only: bool = False,
        create: bool = True,
        clock: Clock | None = None,
        max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        codec: Codec | None = None,
        embedder_factory: Any = None,
        hooks: StoreHooks | None = None,
        derived: Sequence[Callable[[Engine], object]] = (),
    ) -> None:
        """Open (or create) the store at ``path`` (``None``: in memory).

        ``hooks`` is the layer that guards the data (see :mod:`aether.engine.hooks`; default: none);
        ``derived`` are the derived indexes to attach, each a callable that attaches its index to
        the engine once the rows are loaded (see :mod:`aether.engine.derived`).
        """
        # Checked before anything is created: a bad limit would otherwise make every write fail later.
        _check_positive_int("max_content_bytes", max_content_bytes)
        _check_positive_int("checkpoint_bytes", checkpoint_bytes)
        self.path = Path(path) if path is not None else None
        self.read_only = read_only
        self.clock: Clock = clock or now_us
        self.max_content_bytes = max_content_bytes
        self.checkpoint_bytes = checkpoint_bytes
        self.codec: Codec = codec or PlainCodec()
        self.hooks: StoreHooks = hooks if hooks is not None else NoHooks()
        self._wlock = threading.RLock()
        self._closed = False
        self._lock: WriterLock | None = None
        self._wal: WriteAheadLog | None = None
        self._access: dict[str, tuple[int, datetime]] = {}
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.manifest: dict[str, Any] = {}
        #: Derived indexes (ANN buckets, keyword index) notified of every change; see derived.py.
        self.derived = DerivedIndexes()
        #: Generation swap counter: odd while the table is swapped (readers retry; see generation_swap).
        self.gen_seq = 0
        self._swap_depth = 0
        if self.path is None:
            if embedder is None:
                embedder = embedder_factory(None) if embedder_factory else None
            assert embedder is not None
            self.embedder = embedder
            self.store_id = uuid.uuid4().hex
            self.table = VersionTable(embedder.dim)
            self._snap = Snapshot(0, 0, 0)
            self._ckpt_n = 0
            self._pending_closings: list[tuple[int, int]] = []
            self._next_vid = 0
        else:
            self._open_dir(embedder, create=create, embedder_factory=embedder_factory)
        try:  # the derived indexes (ANN buckets, keyword index) follow the rows from here on
            for attach in derived:
                attach(self)
        except BaseException:
            self._shutdown()  # joins a background seal an index may have started, releases the lock
            raise
        _OPEN_ENGINES.add(self)  # background work is stopped at interpreter exit if never closed
        # Started last, so that it does not compete with the open itself (a reader that needs the
        # vectors earlier starts it).
        self.table.start_loading()

    @property
    def write_lock(self) -> threading.RLock:
        """The lock that serialises writes (re-entrant); derived indexes and maintenance take it to
        change what readers see."""
        return self._wlock

    @property
    def closed(self) -> bool:
        """Whether the store was closed (background work of a derived index stops when it is)."""
        return self._closed

    @property
    def wal(self) -> WriteAheadLog | None:
        """The write-ahead log (``None`` in memory): the security layer chains its records into the log."""
        return self._wal

    def attach(self, index: DerivedIndex) -> None:
        """Register a derived index and let it load or build itself."""
        with self._wlock:
            index.on_open(self)
            self.derived.add(index)

    # ------------------------------------------------------------------ open / recover
    def _open_dir(self, embedder: Embedder | None, *, create: bool, embedder_factory: Any) -> None:
        assert self.path is not None
        root = self.path
        if not (root / mf.NAME).exists():
            if self.read_only or not create:
                raise mf.StoreNotFoundError(f"no aether store at {root}")
            self._check_empty(root)  # before the lock: leave no LOCK file in a folder that is not ours
        if not self.read_only:
            with _fs_errors("create store directory", root):
                root.mkdir(parents=True, exist_ok=True)
            _hook("before_lock")
            self._lock = WriterLock(root)
            self._lock.acquire()
        try:
            # Decided under the writer lock: another process may have created the store (and
            # committed to it) since the check above; creating it again would replace its manifest.
            exists = (root / mf.NAME).exists()
            if not exists:
                if self.read_only or not create:
                    raise mf.StoreNotFoundError(f"no aether store at {root}")
                self._check_empty(root)
                if embedder is None:
                    embedder = embedder_factory(None)
                assert embedder is not None
                self._create(embedder)
            if self.read_only:
                self._load_consistent(embedder, embedder_factory)
            else:
                self._load(embedder, embedder_factory)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    @staticmethod
    def _check_empty(root: Path) -> None:
        if root.exists() and any(p.name != "LOCK" for p in root.iterdir()):
            raise StoreError(f"{root} exists, is not empty and is not an aether store")

    def _create(self, embedder: Embedder) -> None:
        assert self.path is not None
        body = {
            "format_version": mf.FORMAT_VERSION,
            "aether_version": __version__,
            "store_id": uuid.uuid4().hex,
            "created_at": datetime.now(UTC).isoformat(),
            "model": {"identity": embedder.identity, "dim": embedder.dim},
            "index": {"bucket": "month", "recipe": "default", "generation": 0},
            "encryption": {"mode": "aes-256-gcm" if self.codec.encrypted else "none"},
            "checkpoint": {"seq": 0, "tx": 0, "next_version_id": 0},
            "segments": [],
            "closings": [],
        }
        self.hooks.on_create(self, body)  # keyring of an encrypted store
        (self.path / "wal").mkdir(exist_ok=True)
        mf.save(self.path, body)

    def _load(self, embedder: Embedder | None, embedder_factory: Any) -> None:
        assert self.path is not None
        body = mf.load(self.path)
        self.hooks.on_load(self, body)  # key check first: nothing is read or written with a wrong key
        identity = body["model"].get("identity")
        if embedder is None:
            embedder = embedder_factory(identity)
        assert embedder is not None
        if embedder.identity != identity:
            raise ModelMismatchError(
                f"store {self.path} was built with model {identity!r} but opened with {embedder.identity!r}; "
                "open it with the same embedder, or re-index it"
            )
        self.embedder = embedder
        self.manifest = body
        self.store_id = body["store_id"]
        dim = int(body["model"]["dim"])
        stored = sum(s["rows"] for s in body["segments"])
        # Headroom for the WAL and new writes: growing copies every vector (and waits for a background
        # load); untouched capacity costs address space, not memory.
        table = VersionTable(dim, capacity=stored + max(4096, stored // 4))
        segs = list(body["segments"])
        root = self.path

        def read_seg(entry: dict[str, Any]) -> Any:
            # Plain stores verify each file now but decode its vectors later, in the background.
            tbl, fetch = read_segment(root, entry, self.codec, self.store_id, defer_vectors=True)
            return open_rows(tbl, self.codec), fetch

        later: list[tuple[int, int, Any]] = []
        # Plain stores checksum and decode segments two at a time (no GIL; their vectors come later, so
        # what is held meanwhile is small); encrypted ones one at a time, as each holds its plaintext.
        with ThreadPoolExecutor(2) as pool:
            loaded = pool.map(read_seg, segs) if not self.codec.encrypted else map(read_seg, segs)
            for seg, fetch in loaded:
                start = table.n
                table.append_arrow(seg, defer_codes=True)
                if fetch is not None:
                    later.append((start, table.n, fetch))
        table.defer_vectors(later)
        table.finish_codes()
        for entry in body["closings"]:
            cl = read_table(self.path, entry, self.codec, self.store_id)
            vids = np.asarray(cl.column("version_id").to_numpy(), np.int64)
            try:
                rows = table.row_index(vids)
            except KeyError:
                raise CorruptionError("closing names an unknown version", path=entry["file"]) from None
            table.tx_to[rows] = np.asarray(cl.column("tx_to").to_numpy(), np.int64)
        self.table = table
        ck = body["checkpoint"]
        self._ckpt_n = table.n
        self._pending_closings = []
        self._next_vid = int(ck["next_version_id"])
        self._snap = Snapshot(table.n, int(ck["tx"]), int(ck["seq"]))
        self._wal = WriteAheadLog(self.path / "wal", self.codec, store_id=self.store_id)
        self._replay(repair=not self.read_only)
        self.hooks.after_replay(self)  # erasures, destroyed keys, hash-chained log
        if not self.read_only:
            self._remove_orphans()
            self._wal.open_for_append(self._snap.last_seq + 1)

    def _replay(self, *, repair: bool) -> None:
        assert self._wal is not None
        expected = self._snap.last_seq + 1
        for rec in self._wal.read(repair=repair):
            if rec.seq < expected:
                continue  # already folded into a segment by a checkpoint
            if rec.seq != expected:
                raise CorruptionError(
                    f"WAL sequence gap: expected {expected}, found {rec.seq}", path=str(rec.path), offset=rec.offset
                )
            self._apply(rec.header, rec.rows, where=(rec.path, rec.offset))
            expected += 1
        later = [first for first in self._wal.listed if first > expected]
        if later:
            # A WAL file starts at the sequence number it is named by: records before it are
            # missing. A reader gets here when the writer checkpointed after the reader read the
            # manifest and deleted the WAL files in between; without this its snapshot would go
            # back in time with no error (the retry reads the newer manifest).
            raise CorruptionError(
                f"WAL records {expected} to {min(later) - 1} are missing (folded into a newer checkpoint?)",
                path=str(self._wal.dir),
            )

    def _apply(
        self, header: dict[str, Any], rows: RowBatch | None, *, where: tuple[Path, int] | None = None
    ) -> None:
        """Apply one committed transaction (from a commit or from WAL replay at ``where``) and publish it."""
        t = self.table
        start = t.n
        pos = np.zeros(0, np.int64)
        closes = header.get("close") or []
        if closes:
            vids = np.asarray([c[0] for c in closes], np.int64)
            try:
                pos = t.row_index(vids)
            except KeyError:  # typed: a reader's refresh retries it, an open reports it
                path, offset = where if where is not None else (None, None)
                raise CorruptionError(
                    "a transaction closes a version that no segment or earlier record holds",
                    path=None if path is None else str(path), offset=offset,
                ) from None
            t.tx_to[pos] = np.asarray([c[1] for c in closes], np.int64)
            sealed = pos < self._ckpt_n
            if sealed.any():
                self._pending_closings.extend(
                    (int(v), int(c[1])) for v, c, s in zip(vids, closes, sealed, strict=True) if s
                )
        if rows is not None and len(rows):
            t.append(rows)
            self._next_vid = max(self._next_vid, int(rows.version_id[-1]) + 1)
        self._apply_extra(header)
        self.derived.commit(self, start, t.n, pos)
        self._snap = Snapshot(t.n, int(header["tx"]), int(header["seq"]))

    def _apply_extra(self, header: dict[str, Any]) -> None:
        """Hook for record kinds beyond inserts and closings (erasure adds one)."""
        self.hooks.apply_extra(self, header)

    def _remove_orphans(self) -> None:
        """Delete files a crashed checkpoint left behind (not named by the manifest)."""
        assert self.path is not None
        live = {e["file"] for e in self.manifest["segments"] + self.manifest["closings"]}
        for sub in ("segments", "closings"):
            d = self.path / sub
            if d.is_dir():
                for p in d.iterdir():
                    if f"{sub}/{p.name}" not in live:
                        p.unlink(missing_ok=True)
        tmp = self.path / (mf.NAME + ".tmp")
        tmp.unlink(missing_ok=True)

    def _load_consistent(self, embedder: Embedder | None, embedder_factory: Any) -> None:
        """Read-only open: a writer checkpointing meanwhile (manifest replaced, old WAL files
        deleted) can make what we read look damaged or missing; reload a few times first."""
        _retry_reads(lambda: self._load(embedder, embedder_factory))

    def _reload(self, embedder: Embedder) -> None:
        """Load the store's files again into a new table (a reader still on the old one finishes its
        background vector load itself)."""
        old = self.table
        self._load(embedder, None)
        old.stop_loading()
        self.table.start_loading()

    def refresh(self) -> None:
        """Read-only stores: pick up transactions committed by the writer since open."""
        self._check_open()
        if self.path is None or not self.read_only:
            return
        path = self.path

        def once() -> None:
            try:
                body = mf.load(path)
                if body["checkpoint"] != self.manifest.get("checkpoint") or body["segments"] != self.manifest.get(
                    "segments"
                ):
                    # A new table replaces the old (after a checkpoint, compaction or re-index): queries in
                    # other threads that overlap the swap retry, so none pairs a snapshot with the other table.
                    with self.generation_swap():
                        self._reload(self.embedder)
                else:
                    self._replay(repair=False)
            except (CorruptionError, StorageIOError):
                self.manifest = {}  # force a full reload on the next attempt
                raise

        # The writer may checkpoint (replace the manifest, delete WAL files) while we read.
        _retry_reads(once)

    # ------------------------------------------------------------------ writes
    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError("this store was opened read-only")

    def embed_missing(self, ops: Sequence[AnyOp]) -> list[PutOp | ColumnsPut]:
        """Embed the content of put operations that came without a vector (outside the write lock)."""
        todo = [op for op in ops if isinstance(op, PutOp) and op.vector is None and op.content is not None]
        done: list[PutOp | ColumnsPut] = list(todo)
        if todo:
            vecs = self._embed([op.content for op in todo if op.content is not None])
            for op, v in zip(todo, vecs, strict=True):
                op.vector = v
        for cols in ops:
            if isinstance(cols, ColumnsPut) and cols.vectors is None:
                cols.vectors = self._embed(cols.content)
                done.append(cols)
        return done

    def _embed(self, texts: list[str]) -> np.ndarray:
        vecs = as_unit_vectors(self.embedder.embed(texts), self.embedder.dim)
        if len(vecs) != len(texts):
            raise EmbeddingError(f"the embedder returned {len(vecs)} vectors for {len(texts)} texts")
        return vecs

    def check_open(self) -> None:
        """Raise ``StoreClosedError`` once the store is closed."""
        self._check_open()

    def check_writable(self) -> None:
        """Raise ``StoreClosedError`` or ``ReadOnlyError`` unless the store takes writes."""
        self._check_writable()

    def commit_record(self, header: dict[str, Any]) -> None:
        """Make a record without rows (an erasure: ``seq``, ``tx`` and its kind's fields set) durable and
        apply it; call under :attr:`write_lock` with ``header["seq"]`` the next sequence number."""
        if self._wal is not None:
            self._wal.ensure_open()
            self._wal.append(header, None)
            self.hooks.after_append(self, header)
        self._apply(header, None)

    def commit(self, ops: Sequence[AnyOp]) -> CommitResult:
        """Apply ``ops`` as one atomic, durable transaction."""
        self._check_writable()
        gen = self.gen_seq
        embedded = self.embed_missing(ops)
        with self._wlock:
            self._check_writable()
            if self.gen_seq != gen:  # a re-index swapped the model in meanwhile: embed with the new one
                self._reembed(ops, embedded)
            snap = self._snap
            tx = max(self.clock(), snap.last_tx + 1)
            header, rows, new_rows = plan(self, ops, tx, snap)
            header["seq"] = snap.last_seq + 1
            header["tx"] = tx
            if rows is not None:
                self.table.reserve(len(rows))
            if self._wal is not None:
                self._wal.ensure_open()
                self._wal.append(header, rows)
                self.hooks.after_append(self, header)
            base = self.table.n
            self._apply(header, rows)
            result = CommitResult(tx, header["seq"], [base + i for i in new_rows])
            try:
                if self._wal is not None and self._wal.size() > self.checkpoint_bytes:
                    self.checkpoint()
            except (StorageIOError, OSError) as exc:
                # The transaction is already durable in the WAL and applied: failing the write
                # here would make callers retry (and duplicate) it. The checkpoint is retried
                # at the next write.
                warnings.warn(f"aether: automatic checkpoint failed, will retry: {exc}", RuntimeWarning, stacklevel=3)
            return result

    # ------------------------------------------------------------------ checkpoint
    def checkpoint(self) -> bool:
        """Fold the WAL into a new Parquet segment and closings file; returns whether it wrote."""
        if self.path is None or self.read_only:
            return False
        with self._wlock:
            self._check_writable()
            snap = self._snap
            ck = self.manifest["checkpoint"]
            if snap.last_seq == ck["seq"]:
                return False
            assert self._wal is not None
            body = dict(self.manifest)
            seq = snap.last_seq
            if snap.n > self._ckpt_n:
                if self.table.dead[self._ckpt_n : snap.n].any():
                    table = self.hooks.segment_table(self, self._ckpt_n, snap.n)  # erased rows scrubbed, rows sealed
                else:  # nothing to scrub: the rows straight from the table's Arrow chunks (no per-row Python)
                    table = seal_rows(self.table.arrow_range(self._ckpt_n, snap.n), self.codec)
                entry = write_table(self.path, f"segments/{seq:020d}.parquet", table, self.codec, self.store_id)
                entry.update(min_version=int(self.table.version_id[self._ckpt_n]),
                             max_version=int(self.table.version_id[snap.n - 1]))
                body["segments"] = [*body["segments"], entry]
            if self._pending_closings:
                arr = np.asarray(self._pending_closings, np.int64)
                closings = closings_table(arr[:, 0], arr[:, 1])
                entry = write_table(self.path, f"closings/{seq:020d}.parquet", closings, self.codec, self.store_id)
                body["closings"] = [*body["closings"], entry]
            body["checkpoint"] = {"seq": seq, "tx": snap.last_tx, "next_version_id": self._next_vid}
            body["aether_version"] = __version__
            self.hooks.before_manifest(self, body)
            mf.save(self.path, body)
            self.manifest = body
            self._ckpt_n = snap.n
            self._pending_closings = []
            for old in self._wal.rotate(seq + 1):
                old.unlink(missing_ok=True)
            self.derived.checkpoint(self)
            return True

    def _reembed(self, ops: Sequence[AnyOp], embedded: list[PutOp | ColumnsPut]) -> None:
        from ..errors import InvalidVectorError

        for op in embedded:
            if isinstance(op, PutOp):
                op.vector = None
            else:
                op.vectors = None
        self.embed_missing(ops)
        for any_op in ops:
            v = any_op.vectors if isinstance(any_op, ColumnsPut) else getattr(any_op, "vector", None)
            if v is not None and v.shape[-1] != self.embedder.dim:
                raise InvalidVectorError(
                    f"the store was re-indexed to dimension {self.embedder.dim}; this vector has {v.shape[-1]}"
                )

    def install_generation(self, body: dict[str, Any], embedder: Embedder, moves: list[tuple[Path, Path]]) -> None:
        """Swap in a re-indexed generation (``aether.maintenance.reindex``); under the write lock, after a checkpoint.

        ``moves`` (staged file, final path) go into place first; saving ``body`` as the manifest is
        the commit point (a crash before it leaves the old generation, whose files are untouched).
        """
        assert self.path is not None and self._wal is not None
        from ..storage._fs import fsync_dir, replace

        for src, dst in moves:
            replace(src, dst)
        if moves:
            fsync_dir(moves[0][1].parent)
        with self.generation_swap():
            self.reload_from_manifest(body, embedder=embedder)
            self.derived.reopen(self, reset=True)  # new vectors: a derived index with ``on_reset`` rebuilds

    @contextlib.contextmanager
    def generation_swap(self) -> Iterator[None]:
        """Bracket a swap of the table, the embedder or the derived indexes' state.

        ``gen_seq`` is odd while the block runs and changes across it, so a query that overlaps
        the swap retries instead of pairing a snapshot with the other table. Nested brackets
        count once. Call under :attr:`write_lock` (a read-only store's refresh: in its own thread).
        """
        outer = self._swap_depth == 0
        self._swap_depth += 1
        if outer:
            self.gen_seq += 1
        try:
            yield
        finally:
            self._swap_depth -= 1
            if outer:
                self.gen_seq += 1

    def reload_from_manifest(self, body: dict[str, Any], *, embedder: Embedder | None = None) -> None:
        """Save ``body`` as the manifest (the commit point of a compaction or re-index) and load the
        store from it into a new table; call under :attr:`write_lock`, inside :meth:`generation_swap`,
        then let the derived indexes follow (``derived.reopen``)."""
        assert self.path is not None and self._wal is not None
        mf.save(self.path, body)
        self._wal.close()
        self._qcache.clear()
        self._reload(embedder or self.embedder)

    def replace_table(self, table: VersionTable, *, embedder: Embedder | None = None) -> None:
        """In-memory stores: swap in a rebuilt table (compaction, re-index); inside :meth:`generation_swap`.

        The snapshot keeps its transaction time and sequence number; the derived indexes re-open.
        """
        self.table = table
        if embedder is not None:
            self.embedder = embedder
            self._qcache.clear()
        self._snap = Snapshot(table.n, self._snap.last_tx, self._snap.last_seq)
        self._ckpt_n = 0
        self._pending_closings = []

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self.path is not None and not self.read_only:
                self.checkpoint()
        finally:
            self._closed = True
            _OPEN_ENGINES.discard(self)
            self._join_loader()
            self.derived.close(self)  # the bucketed index joins its background seal here
            self.hooks.on_close(self)
            if self._wal is not None:
                self._wal.close()
            if self._lock is not None:
                self._lock.release()

    def _join_loader(self, timeout: float = 60.0) -> None:
        """Stop the background vector load and wait for its current segment (no thread outlives ``close``)."""
        self.table.stop_loading()
        loader = getattr(self.table, "_loader", None)
        th = getattr(loader, "_thread", None)
        if isinstance(th, threading.Thread) and th.is_alive() and th is not threading.current_thread():
            th.join(timeout)

    def _shutdown(self) -> None:
        """Interpreter exit with the store still open: stop and join background work, release files.

        No checkpoint (every acknowledged write is in the WAL already); background threads are
        joined so that none runs into interpreter finalisation (which aborted the process,
        ``terminate called without an active exception``) or is cut off half-way through a file.
        """
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._join_loader()
        self.derived.wait(quiet=True)  # a failed background seal: derived data, rebuilt on open
        with contextlib.suppress(Exception):
            self.hooks.on_close(self)
        if self._wal is not None:
            with contextlib.suppress(Exception):
                self._wal.close()
        if self._lock is not None:
            self._lock.release()

    # ------------------------------------------------------------------ reads
    @property
    def snapshot(self) -> Snapshot:
        self._check_open()
        return self._snap

    def resolve_as_of(self, as_of: int | None, snap: Snapshot) -> int:
        return snap.last_tx if as_of is None else min(as_of, snap.last_tx)

    def atom_at(self, row: int) -> MemoryAtom:
        t = self.table
        txt = t.text(row)
        count, last = self._access.get(txt["atom_id"], (0, None))
        return MemoryAtom(
            atom_id=txt["atom_id"],
            modality=MemoryModality(txt["modality"]),
            content=content_from_stored(txt["content"], txt["content_meta"]),
            tags=txt["tags"],
            metadata=txt["metadata"],
            subject=txt["subject"],
            quality_score=float(t.quality[row]),
            access_count=count,
            last_accessed=last,
            version_id=int(t.version_id[row]),
            valid_from=from_us_strict(int(t.valid_from[row])),
            valid_to=from_us(int(t.valid_to[row])),
            tx_from=from_us_strict(int(t.tx_from[row])),
            tx_to=from_us(int(t.tx_to[row])),
        )

    def access_of(self, atom_id: str) -> tuple[int, datetime | None]:
        """How often the atom was read and when last (this process only)."""
        return self._access.get(atom_id, (0, None))

    def forget_access(self, atom_id: str) -> None:
        """Drop the atom's access record (an erasure)."""
        self._access.pop(atom_id, None)

    def record_access(self, atom_id: str) -> None:
        count, _ = self._access.get(atom_id, (0, None))
        self._access[atom_id] = (count + 1, datetime.now(UTC))

    def atom_rows(self, atom_id: str, snap: Snapshot) -> list[int]:
        code = self.table.atom_index.get(atom_id)
        if code is None:
            return []
        dead = self.table.dead
        return [r for r in list(self.table.atom_rows.get(code, ())) if r < snap.n and not dead[r]]

    def get_row(self, atom_id: str, valid_at: int, as_of: int | None) -> int | None:
        snap = self.snapshot
        t_ = self.resolve_as_of(as_of, snap)
        t = self.table
        best = None
        for r in self.atom_rows(atom_id, snap):
            visible = t.tx_from[r] <= t_ < t.tx_to[r] and t.valid_from[r] <= valid_at < t.valid_to[r]
            if visible and (best is None or t.tx_from[r] > t.tx_from[best]):
                best = r
        return best

    def history_rows(self, atom_id: str, as_of: int | None = None) -> list[int]:
        snap = self.snapshot
        t = self.table
        rows = self.atom_rows(atom_id, snap)
        if as_of is not None:
            rows = [r for r in rows if t.tx_from[r] <= as_of]
        return sorted(rows, key=lambda r: (int(t.tx_from[r]), int(t.valid_from[r]), r))

    def query_vectors(self, queries: list[str | np.ndarray]) -> np.ndarray:
        """Embed text queries (with a small LRU cache) and validate vector queries."""
        out = np.zeros((len(queries), self.embedder.dim), np.float32)
        texts: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            if isinstance(q, str):
                if not q.strip():
                    raise InvalidInputError("query text is empty")
                cached = self._qcache.get(q)
                if cached is not None:
                    self._qcache.move_to_end(q)
                    out[i] = cached
                else:
                    texts.setdefault(q, []).append(i)
            else:
                out[i] = as_unit_vectors(q, self.embedder.dim)[0] if np.ndim(q) <= 1 else _one_row(q, self.embedder.dim)
        if texts:
            keys = list(texts)
            with _phase("embed"):
                vecs = as_unit_vectors(embed_queries(self.embedder, keys), self.embedder.dim)
            for key, v in zip(keys, vecs, strict=True):
                for i in texts[key]:
                    out[i] = v
                self._qcache[key] = v
                if len(self._qcache) > 1024:
                    self._qcache.popitem(last=False)
        return out

    def mask(
        self,
        snap: Snapshot,
        *,
        as_of: int,
        valid_at: int | None,
        valid_during: tuple[int, int] | None,
        tags: dict[str, Any] | None,
    ) -> np.ndarray:
        """Rows ``[0, snap.n)`` visible to the query."""
        return visible_rows(
            self.table, snap.n, as_of=as_of, valid_at=valid_at, valid_during=valid_during, tags=tags
        )

    def exact_topk(
        self, q: np.ndarray, rows: np.ndarray, k: int, *, dedupe: bool
    ) -> list[tuple[int, float]]:
        """Exact cosine top-k over the given rows (one best version per atom when ``dedupe``)."""
        if len(rows) == 0 or k <= 0:
            return []
        scores = self.table.vectors[rows] @ q
        return topk_rows(rows, scores, k, self.table.atom_code if dedupe else None)

    def stats_dict(self) -> dict[str, Any]:
        snap = self.snapshot
        t = self.table
        n = snap.n
        alive = ~t.dead[:n]
        current = alive & (t.tx_to[:n] == OPEN)
        disk = 0
        if self.path is not None:
            disk = tree_bytes(self.path)  # a writer may remove files while a reader counts
        return {
            "path": str(self.path) if self.path else None,
            "model": self.embedder.identity,
            "dim": self.embedder.dim,
            "atoms_current": len(np.unique(t.atom_code[:n][current])),
            "atoms_total": len(np.unique(t.atom_code[:n][alive])),
            "versions": int(alive.sum()),
            "transactions": snap.last_seq,
            "last_commit": from_us(snap.last_tx) if snap.last_seq else None,
            "segments": len(self.manifest.get("segments", [])),
            "wal_bytes": self._wal.size() if self._wal is not None else 0,
            "disk_bytes": disk,
            "encrypted": self.codec.encrypted,
        }


#: Engines not closed yet (weakly held): their background threads are stopped at interpreter exit.
_OPEN_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _stop_background_at_exit() -> None:
    """``atexit``: runs after non-daemon threads were joined and before daemon threads are frozen."""
    for engine in list(_OPEN_ENGINES):
        with contextlib.suppress(Exception):
            engine._shutdown()
    from .vector_load import _LOADERS  # vector loads of tables replaced by a reload, not only the current ones

    for loader in list(_LOADERS):
        loader.stop()
        th = getattr(loader, "_thread", None)
        if isinstance(th, threading.Thread) and th.is_alive() and th is not threading.current_thread():
            th.join(60.0)
    for stop in list(_AT_EXIT):
        with contextlib.suppress(Exception):
            stop()


#: Stop functions of layers above (the bucketed index's prefault threads), run at interpreter exit
#: after every engine's background work was stopped.
_AT_EXIT: list[Callable[[], None]] = []


def stop_at_exit(stop: Callable[[], None]) -> None:
    """Have ``stop`` run at interpreter exit, after the engines' background work is stopped."""
    if stop not in _AT_EXIT:
        _AT_EXIT.append(stop)


atexit.register(_stop_background_at_exit)


def _one_row(q: Any, dim: int) -> np.ndarray:
    arr = as_unit_vectors(q, dim)
    if arr.shape[0] != 1:
        raise InvalidInputError("pass one query vector at a time (use search_many for batches)")
    return arr[0]
