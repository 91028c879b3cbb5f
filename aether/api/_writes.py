"""The facade's writes of new versions: ``add`` (payloads and STRUCTURED objects too), ``add_many``, ``add_columns``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .._time import TimeLike
from ..embed import as_unit_vectors
from ..engine.txplan import Op, PutOp
from ..engine.validate import (
    check_atom_id,
    check_content,
    check_json,
    check_modality,
    check_quality,
    check_subject,
    check_tags,
)
from ..errors import InvalidInputError
from ..models import MemoryAtom, new_atom_id
from ._base import _MemoryBase
from ._helpers import ITEM_KEYS, UNSET, _checked_tags, _gc_paused, _IdPool, _new_atom_ids, _Unset, _valid_interval


class _Writes(_MemoryBase):
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
        from .. import payloads as P

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
        from .. import payloads as P

        blobs = P.blobs_of(self._engine)
        digest, size = blobs.put(chunks, max_bytes=self._max_payload_bytes)
        try:
            op.content_meta = P.stored_meta(
                op.content_meta or "{}", payload=P.descriptor(content_type, digest, size), data=data
            )
            res = self._engine.commit([op])
        finally:
            blobs.release(digest)
        from .. import spaces

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
        from ..engine import columns

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

