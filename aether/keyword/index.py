"""The keyword index: a tantivy BM25 index over atom content, kept as a derived index.

One tantivy document per version row: the analysed ``content`` and the row's ``version_id``
(indexed, and a fast field so hits map back to rows in bulk). Filters are never stored in
tantivy: the engine's row mask is the one source of truth for valid time, transaction time,
tags and erasure, and a search applies it to the BM25 ranking (see :meth:`KeywordIndex.search`).

Durability. A plain on-disk store keeps the index under ``<store>/keyword/``. A write of up to
``TAIL_MAX_ROWS`` rows (``on_commit``) puts its rows' analysed terms into an in-memory tail
(:mod:`aether.keyword.tail`) and wakes a background thread that adds them to tantivy and
commits (an fsync): a search right after a write never pays for that commit, and scores the tail
with the statistics of the committed index plus the tail, so its results equal a committed
index's. A larger write (a bulk load) goes to the tantivy writer directly and the next search,
checkpoint or close commits it, so the bulk pays for one commit.
After a crash the index simply lacks the newest rows: on open it finds the largest indexed
``version_id`` and indexes the rows after it (the WAL replay has already restored them).
Encrypted, read-only and in-memory stores keep the index in RAM and rebuild it from the
decrypted rows on open, so no plaintext term ever reaches the disk of an encrypted store.
"""


from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _ondisk
from . import tail as _bm25
from ._analysis import _TOKENIZER, _analyzer, _tantivy, available, iter_contents
from ._analysis import ANALYZER as ANALYZER  # the format record's names, importable from here as before
from ._ondisk import FORMAT as FORMAT
from ._scoring import _Scoring, _topk

if TYPE_CHECKING:
    from ..engine.query import Snapshot
    from ..engine.store import Engine

#: Directory (under the store) of the persisted index.
DIRNAME = "keyword"
#: A filter selecting at most this many rows, and at most this fraction of all rows, is pushed
#: into the tantivy query as a set of version ids. Wider filters read the ranking in pages
#: instead: building a large term set costs more than the few extra pages (measured on
#: Cranfield, all 1,398 rows selected: 5.8 ms a query pushed down against 0.3 ms paged).
PUSHDOWN_MAX_ROWS = 4096
PUSHDOWN_MAX_FRACTION = 0.125
#: Writes of at most this many rows go through the in-memory tail (committed in the background);
#: larger ones, and any write while the tail already holds this many, are committed synchronously
#: by the next search (scoring a large tail in Python would cost more than the commit).
TAIL_MAX_ROWS = 4096
#: How long the background committer waits after a write before committing, so that a burst of
#: writes shares one commit (fsync).
COMMIT_DELAY_S = 0.02
#: Rows indexed per batch during a rebuild or catch-up.
_BATCH = 8192
_HEAP = 50_000_000


