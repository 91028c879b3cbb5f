"""The facade's corrections of what is stored: ``correct``, ``retract``, ``delete`` and their batch forms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._time import TimeLike
from ..embed import as_unit_vectors
from ..engine.txplan import DeleteOp, PutOp, RetractOp
from ..engine.validate import check_atom_id, check_content, check_json, check_tags
from ..errors import AtomNotFoundError, InvalidInputError
from ..models import JSON_KEY, PAYLOAD_KEY, MemoryAtom
from ._helpers import UNSET, _opt_time, _Unset, _valid_interval
from ._reads import _Reads
from ._writes import _Writes


class _Corrections(_Writes, _Reads):
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
        op = self._correction_op(atom_id, content, valid_from, valid_to, tags, metadata, vector, None)
        res = self._engine.commit([op])
        return self._engine.atom_at(res.rows[0])

    def _correction_op(
        self, atom_id: str, content: str | None, valid_from: Any, valid_to: Any, tags: Any, metadata: Any,
        vector: Any, modality: str | None,
    ) -> PutOp:
        """The checked operation of a correction (``None`` and ``UNSET`` fields are inherited from the old version)."""
        vf, vt = _valid_interval(valid_from, valid_to)
        vec = None if vector is None else as_unit_vectors(vector, self._engine.embedder.dim)[0]
        return PutOp(
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
        from .. import payloads as P

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
        op = self._correction_op(atom_id, content, valid_from, valid_to, tags, metadata, vector, modality)
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
        from ..engine import columns

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
        from ..engine import columns

        ops = columns.retractions(atom_id, at)
        if ops:
            self._engine.commit(ops)

    def delete(self, atom_id: str) -> None:
        """The store no longer believes ``atom_id`` for any valid time; history stays for as-of queries."""
        self._check_write()
        self._engine.commit([DeleteOp(check_atom_id(atom_id))])

