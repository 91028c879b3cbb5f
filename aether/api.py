"""The public facade: ``aether.open()`` returns a :class:`Memory`."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time as _time_mod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from ._time import MIN_US, OPEN, Clock, TimeLike, from_us, to_us
from .embed import (
    DEFAULT_MODEL,
    Embedder,
    SentenceTransformerEmbedder,
    as_unit_vectors,
    embedder_from_identity,
)
from .engine import search as _search
from .engine.compact import CompactResult
from .engine.store import Engine
from .engine.txplan import DeleteOp, Op, PutOp, RetractOp
from .engine.validate import (
    DEFAULT_MAX_CONTENT_BYTES,
    check_atom_id,
    check_content,
    check_json,
    check_modality,
    check_quality,
    check_subject,
    check_tags,
)
from .errors import AtomNotFoundError, InvalidInputError, InvalidIntervalError, NoPayloadError, ReadOnlyError
from .maintenance.reindex import ReindexResult
from .models import JSON_KEY, PAYLOAD_KEY, Hit, MemoryAtom, SearchPlan, StoreStats, new_atom_id
from .retrieval.fusion import DEFAULT_RRF_K as _DEFAULT_RRF_K
from .retrieval.hybrid import RANKING_OPTIONS as _RANKING_OPTIONS
from .retrieval.hybrid import check_options as _check_options
from .retrieval.hybrid import resolve_mode as _resolve_mode
from .retrieval.hybrid import run as _run_keyword
from .retrieval.hybrid import wants_run as _wants_run
from .security.erase import EraseResult
from .storage.blobs import BlobReader


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: Marks an argument that was not given (where ``None`` has a meaning of its own).
UNSET: Final = _Unset()

#: The keys an ``add_many`` item may have, in column order (``aether import`` rows too: ingest reads these).
ITEM_FIELDS = (
    "content", "tags", "metadata", "valid_from", "valid_to", "modality", "subject",
    "quality_score", "atom_id", "vector", "content_metadata",
)
ITEM_KEYS = frozenset(ITEM_FIELDS)


@contextlib.contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """No cyclic GC passes while a bulk write builds its (acyclic) per-row objects.

    Allocating 10k+ dicts and op objects triggers repeated collections that re-scan every
    object the process holds: ~30% of bulk-ingest time. Re-enabled afterwards (unless it was off).
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _IdPool:
    """Fresh atom ids drawn a few thousand at a time."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: list[str] = []

    def next(self) -> str:
        if not self._ids:
            self._ids = _new_atom_ids(4096)
            self._ids.reverse()
        return self._ids.pop()


def _checked_tags(tags: Any, seen: set[tuple[str, type, Any]]) -> dict[str, Any]:
    """``check_tags``, remembering valid one-pair dicts (bulk loads repeat a few tag values)."""
    if type(tags) is dict and len(tags) == 1:
        ((k, v),) = tags.items()
        if type(v) in (str, int, bool):  # hashable, and equal keys mean the same check result
            key = (k, type(v), v)
            if key in seen:
                return {k: v}
            out = check_tags(tags)
            seen.add(key)
            return out
    return check_tags(tags)


def _new_atom_ids(k: int) -> list[str]:
    """``k`` fresh UUID4 strings (the format of :func:`aether.models.new_atom_id`) from one ``os.urandom``."""
    if k <= 0:
        return []
    raw = np.frombuffer(os.urandom(16 * k), np.uint8).reshape(k, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.tobytes().hex()
    return [
        f"{h[j:j + 8]}-{h[j + 8:j + 12]}-{h[j + 12:j + 16]}-{h[j + 16:j + 20]}-{h[j + 20:j + 32]}"
        for j in range(0, 32 * k, 32)
    ]


def _opt_time(value: TimeLike | None, name: str) -> int | None:
    return None if value is None else to_us(value, name=name)


def _valid_interval(valid_from: Any, valid_to: Any) -> tuple[int | None, int]:
    """``valid_from`` (``None``: the commit's time) and ``valid_to`` (``None``: open) in µs, checked in order."""
    vf = _opt_time(valid_from, "valid_from")
    vt = OPEN if valid_to is None else to_us(valid_to, name="valid_to")
    if vf is not None and vt <= vf:
        raise InvalidIntervalError("valid_to must be after valid_from")
    return vf, vt


def _during(valid_during: Any) -> tuple[int, int] | None:
    if valid_during is None:
        return None
    try:
        a, b = valid_during
    except (TypeError, ValueError):
        raise InvalidInputError("valid_during must be a pair (start, end)") from None
    lo = MIN_US if a is None else to_us(a, name="valid_during[0]")
    hi = OPEN if b is None else to_us(b, name="valid_during[1]")
    if hi <= lo:
        raise InvalidIntervalError("valid_during end must be after its start")
    return lo, hi


def _with_where(tags: Any, where: Any) -> Any:
    """``tags`` plus the field tags a ``where`` filter means (see :func:`aether.payloads.where_tags`)."""
    if where is None:
        return tags
    from .payloads import where_tags

    extra = where_tags(where)
    if tags is None:
        return extra
    if not isinstance(tags, Mapping):
        return tags  # the tag check names the error
    return {**tags, **extra}


#: The plan note of a hybrid search with vector queries only (as ``aether.retrieval.hybrid.run`` writes it).
_VECTOR_HYBRID_NOTE = "vector query: no keyword half; hybrid returns the dense hits and scores"


def _tail_rows(engine: Engine) -> int:
    """Rows of the snapshot the bucketed vector index has not sealed into a partition yet."""
    from .index.bucketed import BucketedIndex

    n = engine.snapshot.n
    return max((max(0, n - d.state.covered) for d in engine.derived if isinstance(d, BucketedIndex)), default=n)


def _query_vectors(engine: Engine, queries: list[Any]) -> np.ndarray:
    """``engine.query_vectors(queries)``, with one float vector of the right size checked and
    normalised in place of the general path (its arithmetic is ``as_unit_vectors``'s, so the
    result is the same array; ~20 us of numpy calls less per search). Anything else -- texts,
    batches, wrong shapes, non-finite, zero or overflowing vectors -- goes the general way, which
    raises for bad input."""
    if len(queries) == 1:
        q = queries[0]
        if type(q) is np.ndarray and q.ndim == 1 and q.dtype.kind == "f" and q.shape[0] == engine.embedder.dim:
            arr = q.astype(np.float32, copy=False).reshape(1, -1)
            sq = np.einsum("ij,ij->i", arr, arr)
            s = float(sq[0])
            if 1e-30 < s < math.inf:  # finite and not tiny: every element finite (NaN fails both)
                return np.ascontiguousarray(arr / np.sqrt(sq)[:, None], dtype=np.float32)
    return engine.query_vectors(queries)


def _vector_only(queries: list[Any], options: Mapping[str, Any]) -> bool:
    """No text query and no re-ranking option: a hybrid search that is exactly the dense one."""
    for q in queries:
        if isinstance(q, str):
            return False
    return all(options.get(o) is None for o in _RANKING_OPTIONS)


class Memory:
    """A bitemporal memory store. Create one with :func:`aether.open`.

    Every write is one durable transaction; reads see the state as of a valid time
    (``valid_at``, default now) and a transaction time (``as_of``, default the latest commit).
    """

    def __init__(self, engine: Engine, *, max_payload_bytes: int | None = None) -> None:
        from . import payloads

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

    # ------------------------------------------------------------------ writes
    def _put_op(
        self,
        content: Any,
        *,
        tags: Any,
        metadata: Any,
        valid_from: TimeLike | None,
        valid_to: TimeLike | None,
        modality: Any,
        subject: Any,
        quality_score: Any,
        atom_id: Any,
        vector: Any,
        content_metadata: Any = None,
    ) -> PutOp:
        self._check_write()
        lim = self._engine.max_content_bytes
        vf, vt = _valid_interval(valid_from, valid_to)
        vec = None if vector is None else as_unit_vectors(vector, self._engine.embedder.dim)
        if vec is not None and vec.shape[0] != 1:
            raise InvalidInputError("vector must be a single vector")
        return PutOp(
            atom_id=new_atom_id() if atom_id is None else check_atom_id(atom_id),
            content=check_content(content, lim),
            content_meta=check_json(content_metadata, "content_metadata"),
            tags=check_tags(tags),
            metadata=check_json(metadata, "metadata"),
            modality=check_modality(modality),
            subject=check_subject(subject),
            quality=check_quality(quality_score),
            valid_from=vf,
            valid_to=vt,
            vector=None if vec is None else vec[0],
        )

    def add(
        self,
        content: str | Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        valid_from: TimeLike | None = None,
        valid_to: TimeLike | None = None,
        modality: str | _Unset = UNSET,
        subject: str = "default",
        quality_score: float = 1.0,
        atom_id: str | None = None,
        vector: Any = None,
        content_metadata: Mapping[str, Any] | None = None,
        payload: Any = None,
        content_type: str | None = None,
    ) -> MemoryAtom:
        """Store a memory valid during ``[valid_from, valid_to)`` (default ``[now, open)``).

        Parameters
        ----------
        content
            The text (for other modalities, its text rendering).
        tags
            Flat ``str -> str | int | float | bool`` labels that searches can filter on.
        metadata
            Any JSON object, stored and returned, not filtered on.
        valid_from, valid_to
            When the fact holds; ``valid_to=None`` means open-ended.
        atom_id
            Give an existing id to write a new version of that atom (an upsert).
        vector
            A pre-computed embedding of dimension ``embedder.dim``; skips the model.
        modality
            ``"text"``, ``"image"``, ``"audio"``, ``"video"`` or ``"structured"``. Default: ``"structured"``
            for a dict ``content``, the kind of ``content_type`` for a payload, else ``"text"``.
        payload
            Bytes that are not text (``bytes``, a file path or a binary file object), stored in the
            store's blob area (streamed, compressed where that helps, encrypted with the store) and
            read back with :meth:`payload`. ``content`` is then its text rendering (a caption, a
            transcript...), embedded and searched; without one, the file name or content type is used.
        content_type
            The payload's media type (``"image/png"``); default: guessed from the file name, else
            ``application/octet-stream``.

        ``content`` may also be a JSON object (a dict): a STRUCTURED atom. It is returned as the
        same object (:attr:`MemoryAtom.data`), embedded and keyword-indexed as its deterministic text
        rendering (:func:`aether.payloads.render_structured`), and its top-level scalar fields can
        be filtered on: ``search(..., where={"field": value})``.

        Returns
        -------
        MemoryAtom
            The version that was written.

        Raises
        ------
        InvalidPayloadError
            The payload exceeds ``max_payload_bytes``, ``content_type`` is not ``type/subtype``, or the
            payload is of an unsupported kind (:class:`PayloadFileError`: a file that cannot be read).
        """
        from . import payloads as P

        tags = dict(tags) if isinstance(tags, Mapping) else tags
        data = None
        if isinstance(content, Mapping):
            data = P.check_structured(content)
            content = P.render_structured(data)
            if isinstance(modality, _Unset):
                modality = "structured"
            if tags is None or isinstance(tags, dict):
                tags = {**(tags or {}), **P.field_tags(data)}
        if payload is None:
            if content_type is not None:
                raise InvalidInputError("content_type is given without a payload")
            op = self._put_op(
                content, tags=tags, metadata=metadata, valid_from=valid_from, valid_to=valid_to,
                modality="text" if isinstance(modality, _Unset) else modality, subject=subject,
                quality_score=quality_score, atom_id=atom_id, vector=vector, content_metadata=content_metadata,
            )
            if data is not None or op.content_meta != "{}":
                op.content_meta = P.stored_meta(op.content_meta or "{}", data=data)
            res = self._engine.commit([op])
            return self._engine.atom_at(res.rows[0])
        self._check_write()
        name = P.payload_name(payload)
        ct = P.check_content_type(content_type) if content_type is not None else P.guess_content_type(name)
        if isinstance(modality, _Unset):
            modality = P.modality_of(ct)
        if content is None:
            content = name or f"{modality} ({ct})"
        op = self._put_op(
            content, tags=tags, metadata=metadata, valid_from=valid_from,
            valid_to=valid_to, modality=modality, subject=subject, quality_score=quality_score,
            atom_id=atom_id, vector=vector, content_metadata=content_metadata,
        )
        P.stored_meta(op.content_meta or "{}")  # reserved keys: refused before any byte is written
        chunks, _ = P.payload_chunks(payload)
        return self._commit_with_payload(op, chunks, ct, data)

    def _commit_with_payload(self, op: PutOp, chunks: Iterator[bytes], content_type: str, data: Any) -> MemoryAtom:
        """Write the blob (durable first), then commit the row naming it; the blob is pinned meanwhile."""
        from . import payloads as P

        blobs = P.blobs_of(self._engine)
        digest, size = blobs.put(chunks, max_bytes=self._max_payload_bytes)
        try:
            op.content_meta = P.stored_meta(
                op.content_meta or "{}", payload=P.descriptor(content_type, digest, size), data=data
            )
            res = self._engine.commit([op])
        finally:
            blobs.release(digest)
        from . import spaces

        spaces.sync(self._engine)  # the modality space's vector of the new payload (if one is registered)
        return self._engine.atom_at(res.rows[0])

    def add_many(self, items: Iterable[Mapping[str, Any] | str], *, vectors: Any = None) -> list[str]:
        """Store many memories in one atomic transaction; returns their atom ids in order.

        Each item is a string or a dict with the keyword arguments of :meth:`add`.
        ``vectors`` (an ``(n, dim)`` array) gives pre-computed embeddings for all items.
        """
        self._check_write()
        try:
            items = list(items)
        except TypeError:
            raise InvalidInputError(f"add_many takes an iterable of items, got {type(items).__name__}") from None
        with _gc_paused(len(items) >= 1000):
            return self._add_many(items, vectors)

    def add_columns(
        self,
        content: Any,
        *,
        vectors: Any = None,
        atom_id: Any = None,
        valid_from: Any = None,
        valid_to: Any = None,
        tags: Any = None,
        metadata: Any = None,
        content_metadata: Any = None,
        modality: Any = "text",
        subject: Any = "default",
        quality_score: Any = 1.0,
    ) -> list[str]:
        """Store many memories given column by column, in one atomic transaction (the bulk-load path).

        The same rows as :meth:`add_many`, without one dict per row: each column is validated
        as a whole, so loading pre-embedded data is several times faster. Existing ids write new
        versions, exactly as in :meth:`add`.

        Parameters
        ----------
        content
            One text per row (a list, a numpy array or an Arrow string array).
        vectors
            An ``(n, dim)`` array of pre-computed embeddings; ``None`` embeds ``content``.
        atom_id
            One id per row, or ``None`` for fresh ids.
        valid_from, valid_to
            ``None`` (now / open-ended), one time for every row, or one per row: aware datetimes or
            ISO-8601 strings (``None`` entries allowed), a numpy ``datetime64`` array (read as UTC;
            NaT means unset) or an Arrow timestamp array with a timezone (nulls mean unset).
        tags, metadata, content_metadata
            ``None``, one mapping for every row, or one mapping (or ``None``) per row.
        modality, subject, quality_score
            One value for every row, or one per row.

        Returns
        -------
        list[str]
            The atom ids, in row order.

        Raises
        ------
        InvalidInputError
            (or a subclass) naming the first bad row; nothing is written.
        """
        self._check_write()
        from .engine import columns

        op = columns.build(
            content, limit=self._engine.max_content_bytes, dim=self._engine.embedder.dim, fresh_ids=_new_atom_ids,
            vectors=vectors, atom_id=atom_id, valid_from=valid_from, valid_to=valid_to, tags=tags,
            metadata=metadata, content_metadata=content_metadata, modality=modality, subject=subject,
            quality_score=quality_score,
        )
        if not len(op):
            return []
        ids = list(op.atom_id)
        self._engine.commit([op])
        return ids

    def _add_many(self, items: list[Any], vectors: Any) -> list[str]:
        if vectors is not None:
            vecs = as_unit_vectors(vectors, self._engine.embedder.dim)
            if vecs.shape[0] != len(items):
                raise InvalidInputError(f"{len(items)} items but {vecs.shape[0]} vectors")
        ops: list[Op] = []
        # The checks of _put_op, inlined for bulk loads: values that repeat across items
        # (subject, modality, quality) are validated once; atom ids are drawn in one batch.
        lim = self._engine.max_content_bytes
        dim = self._engine.embedder.dim
        seen_subject: dict[str, str] = {}
        seen_modality: dict[str, str] = {}
        fresh = _IdPool()
        tags_ok: set[tuple[str, type, Any]] = set()  # single-pair tag dicts already validated
        for i, item in enumerate(items):
            if isinstance(item, str):
                item = {"content": item}
            if not isinstance(item, Mapping):
                raise InvalidInputError(f"item {i}: expected a str or a dict")
            if not item.keys() <= ITEM_KEYS:
                raise InvalidInputError(f"item {i}: unknown keys {sorted(set(item) - ITEM_KEYS)}")
            if "content" not in item:
                raise InvalidInputError(f"item {i}: 'content' is required")
            get = item.get
            try:
                vf, vt = _valid_interval(get("valid_from"), get("valid_to"))
                vec = None
                if vectors is None and get("vector") is not None:
                    v1 = as_unit_vectors(get("vector"), dim)
                    if v1.shape[0] != 1:
                        raise InvalidInputError("vector must be a single vector")
                    vec = v1[0]
                aid = get("atom_id")
                aid = fresh.next() if aid is None else check_atom_id(aid)
                content = check_content(item["content"], lim)
                cmeta = get("content_metadata")
                meta = get("metadata")
                tags = get("tags")
                modality = get("modality", "text")
                mod = seen_modality.get(modality) if type(modality) is str else None
                if mod is None:
                    mod = check_modality(modality)
                    if type(modality) is str:
                        seen_modality[modality] = mod
                subject = get("subject", "default")
                subj = seen_subject.get(subject) if type(subject) is str else None
                if subj is None:
                    subj = check_subject(subject)
                    seen_subject[subj] = subj
                q = get("quality_score", 1.0)
                op = PutOp(
                    atom_id=aid,
                    content=content,
                    content_meta="{}" if cmeta is None else check_json(cmeta, "content_metadata"),
                    tags={} if tags is None else _checked_tags(tags, tags_ok),
                    metadata="{}" if meta is None else check_json(meta, "metadata"),
                    modality=mod,
                    subject=subj,
                    quality=1.0 if q == 1.0 and type(q) is float else check_quality(q),
                    valid_from=vf,
                    valid_to=vt,
                    vector=vec,
                )
            except InvalidInputError as exc:
                raise type(exc)(f"item {i}: {exc}") from None
            if vectors is not None:
                op.vector = vecs[i]  # validated and normalised above, in one vectorised pass
            ops.append(op)
        if not ops:
            return []
        self._engine.commit(ops)
        return [op.atom_id for op in ops if isinstance(op, PutOp)]

    def correct(
        self,
        atom_id: str,
        content: str | None = None,
        *,
        valid_from: TimeLike | None = None,
        valid_to: TimeLike | None = None,
        tags: Mapping[str, Any] | _Unset | None = UNSET,
        metadata: Mapping[str, Any] | _Unset | None = UNSET,
        vector: Any = None,
        payload: Any = UNSET,
        content_type: str | None = None,
    ) -> MemoryAtom:
        """Record what is now believed about ``atom_id`` for ``[valid_from, valid_to)``, past included.

        Queries as of a transaction time before the correction still see the old belief.
        Fields not given (``tags``, ``metadata``; ``content`` when ``None``; the payload) are kept
        from the atom's latest version.

        Parameters
        ----------
        content
            New text, or a new JSON object for a STRUCTURED atom.
        payload
            ``UNSET`` keeps the payload; new bytes (a path, a file object) replace it; ``None``
            removes it (the older versions keep theirs, for as-of reads).
        content_type
            The new payload's media type (as in :meth:`add`).

        Raises
        ------
        AtomNotFoundError
            If the atom does not exist.
        """
        self._check_write()
        atom_id = check_atom_id(atom_id)
        if (
            isinstance(content, Mapping) or not isinstance(payload, _Unset)
            or ((content is not None or not isinstance(tags, _Unset)) and JSON_KEY in self._latest_meta(atom_id))
        ):
            return self._correct_rich(atom_id, content, valid_from=valid_from, valid_to=valid_to, tags=tags,
                                      metadata=metadata, vector=vector, payload=payload, content_type=content_type)
        if content_type is not None:
            raise InvalidInputError("content_type is given without a payload")
        vf, vt = _valid_interval(valid_from, valid_to)
        vec = None if vector is None else as_unit_vectors(vector, self._engine.embedder.dim)[0]
        op = PutOp(
            atom_id=atom_id,
            content=None if content is None else check_content(content, self._engine.max_content_bytes),
            content_meta=None,
            tags=None if isinstance(tags, _Unset) else check_tags(tags),
            metadata=None if isinstance(metadata, _Unset) else check_json(metadata, "metadata"),
            modality=None,
            subject=None,
            quality=None,
            valid_from=vf,
            valid_to=vt,
            vector=vec,
            must_exist=True,
        )
        res = self._engine.commit([op])
        return self._engine.atom_at(res.rows[0])

    def _latest_meta(self, atom_id: str) -> dict[str, Any]:
        """The stored content metadata (reserved keys included) of the atom's most recently written version."""
        eng = self._engine
        with eng.write_lock:
            t = eng.table
            code = t.atom_index.get(atom_id)
            n = eng.snapshot.n
            rows = [r for r in t.atom_rows.get(code, []) if r < n and not t.dead[r]] if code is not None else []
            if not rows:
                raise AtomNotFoundError(f"no atom {atom_id!r} to correct")
            r = max(rows, key=lambda x: (int(t.tx_from[x]), x))
            meta: dict[str, Any] = t.text(r)["content_meta"]
            return meta

    def _correct_rich(
        self, atom_id: str, content: Any, *, valid_from: Any, valid_to: Any, tags: Any, metadata: Any,
        vector: Any, payload: Any, content_type: Any,
    ) -> MemoryAtom:
        """A correction that touches the payload, a STRUCTURED atom's object or the tags of one.

        Runs under the writer lock: the fields it restates from the latest version cannot change
        before its commit (a replacing payload is written meanwhile, holding back other writers).
        """
        with self._engine.write_lock:
            return self._correct_rich_locked(
                atom_id, content, valid_from=valid_from, valid_to=valid_to, tags=tags, metadata=metadata,
                vector=vector, payload=payload, content_type=content_type,
            )

    def _correct_rich_locked(
        self, atom_id: str, content: Any, *, valid_from: Any, valid_to: Any, tags: Any, metadata: Any,
        vector: Any, payload: Any, content_type: Any,
    ) -> MemoryAtom:
        from . import payloads as P

        base = self._latest_meta(atom_id)
        user = {k: v for k, v in base.items() if k not in (PAYLOAD_KEY, JSON_KEY)}
        data = base.get(JSON_KEY)
        modality = None
        if isinstance(content, Mapping):
            data = P.check_structured(content)
            content = P.render_structured(data)
            modality = "structured"
            if isinstance(tags, _Unset):  # the field tags follow the new object; other tags are kept
                cur = self.history(atom_id)[-1].tags
                tags = {k: v for k, v in cur.items() if not k.startswith(P.FIELD_TAG)}
        elif content is not None and data is not None:
            raise InvalidInputError("a STRUCTURED atom is corrected with a dict content")
        if data is not None and not isinstance(tags, _Unset):
            tags = {**{k: v for k, v in dict(tags or {}).items() if not k.startswith(P.FIELD_TAG)},
                    **P.field_tags(data)}
        vf, vt = _valid_interval(valid_from, valid_to)
        vec = None if vector is None else as_unit_vectors(vector, self._engine.embedder.dim)[0]
        op = PutOp(
            atom_id=atom_id,
            content=None if content is None else check_content(content, self._engine.max_content_bytes),
            content_meta=None,
            tags=None if isinstance(tags, _Unset) else check_tags(tags),
            metadata=None if isinstance(metadata, _Unset) else check_json(metadata, "metadata"),
            modality=modality,
            subject=None,
            quality=None,
            valid_from=vf,
            valid_to=vt,
            vector=vec,
            must_exist=True,
        )
        user_json = check_json(user, "content_metadata")
        if isinstance(payload, _Unset):
            if content_type is not None:
                raise InvalidInputError("content_type is given without a payload")
            desc = base.get(PAYLOAD_KEY)
            op.content_meta = P.stored_meta(user_json, payload=desc if isinstance(desc, dict) else None, data=data)
        elif payload is None:
            if content_type is not None:
                raise InvalidInputError("content_type is given without a payload")
            op.content_meta = P.stored_meta(user_json, data=data)
        else:
            name = P.payload_name(payload)
            ct = P.check_content_type(content_type) if content_type is not None else P.guess_content_type(name)
            chunks, _ = P.payload_chunks(payload)
            op.content_meta = user_json
            return self._commit_with_payload(op, chunks, ct, data)
        res = self._engine.commit([op])
        return self._engine.atom_at(res.rows[0])

    def payload(self, atom_id: str, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None) -> bytes:
        """The payload bytes of the version of ``atom_id`` true at ``valid_at`` as known at ``as_of``.

        Read whole into memory; use :meth:`open_payload` to stream a large one.

        Raises
        ------
        AtomNotFoundError
            No version of the atom at those times.
        NoPayloadError
            That version has no payload.
        CorruptionError
            The stored bytes are missing or fail their checksum or digest.
        """
        from .payloads import blobs_of

        return blobs_of(self._engine).read(self._payload_digest(atom_id, valid_at, as_of))

    def open_payload(
        self, atom_id: str, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None
    ) -> BlobReader:
        """:meth:`payload` as a binary file object read chunk by chunk (a 1 GB video needs ~1 MB of memory).

        Every chunk is checked as it is read; the digest of the whole payload is checked when the
        stream reaches its end (a ``CorruptionError`` from that last ``read``).
        """
        from .payloads import blobs_of

        return blobs_of(self._engine).open(self._payload_digest(atom_id, valid_at, as_of))

    def _payload_digest(self, atom_id: str, valid_at: Any, as_of: Any) -> str:
        atom = self.get(atom_id, valid_at=valid_at, as_of=as_of)
        if atom is None:
            raise AtomNotFoundError(f"no version of atom {atom_id!r} at those times")
        if atom.payload_digest is None:
            raise NoPayloadError(f"atom {atom_id!r} has no payload at those times")
        return atom.payload_digest

    def retract(self, atom_id: str, at: TimeLike | None = None) -> None:
        """The fact stopped being true at ``at`` (default now): its valid time is cut there."""
        self._check_write()
        self._engine.commit([RetractOp(check_atom_id(atom_id), _opt_time(at, "at"))])

    def correct_many(
        self,
        atom_id: Any,
        content: Any = None,
        *,
        vectors: Any = None,
        valid_from: Any = None,
        valid_to: Any = None,
        tags: Any = UNSET,
        metadata: Any = UNSET,
    ) -> None:
        """Correct many atoms in one atomic transaction: :meth:`correct` per row, planned per batch.

        The result is exactly that of calling :meth:`correct` for each row in order inside one
        transaction; batches that name each atom once are planned with vectorised numpy.

        Parameters
        ----------
        atom_id
            One existing atom id per row.
        content
            ``None`` (every atom keeps its content) or one text (or ``None``: keep) per row.
        vectors
            An ``(n, dim)`` array of embeddings; ``None`` embeds new content, kept content keeps its vector.
        valid_from, valid_to
            As in :meth:`add_columns`: ``None`` (now / open-ended), one time, or one per row.
        tags, metadata
            ``UNSET`` keeps each atom's latest ones; otherwise as in :meth:`add_columns`.

        Raises
        ------
        AtomNotFoundError
            If an atom does not exist; nothing is written.
        InvalidInputError
            (or a subclass) naming the first bad row; nothing is written.
        """
        self._check_write()
        from .engine import columns

        ops = columns.corrections(
            atom_id, content, limit=self._engine.max_content_bytes, dim=self._engine.embedder.dim,
            vectors=vectors, valid_from=valid_from, valid_to=valid_to, tags=None if tags is UNSET else tags,
            keep_tags=tags is UNSET, metadata=None if metadata is UNSET else metadata,
            keep_metadata=metadata is UNSET,
        )
        if ops:
            self._engine.commit(ops)

    def retract_many(self, atom_id: Any, *, at: Any = None) -> None:
        """Retract many atoms in one atomic transaction: :meth:`retract` per row, planned per batch.

        Parameters
        ----------
        atom_id
            One existing atom id per row.
        at
            ``None`` (now), one time for every row, or one per row (as ``valid_from`` in :meth:`add_columns`).

        Raises
        ------
        AtomNotFoundError
            If an atom does not exist; nothing is written.
        """
        self._check_write()
        from .engine import columns

        ops = columns.retractions(atom_id, at)
        if ops:
            self._engine.commit(ops)

    def delete(self, atom_id: str) -> None:
        """The store no longer believes ``atom_id`` for any valid time; history stays for as-of queries."""
        self._check_write()
        self._engine.commit([DeleteOp(check_atom_id(atom_id))])

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
        from .payloads import collect
        from .security.erase import erase as _erase

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
        from .engine.compact import compact as _compact

        horizon = None
        if retain is not None:
            horizon = (
                self._engine.clock() - int(retain / timedelta(microseconds=1))
                if isinstance(retain, timedelta)
                else to_us(retain, name="retain")
            )
        from .payloads import collect

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
        from .embed import embedder_for
        from .maintenance.reindex import reindex as _reindex

        self._check_write()
        if embedder is None:
            embedder = embedder_for(model) if model is not None else self._engine.embedder
        return _reindex(
            self._engine, embedder, recipe=recipe, batch_engine=engine, address=address, workers=workers,
            batch_size=batch_size, progress=progress,
        )

    def _check_write(self) -> None:
        self._engine.check_writable()

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

    # ------------------------------------------------------------------ reads
    def _valid_at(self, valid_at: TimeLike | None) -> int:
        return self._engine.clock() if valid_at is None else to_us(valid_at, name="valid_at")

    def get(
        self, atom_id: str, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None
    ) -> MemoryAtom | None:
        """The version of ``atom_id`` true at ``valid_at`` as the store knew it at ``as_of``, or ``None``."""
        row = self._engine.get_row(atom_id, self._valid_at(valid_at), _opt_time(as_of, "as_of"))
        return None if row is None else _search.atoms_at(self._engine, [row])[0]

    def history(self, atom_id: str) -> list[MemoryAtom]:
        """Every version of ``atom_id`` (closed ones included), ordered by ``tx_from``."""
        return _search.atoms_at(self._engine, self._engine.history_rows(atom_id))

    def _filters(
        self, valid_at: TimeLike | None, as_of: TimeLike | None, valid_during: Any, tags: Any
    ) -> _search.Filters:
        snap = self._engine.snapshot
        during = _during(valid_during)
        if during is not None and valid_at is not None:
            raise InvalidInputError("give valid_at or valid_during, not both")
        return _search.Filters(
            as_of=self._engine.resolve_as_of(_opt_time(as_of, "as_of"), snap),
            valid_at=None if during is not None else self._valid_at(valid_at),
            valid_during=during,
            tags=check_tags(tags) or None,
        )

    def search_many(
        self,
        queries: Sequence[str | np.ndarray] | np.ndarray,
        *,
        k: int = 10,
        valid_at: TimeLike | None = None,
        as_of: TimeLike | None = None,
        valid_during: tuple[TimeLike | None, TimeLike | None] | None = None,
        tags: Mapping[str, Any] | None = None,
        mode: str | None = None,
        fusion: str | None = None,
        rrf_k: int = 60,
        dense_weight: float | None = None,
        ranking: str | None = None,
        relevance: float | None = None,
        recency: float | None = None,
        importance: float | None = None,
        half_life: timedelta | float | None = None,
        recency_axis: str | None = None,
        diversity: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for a batch of queries (texts or an ``(m, dim)`` array)."""
        hits, _ = self._search(queries, k, valid_at, as_of, valid_during, _with_where(tags, where),
                               mode=mode, fusion=fusion, rrf_k=rrf_k, dense_weight=dense_weight, ranking=ranking,
                               relevance=relevance, recency=recency, importance=importance, half_life=half_life,
                               recency_axis=recency_axis, diversity=diversity)
        return hits

    def _search(self, *args: Any, **kwargs: Any) -> tuple[list[list[Hit]], SearchPlan | None]:
        # A re-index swaps the table and embedder in place: retry a query that overlapped the swap
        # (engine.gen_seq odd, or changed), so that no result mixes two generations.
        eng = self._engine
        while True:
            seq = eng.gen_seq
            if seq & 1:
                _time_mod.sleep(0.0005)
                continue
            try:
                out = self._search_once(*args, **kwargs)
            except Exception:
                if eng.gen_seq != seq:
                    continue
                raise
            if eng.gen_seq == seq:
                return out

    def _search_once(
        self, queries: Any, k: int, valid_at: Any, as_of: Any, valid_during: Any, tags: Any,
        *, mode: str | None = None, want: str = "hits", **fusion: Any,
    ) -> tuple[list[list[Hit]], SearchPlan | None]:
        """Hits (``want="hits"``: no plan is built) or the plan (``want="plan"``: no hits are built)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError("k must be a positive int")
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            qlist: list[Any] = list(queries)
        else:
            qlist = list(queries)
        f = self._filters(valid_at, as_of, valid_during, tags)
        eng = self._engine
        snap = eng.snapshot
        extra: dict[str, Any] = {}
        mode, fusion["fusion"] = _resolve_mode(mode, fusion.get("fusion"))
        if mode == "hybrid" and _vector_only(qlist, fusion):
            # Nothing to fuse: hybrid with vector queries is the dense search (what the keyword
            # module's run() does too, after the same option checks), without its per-call setup.
            _check_options(mode, fusion["fusion"], fusion.get("rrf_k", _DEFAULT_RRF_K), fusion.get("dense_weight"),
                           None)
            extra["notes"] = [_VECTOR_HYBRID_NOTE]
            results, buckets, selected = _search.plan_and_search(eng, snap, _query_vectors(eng, qlist), k, f)
        elif not _wants_run(mode, fusion):
            results, buckets, selected = _search.plan_and_search(eng, snap, _query_vectors(eng, qlist), k, f)
        else:  # keyword (BM25), hybrid or a re-ranking: aether.retrieval.hybrid, under the same filters
            results, buckets, selected, extra = _run_keyword(eng, snap, qlist, k, f, mode=mode, plan=want == "plan",
                                                             **fusion)
        if want == "hits":
            return _search.hits_for(eng, results), None  # one columnar read for all hits, no re-validation
        plan = SearchPlan(
            valid_at=from_us(f.valid_at) if f.valid_at is not None else None,
            valid_during=(from_us(f.valid_during[0]), from_us(f.valid_during[1])) if f.valid_during else None,
            as_of=from_us(f.as_of),
            tags=f.tags,
            k=k,
            total_rows=snap.n,
            selected_rows=selected,
            buckets_total=len(buckets),
            buckets_pruned=sum(1 for b in buckets if b.strategy == "pruned"),
            buckets=buckets,
            mode=mode,
            **extra,
        )
        return [], plan

    def search(
        self,
        query: str | np.ndarray,
        k: int = 10,
        *,
        valid_at: TimeLike | None = None,
        as_of: TimeLike | None = None,
        valid_during: tuple[TimeLike | None, TimeLike | None] | None = None,
        tags: Mapping[str, Any] | None = None,
        mode: str | None = None,
        fusion: str | None = None,
        rrf_k: int = 60,
        dense_weight: float | None = None,
        ranking: str | None = None,
        relevance: float | None = None,
        recency: float | None = None,
        importance: float | None = None,
        half_life: timedelta | float | None = None,
        recency_axis: str | None = None,
        diversity: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``k`` memories most similar to ``query``, best first.

        Parameters
        ----------
        query
            Text (embedded with the store's model) or a vector of dimension ``embedder.dim``.
        valid_at
            World time the facts must hold at (default now). Exclusive with ``valid_during``.
        as_of
            Transaction time: search what the store believed then (default the latest commit).
        valid_during
            ``(start, end)``: facts whose valid interval overlaps ``[start, end)``; ``None`` ends are open.
        tags
            ``key == value`` filters, all of which must match.
        mode
            ``"dense"`` (embedding similarity), ``"keyword"`` (BM25 over the content; text queries
            only) or ``"hybrid"`` (both, fused). Every mode applies the same time and tag filters.
            Keyword and hybrid need ``pip install 'aether[hybrid]'``. Default (``None``): hybrid with
            ``fusion="adaptive"`` (``aether.retrieval.hybrid.DEFAULT_MODE``; the measurement is there),
            and dense when tantivy is not installed. A hybrid search with a vector query returns the
            dense hits and their cosine scores. What ``Hit.score`` is in each mode: :class:`aether.Hit`.
        fusion
            Hybrid only: ``"rrf"`` (reciprocal rank fusion, the default of an explicit ``mode="hybrid"``;
            ``score = sum 1/(rrf_k + rank)``), ``"weighted"`` (``dense_weight * dense + (1 - dense_weight)
            * bm25``, each min-max scaled over the union of both halves' candidates, each candidate scored
            by both) or ``"adaptive"`` (the same with a per-query weight from how sharply each half's list
            singles out its best hit; ``dense_weight`` is then its base, default 0.6).
        ranking, relevance, recency, importance, half_life, recency_axis
            Agent-memory re-ranking of the filtered candidates (``aether.retrieval.ranking``): a preset
            (``"generative_agents"``, ``"recent"``, ``"relevance"``) and/or weights of relevance, recency
            (``0.5 ** (age / half_life)``, age in ``recency_axis`` ``"valid"`` or ``"tx"`` time up to
            ``valid_at``; half-life a timedelta or seconds, default 7 days) and importance
            (``quality_score``). Re-ranking only reorders what the time and tag filters let through.
        diversity
            MMR lambda in [0, 1] (1: plain ranking; lower: more diverse hits).
        where
            ``field == value`` filters on the top-level scalar fields of STRUCTURED atoms (all must
            match; other atoms never match). Combines with ``tags``.
        """
        if isinstance(query, np.ndarray) and query.ndim == 2:
            raise InvalidInputError("search takes one query; use search_many for a batch")
        return self._search([query], k, valid_at, as_of, valid_during, _with_where(tags, where),
                            mode=mode, fusion=fusion, rrf_k=rrf_k, dense_weight=dense_weight, ranking=ranking,
                            relevance=relevance, recency=recency, importance=importance, half_life=half_life,
                            recency_axis=recency_axis, diversity=diversity)[0][0]

    def explain(
        self,
        query: str | np.ndarray,
        k: int = 10,
        *,
        valid_at: TimeLike | None = None,
        as_of: TimeLike | None = None,
        valid_during: tuple[TimeLike | None, TimeLike | None] | None = None,
        tags: Mapping[str, Any] | None = None,
        mode: str | None = None,
        fusion: str | None = None,
        rrf_k: int = 60,
        dense_weight: float | None = None,
        ranking: str | None = None,
        relevance: float | None = None,
        recency: float | None = None,
        importance: float | None = None,
        half_life: timedelta | float | None = None,
        recency_axis: str | None = None,
        diversity: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> SearchPlan:
        """Run :meth:`search` and report its plan: rows selected, buckets pruned, per-bucket strategy
        (for keyword and hybrid modes also the query terms and both halves' ranked hits)."""
        plan = self._search([query], k, valid_at, as_of, valid_during, _with_where(tags, where), want="plan",
                            mode=mode, fusion=fusion, rrf_k=rrf_k, dense_weight=dense_weight, ranking=ranking,
                            relevance=relevance, recency=recency, importance=importance, half_life=half_life,
                            recency_axis=recency_axis, diversity=diversity)[1]
        assert plan is not None
        return plan

    def search_space(
        self,
        modality: str,
        query: Any,
        k: int = 10,
        *,
        valid_at: TimeLike | None = None,
        as_of: TimeLike | None = None,
        valid_during: tuple[TimeLike | None, TimeLike | None] | None = None,
        tags: Mapping[str, Any] | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``k`` atoms of ``modality`` whose payloads are closest to ``query`` in that modality's space.

        The space is the one of the payload embedder given as ``aether.open(..., embedders={modality:
        ...})`` (see :mod:`aether.spaces`); :meth:`search` searches the text space instead.

        Parameters
        ----------
        modality
            ``"image"``, ``"audio"`` or ``"video"``: a modality with a registered embedder.
        query
            Payload bytes (or a file path), embedded with that embedder, or a vector of its dimension.
        valid_at, as_of, valid_during, tags, where
            The filters of :meth:`search`, with the same meaning.

        Returns
        -------
        list[Hit]
            Best first; ``score`` is the cosine similarity in the modality's space.
        """
        from . import spaces

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError("k must be a positive int")
        space = spaces.space_of(self._engine, modality)
        q = space.query_vector(query)
        f = self._filters(valid_at, as_of, valid_during, _with_where(tags, where))
        eng = self._engine
        space.sync(eng)
        snap = eng.snapshot
        visible = eng.mask(snap, as_of=f.as_of, valid_at=f.valid_at, valid_during=f.valid_during, tags=f.tags)
        found = space.topk(eng, q, k, visible, dedupe=f.valid_at is None)  # a range sees several versions
        return _search.hits_for(eng, [found])[0]

    def view(self, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None) -> View:
        """A read-only view pinned at ``valid_at`` / ``as_of`` (defaults: now / the latest commit)."""
        snap = self._engine.snapshot
        v = self._valid_at(valid_at)
        t = self._engine.resolve_as_of(_opt_time(as_of, "as_of"), snap)
        return View(self._engine, valid_at=v, as_of=t)

    def stats(self) -> StoreStats:
        """Counts and sizes."""
        return StoreStats(**self._engine.stats_dict(), tail_rows=_tail_rows(self._engine))

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


def _default_factory(model: str | None) -> Any:
    def factory(identity: str | None) -> Embedder:
        if identity is None:
            return SentenceTransformerEmbedder(model or DEFAULT_MODEL)
        return embedder_from_identity(identity)

    return factory


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    embedder: Embedder | None = None,
    model: str | None = None,
    read_only: bool = False,
    create: bool = True,
    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
    checkpoint_bytes: int | None = None,
    clock: Clock | None = None,
    key: bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    max_payload_bytes: int | None = None,
    embedders: Mapping[str, Any] | None = None,
) -> Memory:
    """Open (or create) a store.

    Parameters
    ----------
    path
        Store directory; ``None`` gives an in-memory store that vanishes on close.
    embedder
        The embedding model. Default: the one recorded in the store, or all-MiniLM-L6-v2 for a new store.
    model
        A model name from ``models/`` for a new store (instead of ``embedder``).
    read_only
        Open without taking the writer lock; see new commits with :meth:`Memory.refresh`.
    create
        Create the store if ``path`` does not hold one.
    max_content_bytes
        Largest content accepted (UTF-8 bytes).
    clock
        A function returning microseconds since the epoch (tests use a fake clock).
    key, key_file
        The 32-byte master key (bytes or base64 text), or a file holding it (``aether keygen``).
        Default: ``AETHER_KEY`` (base64) or ``AETHER_KEY_FILE`` from the environment. A new store
        opened with a key is encrypted (AES-256-GCM); an encrypted store needs its key.
    max_payload_bytes
        Largest payload :meth:`Memory.add` accepts (default 4 GiB); see ``aether.payloads``.
    embedders
        ``{"image": embedder, ...}``: a payload embedder per modality (``identity``, ``dim``,
        ``embed(list of bytes)``), each with its own vector space searched by :meth:`Memory.search_space`
        (see ``aether.spaces``).

    Raises
    ------
    StoreLockedError
        If another process has the store open for writing.
    KeyRequiredError
        If the store is encrypted and no key was given.
    WrongKeyError
        If the key does not open the store (nothing was read or written).
    ModelMismatchError
        If ``embedder`` differs from the store's recorded model.
    """
    if embedder is None and model is not None:
        embedder = SentenceTransformerEmbedder(model)
    kwargs: dict[str, Any] = {}
    if checkpoint_bytes is not None:
        kwargs["checkpoint_bytes"] = checkpoint_bytes
    # The one place the engine's plug-ins are wired: the security layer's hooks (key check, erasures,
    # the hash-chained log) and the derived indexes (the bucketed ANN index always, the keyword index
    # once the store has one).
    from .index import attach_default
    from .keyword import attach_if_present
    from .security.engine_hooks import HOOKS

    engine = Engine(
        path,
        embedder=embedder,
        read_only=read_only,
        create=create,
        clock=clock,
        max_content_bytes=max_content_bytes,
        embedder_factory=_default_factory(model),
        codec=_codec_for(path, key, key_file),
        hooks=HOOKS,
        derived=(attach_default, attach_if_present),
        **kwargs,
    )
    try:
        mem = Memory(engine, max_payload_bytes=max_payload_bytes)
        if path is not None and not read_only and (Path(path) / "blobs").is_dir():
            from .payloads import blobs_of

            blobs_of(engine)  # removes the temp file of a payload write that a crash cut short
        if embedders:
            from . import spaces

            spaces.register(engine, embedders)
        return mem
    except BaseException:
        engine.close()
        raise


def _codec_for(path: Any, key: Any, key_file: Any) -> Any:
    """The security layer's AES-256-GCM codec when a key is given (or set in the environment)."""
    from .security.codec import AeadCodec
    from .security.keys import resolve_key

    master = resolve_key(key, key_file)
    if master is None or path is None:  # an in-memory store writes no files
        return None
    return AeadCodec(master, from_env=key is None and key_file is None)