class KeywordIndex(_Scoring):
    """BM25 over atom content (tantivy), following the engine's rows as a derived index.

    Parameters
    ----------
    in_memory
        Keep the index in RAM and rebuild it on open. Default: on disk for a plain writable
        store; in RAM when the store is in-memory, read-only or encrypted.
    """

    name = "keyword"

    def __init__(self, *, in_memory: bool | None = None) -> None:
        self._tv = _tantivy()
        self._force_memory = in_memory
        self._lock = threading.RLock()
        self._index: Any = None
        self._writer: Any = None
        self._schema: Any = None
        #: term -> its tantivy term query (built once: building one costs about as much as a search)
        self._tq: dict[str, Any] = {}
        self._an: Any = None
        self._dir: Path | None = None
        self._idx_dir: Path | None = None  # where the open tantivy index lives (None: RAM)
        self._sum_cache: dict[tuple[str, int, int], int] = {}
        self._pending = 0
        self._max_vid = -1  # largest version_id ever added (committed or not)
        self._table: Any = None
        self._dead_seen = 0  # dead rows (erased, placeholders) the index has accounted for
        self._engine_ref: Any = None
        # The in-memory tail (rows analysed, not in the committed searcher) and the rows queued for
        # the background committer. ``_searcher`` is the committed searcher that goes with the tail:
        # both change together, under ``_lock``; every tantivy writer call holds ``_wl`` (never taken
        # before ``_lock`` by the committer, so the two cannot deadlock).
        self._tail = _bm25.Tail()
        self._queue: list[tuple[int, int, str]] = []
        self._wl = threading.RLock()
        self._searcher: Any = None
        self._seq = 0  # tantivy commits made; a searcher from an older commit is never installed
        self._installed = 0
        self._gen = 0  # bumped by every rebuild: a committer result from before it is discarded
        self._sync_needed = False  # rows in the writer that the tail does not cover (bulk writes)
        self._tokens: tuple[Any, float] | None = None  # (searcher, its total token count)
        # Analysed committed rows, for re-scoring them while the tail is not empty (a version's
        # content never changes; the cache is dropped with the table or a rebuild).
        self._an_cache: dict[int, tuple[Any, int]] = {}
        self._an_table: Any = None
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stop = False
        #: Counters for tests and stats: rows indexed, rebuilds, tantivy commits (background ones
        #: included), searches served with a non-empty tail.
        self.stats = {"indexed": 0, "rebuilds": 0, "commits": 0, "tail_searches": 0}

    # ------------------------------------------------------------------ setup
    @property
    def persistent(self) -> bool:
        """Whether the index lives on disk (under ``<store>/keyword/``)."""
        return self._dir is not None

    def _schema_build(self) -> Any:
        tv = self._tv
        sb = tv.SchemaBuilder()
        # Term frequencies without positions: BM25 needs no more, and the index stays small.
        sb.add_text_field("body", stored=False, tokenizer_name=_TOKENIZER, index_option="freq")
        sb.add_unsigned_field("vid", stored=False, indexed=True, fast=True)
        return sb.build()

    def _make(self, path: Path | None) -> None:
        tv = self._tv
        self._schema = self._schema_build()
        self._tq = {}
        self._an = _analyzer(tv)
        self._index = tv.Index(self._schema, path=None if path is None else str(path), reuse=True)
        self._idx_dir = path
        self._index.register_tokenizer(_TOKENIZER, self._an)
        self._index.config_reader(reload_policy="manual")
        self._writer = self._index.writer(heap_size=_HEAP, num_threads=1)
        self._pending = 0
        self._reset_tail()
        self._searcher = self._index.searcher()

    def _reset_tail(self) -> None:
        """Forget the tail and the queue (the caller re-indexes every row, or gives up the index)."""
        with self._wl:
            with self._cond:
                self._queue = []
            self._tail = _bm25.Tail()
            self._an_cache = {}
            self._gen += 1
            self._sync_needed = False

    def on_open(self, engine: Engine) -> None:
        """Load the persisted index and index the rows it lacks, or build one in RAM."""
        with self._lock:
            self._engine_ref = engine
            if self._writer is not None:  # opened again (a re-index swapped the table): let go first
                try:
                    self._commit()
                finally:
                    self._close_writer()
            memory = self._force_memory
            if memory is None:
                memory = engine.path is None or engine.read_only or bool(engine.codec.encrypted)
            if engine.codec.encrypted:
                memory = True  # never write plaintext terms next to an encrypted store
            self._dir = None if memory or engine.path is None else engine.path / DIRNAME
            if self._dir is None:
                self._rebuild(engine)
                return
            _ondisk.clean_leftovers(self._dir)
            if not _ondisk.intact(self._dir, engine, self._tv, self._sum_cache):
                self._rebuild(engine)  # another format, or damaged files: it is derived, start over
                return
            try:
                self._make(self._dir)
                self._max_vid = self._indexed_max_vid()
                t = engine.table
                last = int(t.version_id[t.n - 1]) if t.n else -1
                if self._max_vid > last:
                    raise ValueError("the index is ahead of the rows (a restored store)")
                self._reconcile(engine)
            except BaseException as exc:  # tantivy reports damage as ValueError or a Rust panic
                if isinstance(exc, KeyboardInterrupt | SystemExit | MemoryError):
                    raise
                self._close_writer()
                self._rebuild(engine)

    def _indexed_max_vid(self) -> int:
        self._index.reload()
        s = self._index.searcher()
        if s.num_docs == 0:
            return -1
        res = s.search(self._tv.Query.all_query(), 1, count=False, order_by_field="vid",
                       order=self._tv.Order.Desc)
        return int(res.hits[0][0]) if res.hits else -1

    def _rebuild(self, engine: Engine, *, exclude: set[int] | None = None) -> None:
        """(Re)create the index from the live rows; on disk, build aside and swap in."""
        self.stats["rebuilds"] += 1
        t = engine.table
        self._dead_seen = int(np.count_nonzero(t.dead[: t.n]))
        if self._dir is None:
            self._close_writer()
            self._make(None)
            self._max_vid = -1
            self._add_rows(engine, 0, engine.table.n, exclude=exclude)
            self._commit()
            return
        tmp = self._dir.with_name(self._dir.name + ".tmp")
        old = self._dir.with_name(self._dir.name + ".old")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self._close_writer()
        self._make(tmp)
        self._max_vid = -1
        self._add_rows(engine, 0, engine.table.n, exclude=exclude)
        self._commit()
        self._close_writer()
        _ondisk.write_meta(tmp, engine, self._sum_cache)
        self._index = None
        if self._dir.exists():
            self._dir.rename(old)
        tmp.rename(self._dir)
        shutil.rmtree(old, ignore_errors=True)
        self._make(self._dir)

    def _close_writer(self) -> None:
        with self._wl:
            self._close_writer_locked()

    def _close_writer_locked(self) -> None:
        if self._writer is not None:
            try:
                self._writer.rollback()
                self._writer.wait_merging_threads()
            except (ValueError, RuntimeError):
                pass
            self._writer = None

    # ------------------------------------------------------------------ maintenance
    def _add_rows(self, engine: Engine, start: int, end: int, *, exclude: set[int] | None = None) -> None:
        t = engine.table
        doc_cls = self._tv.Document
        for r, text in iter_contents(engine, start, end):
            vid = int(t.version_id[r])
            if t.dead[r] or vid <= self._max_vid or (exclude is not None and r in exclude):
                continue
            doc = doc_cls()
            doc.add_text("body", text)
            doc.add_unsigned("vid", vid)
            with self._wl:
                self._writer.add_document(doc)
            self._max_vid = vid
            self._pending += 1
            self._sync_needed = True
            self.stats["indexed"] += 1
        self._table = t

    def _catch_up(self, engine: Engine) -> None:
        t = engine.table
        first = int(np.searchsorted(t.version_id[: t.n], self._max_vid, side="right"))
        self._add_rows(engine, first, t.n)

    def _reconcile(self, engine: Engine) -> None:
        """Index the rows the index lacks; rebuild if it holds rows the engine no longer has.

        After the catch-up the index must hold exactly one document per live row. More means
        rows were erased (or compacted away) without the index being told, for instance by a
        crash between the erasure and :meth:`on_erase`: their terms must not survive, so the
        index is rebuilt from the live rows.
        """
        t = engine.table
        self._catch_up(engine)
        self._commit()
        dead = int(np.count_nonzero(t.dead[: t.n]))
        self._dead_seen = dead
        if self._searcher.num_docs != t.n - dead:
            self._rebuild(engine)

    def _commit(self) -> None:
        """Commit everything queued or added (caller holds ``_lock``) and install the new searcher."""
        with self._wl:
            last = self._drain()
            if self._pending or self.stats["commits"] == 0:
                self._tantivy_commit()
            self._sync_needed = False
            self._install(self._index.searcher(), self._seq, last)

    def _drain(self) -> int:
        """Add the queued tail rows to the tantivy writer (caller holds ``_wl``); their last version id."""
        with self._cond:
            items, self._queue = self._queue, []
        doc_cls = self._tv.Document
        for _, vid, text in items:
            doc = doc_cls()
            doc.add_text("body", text)
            doc.add_unsigned("vid", vid)
            self._writer.add_document(doc)
            self._pending += 1
        return items[-1][1] if items else -1

    def _tantivy_commit(self) -> None:
        self._writer.commit()
        self._index.reload()
        self.stats["commits"] += 1
        self._seq += 1
        self._pending = 0
        if self._idx_dir is not None and self._engine_ref is not None:
            _ondisk.write_meta(self._idx_dir, self._engine_ref, self._sum_cache)

    def _install(self, searcher: Any, seq: int, last_vid: int) -> None:
        """Make ``searcher`` (from commit ``seq``, holding rows up to ``last_vid``) the committed one."""
        if seq < self._installed:
            return
        self._installed = seq
        self._searcher = searcher
        if last_vid >= 0:
            self._tail.drop_through(last_vid)

    # ------------------------------------------------------------------ background commits
    def _wake(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stop = False
                self._thread = threading.Thread(target=self._committer, name="aether-keyword-commit", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _committer(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            with self._cond:  # let a burst of writes share the commit (a close cuts the wait short)
                if self._cond.wait_for(lambda: self._stop, timeout=COMMIT_DELAY_S):
                    return
            try:
                self._background_commit()
            except Exception:  # the next search, checkpoint or close commits synchronously instead
                with self._lock:
                    self._sync_needed = True
                time.sleep(0.1)

    def _background_commit(self) -> None:
        with self._wl:
            if self._writer is None or not self._queue:
                return
            gen = self._gen
            last = self._drain()
            self._tantivy_commit()
            searcher, seq = self._index.searcher(), self._seq
        with self._lock:
            if gen == self._gen:
                self._install(searcher, seq, last)

    def _stop_committer(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            th = self._thread
        if th is not None and th is not threading.current_thread():
            th.join(timeout=30)
        self._thread = None

    def on_commit(self, engine: Engine, start: int, end: int, closed: np.ndarray) -> None:
        """Index the appended rows (closings change no text; the row mask handles them).

        A transaction that killed earlier rows (an erasure record) makes the index drop their
        terms at once, through :meth:`on_erase`'s rebuild.
        """
        with self._lock:
            t = engine.table
            if int(np.count_nonzero(t.dead[:start])) > self._dead_seen:
                self._rebuild(engine)  # indexes the live rows, [start, end) included
            elif end - start <= TAIL_MAX_ROWS and len(self._tail) + (end - start) <= TAIL_MAX_ROWS \
                    and not self._sync_needed and self._writer is not None:
                self._to_tail(engine, start, end)
            else:
                self._add_rows(engine, start, end)
            self._dead_seen = int(np.count_nonzero(t.dead[:end]))

    def _to_tail(self, engine: Engine, start: int, end: int) -> None:
        t = engine.table
        queued = []
        for r, text in iter_contents(engine, start, end):
            vid = int(t.version_id[r])
            if t.dead[r] or vid <= self._max_vid:
                continue
            self._tail.add(r, vid, self._an.analyze(text))
            queued.append((r, vid, text))
            self._max_vid = vid
            self.stats["indexed"] += 1
        self._table = t
        if queued:
            with self._cond:
                self._queue.extend(queued)
            self._wake()

    def on_checkpoint(self, engine: Engine) -> None:
        """Make the on-disk index durable up to the checkpoint (one tantivy commit)."""
        with self._lock:
            if self._writer is not None:
                self._commit()

    def on_close(self, engine: Engine) -> None:
        """Commit what is pending (on disk) and release the tantivy writer."""
        self._stop_committer()
        with self._lock:
            if self._writer is not None and self.persistent and engine.path is not None and not engine.read_only:
                try:
                    self._commit()
                finally:
                    self._close_writer()
                if self._idx_dir is not None and self._idx_dir.is_dir():
                    _ondisk.write_meta(self._idx_dir, engine, self._sum_cache)  # merges may have finished since
                    for lock in (".tantivy-writer.lock", ".tantivy-meta.lock"):
                        lf = self._idx_dir / lock  # empty, and recreated on open: do not leave them
                        if lf.exists() and lf.stat().st_size == 0:
                            lf.unlink()
            else:
                self._close_writer()
            self._index = None
            self._searcher = None
            self._reset_tail()

    def on_erase(self, engine: Engine, rows: np.ndarray | list[int]) -> None:
        """Remove rows' terms for good (erasure, compaction).

        A tantivy delete only hides a document: its terms stay in the segment files until a
        merge. So the index is rebuilt from the remaining rows (built aside, then swapped in and
        the old files deleted), after which neither the disk nor RAM holds the erased terms.
        Cost: one re-index of the store's rows (about 13,000 rows/s on one core).
        """
        with self._lock:
            drop = {int(r) for r in np.asarray(rows, dtype=np.int64).ravel()}
            self._rebuild(engine, exclude=drop)

    def on_reset(self, engine: Engine) -> None:
        """The engine replaced its rows wholesale (e.g. a compaction rewrote them): rebuild."""
        with self._lock:
            self._rebuild(engine)

    def _fresh_searcher(self, engine: Engine) -> Any:
        with self._lock:
            if self._index is None:
                self.on_open(engine)
            elif self._table is not engine.table:
                # The engine replaced its table (a read-only refresh after a checkpoint, a
                # compaction): version ids are stable, so index the new rows and check the count.
                self._table = engine.table
                self._reconcile(engine)
            if self._sync_needed:
                self._commit()  # rows a bulk write put straight into the writer: the tail lacks them
            return self._searcher

    def _view(self, engine: Engine) -> tuple[Any, _bm25.Tail | None]:
        """The committed searcher and a snapshot of the tail that goes with it (``None`` if empty)."""
        with self._lock:
            searcher = self._fresh_searcher(engine)
            return searcher, (self._tail.copy() if len(self._tail) else None)

    def search(
        self, engine: Engine, snap: Snapshot, text: str, mask: np.ndarray, k: int, *, dedupe: bool
    ) -> tuple[list[tuple[int, float]], dict[str, Any]]:
        """Exact BM25 top-``k`` ``(row, score)`` among the rows where ``mask`` is true.

        The mask is applied to the full BM25 ranking, never to a truncated top-N: a narrow
        filter (see ``PUSHDOWN_MAX_ROWS``) goes into the tantivy query as a set of
        version ids; a wide one reads the ranking in growing pages (``4k``, ``16k``, ...) until
        ``k`` visible hits are found or the ranking is exhausted. Either way the answer equals
        brute-force BM25 over the visible rows. Scores are global BM25 (corpus statistics over
        all indexed versions), so a filter does not change a row's score.

        With rows in the in-memory tail, the tail's rows are scored in Python and the committed
        hits are re-scored with the statistics of committed index plus tail, reading the ranking
        until no unread committed hit can still reach the top ``k`` (:func:`tail.growth_bound`):
        the answer is the one a committed index would give.
        """
        tv = self._tv
        info: dict[str, Any] = {"terms": [], "strategy": "none", "examined": 0, "rounds": 0}
        terms = self.analyze(text)
        info["terms"] = terms
        n_sel = int(np.count_nonzero(mask))
        if not terms or n_sel == 0 or k <= 0:
            return [], info
        searcher, tail = self._view(engine)
        t = engine.table
        q = self._body_query(terms)
        if n_sel <= PUSHDOWN_MAX_ROWS and n_sel <= PUSHDOWN_MAX_FRACTION * snap.n:
            vids = t.version_id[np.flatnonzero(mask)].tolist()
            only = tv.Query.const_score_query(tv.Query.term_set_query(self._schema, "vid", vids), 0.0)
            q = tv.Query.boolean_query([(tv.Occur.Must, q), (tv.Occur.Must, only)])
            info["strategy"] = "pushdown"
        else:
            info["strategy"] = "deepening"
        if tail is not None:
            return self._search_tail(engine, snap, searcher, tail, q, terms, mask, k, dedupe, info)
        vid_col = t.version_id[: snap.n]
        limit = max(4 * k, 64)
        while True:
            info["rounds"] += 1
            hits = searcher.search(q, limit, count=False).hits
            info["examined"] = len(hits)
            if not hits:
                return [], info
            rows, sc = self._hit_rows(searcher, hits, vid_col, snap.n)
            keep = mask[rows]
            out = _topk(rows[keep], sc[keep], k, t.atom_code if dedupe else None)
            if len(out) >= k or len(hits) < limit:
                return out, info
            limit *= 4

    def flush(self) -> None:
        """Commit the tail now (tests, benchmarks): afterwards every row is in the committed index."""
        with self._lock:
            if self._writer is not None:
                self._commit()



def get_index(engine: Engine) -> KeywordIndex:
    """The engine's keyword index, attached (built or loaded) on first use."""
    for d in engine.derived:
        if isinstance(d, KeywordIndex):
            return d
    with engine.write_lock:
        for d in engine.derived:
            if isinstance(d, KeywordIndex):
                return d
        idx = KeywordIndex()
        engine.attach(idx)
        return idx


def attach_if_present(engine: Engine) -> None:
    """At open: keep following writes if this store already has a keyword index on disk."""
    if engine.path is None or engine.codec.encrypted or engine.read_only:
        return  # those keep the index in RAM: built on their first keyword search, not at open
    d = engine.path / DIRNAME
    if (d.exists() or d.with_name(DIRNAME + ".tmp").exists() or d.with_name(DIRNAME + ".old").exists()) \
            and available():
        get_index(engine)
