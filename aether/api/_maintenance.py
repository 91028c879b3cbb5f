"""The facade's maintenance: checkpoint, GDPR erasure, compaction and re-indexing with a new model."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .._time import TimeLike, to_us
from ..embed import Embedder
from ..engine.compact import CompactResult
from ..maintenance.reindex import ReindexResult
from ..security.erase import EraseResult
from ._base import _MemoryBase


class _Maintenance(_MemoryBase):
    def checkpoint(self) -> bool:
        """Fold the write-ahead log into Parquet segments now (also done automatically)."""
        self._check_write()
        return self._engine.checkpoint()

    def erase(self, *, subject: str | None = None, atom_id: str | None = None) -> EraseResult:
        """Erase (GDPR) every version of a ``subject`` or of one ``atom_id``, for all valid and transaction time.

        Afterwards no get, search, history or as-of view returns the erased data. For a subject of an
        encrypted store its data key is destroyed, so no copy of any file can be decrypted for it.
        :meth:`compact` then removes the rows and vectors from disk. A content-free tombstone is
        written to the hash-chained log.

        Raises
        ------
        AtomNotFoundError
            ``atom_id`` names no atom.
        """
        self._check_write()
        from ..payloads import collect
        from ..security.erase import erase as _erase

        res = _erase(self._engine, subject=subject, atom_id=atom_id)
        if res.versions:
            collect(self._engine)  # the erased versions' payload bytes leave the disk now
        return res

    def compact(
        self, *, merge_below: int | None = None, retain: timedelta | TimeLike | None = None
    ) -> CompactResult:
        """Rewrite the store's files without erased rows and vectors (see :mod:`aether.engine.compact`).

        Parameters
        ----------
        merge_below
            Merge policy: rewrite only segments smaller than this many rows (merging neighbours),
            or holding erased or expired rows; others stay as they are. Default: rewrite everything.
        retain
            Retention: drop versions the store stopped believing (``tx_to``) before this horizon, a
            time or a ``timedelta`` back from now. As-of queries before the horizon then see less history.
        """
        self._check_write()
        from ..engine.compact import compact as _compact

        horizon = None
        if retain is not None:
            horizon = (
                self._engine.clock() - int(retain / timedelta(microseconds=1))
                if isinstance(retain, timedelta)
                else to_us(retain, name="retain")
            )
        from ..payloads import collect

        res = _compact(self._engine, merge_below=merge_below, retain_after=horizon)
        collect(self._engine)  # blobs of purged (erased, retired) versions, and orphans of a crashed write
        return res

    def reindex(
        self,
        *,
        embedder: Embedder | None = None,
        model: str | None = None,
        recipe: str | None = None,
        engine: str = "local",
        address: str | None = None,
        workers: int | None = None,
        batch_size: int = 256,
        progress: Any = None,
    ) -> ReindexResult:
        """Re-embed every version with a new model into a new generation, then swap it in atomically.

        The store keeps serving reads and writes meanwhile; writes committed during the re-index
        are caught up before the swap, and no query ever mixes generations. An interrupted
        re-index (even ``SIGKILL``) resumes from its finished parts when run again with the same model.

        Parameters
        ----------
        embedder, model
            The new embedder, or a model name (``models/`` manifest, ``hashing:DIM``). Default: the current one.
        recipe
            An index recipe name from ``indexes/`` to record for the new generation.
        engine
            ``"local"`` (this process, or a process pool with ``workers > 1``) or ``"ray"`` (``aether[ray]``).
        address
            Ray cluster address (``engine="ray"``); default: a local Ray.
        workers
            Local worker processes, or Ray embedding actors.
        progress
            ``progress(rows_done, rows_total)``, called as parts finish.

        Returns
        -------
        ReindexResult
        """
        from ..embed import embedder_for
        from ..maintenance.reindex import reindex as _reindex

        self._check_write()
        if embedder is None:
            embedder = embedder_for(model) if model is not None else self._engine.embedder
        return _reindex(
            self._engine, embedder, recipe=recipe, batch_engine=engine, address=address, workers=workers,
            batch_size=batch_size, progress=progress,
        )

