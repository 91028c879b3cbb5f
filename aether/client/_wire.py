"""What the sync and async clients share: how each method becomes an HTTP call, and how replies
(and errors) become the return types and exceptions of :class:`aether.Memory`.

No I/O here: a method builds a :class:`Call`; the client sends it with httpx and hands the reply to
``Call.parse``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import numpy as np
from pydantic import TypeAdapter

from .. import errors as E
from ..models import Hit, MemoryAtom, SearchPlan, StoreStats

T = TypeVar("T")



@functools.cache
def _adapter(kind: str) -> TypeAdapter[Any]:
    """Validators built on first use (building them at import would cost ``import aether`` ~15 ms)."""
    return TypeAdapter({"hits": list[Hit], "results": list[list[Hit]], "atoms": list[MemoryAtom]}[kind])

#: Leave an argument out of the request (the server then applies the engine's default).
_OMIT: Any = object()


@dataclasses.dataclass
class Call(Generic[T]):
    """One HTTP request and how to read its reply."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: dict[str, str] | None = None
    #: A 404 with an ``AtomNotFoundError`` body returns this instead of raising (``get`` -> None).
    not_found: Any = _OMIT
    #: Vectors sent as raw float32 after ``json`` (the ``application/vnd.aether.columns`` body).
    vectors: np.ndarray | None = None


# ------------------------------------------------------------------------------------ encoding


def enc_time(value: Any) -> Any:
    """A time for the wire: datetimes as ISO-8601 (a naive one stays naive: the server rejects it)."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _payload_name(value: Any) -> str | None:
    import os

    if isinstance(value, str | os.PathLike):
        return os.path.basename(os.fspath(value)) or None
    name = getattr(value, "name", None) if callable(getattr(value, "read", None)) else None
    return os.path.basename(name) or None if isinstance(name, str) else None


def enc_payload(value: Any) -> str:
    """Payload bytes (``bytes``, a file path or a binary file object) as base64 for the JSON body.

    The whole payload goes in one request (the server's body limit applies); a local store streams.
    """
    import base64
    import os

    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str | os.PathLike):
        try:
            with open(value, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            why = exc.strerror or exc
            raise E.PayloadFileError(f"payload file {os.fspath(value)!r} cannot be read: {why}") from None
    elif callable(getattr(value, "read", None)):
        data = value.read()
        if not isinstance(data, bytes):
            raise E.InvalidPayloadError("payload file object must be opened in binary mode")
    else:
        kind = type(value).__name__
        raise E.InvalidPayloadError(f"payload must be bytes, a path or a binary file object, got {kind}")
    return base64.b64encode(data).decode("ascii")


def enc_vector(value: Any) -> Any:
    """Vectors: numpy arrays as base64 float32 (exact, and ~10x smaller to parse than JSON numbers)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu" and value.ndim in (1, 2):
        arr = np.ascontiguousarray(value, dtype="<f4")
        return {"dtype": "float32", "shape": list(arr.shape), "data": base64.b64encode(arr.tobytes()).decode()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple) and value and isinstance(value[0], np.ndarray):
        return enc_vector(np.stack(value))
    return value


def _enc_times(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [enc_time(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "M":  # datetime64: UTC, as the engine reads it
            return [None if np.isnat(v) else np.datetime_as_string(v, unit="us") + "Z" for v in value]
        return [enc_time(v) for v in value.tolist()]
    return enc_time(value)


def _column(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "to_pylist"):  # an Arrow array
        return value.to_pylist()
    return value


def _item(item: Any) -> Any:
    if not isinstance(item, Mapping):
        return item
    out = dict(item)
    for key in ("valid_from", "valid_to"):
        if key in out:
            out[key] = enc_time(out[key])
    if out.get("vector") is not None:
        out["vector"] = enc_vector(out["vector"])
    return out


def _opts(**kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if value is _OMIT:
            continue
        if key in ("valid_at", "as_of", "at", "valid_from", "valid_to"):
            value = enc_time(value)
        elif key == "valid_during" and value is not None:
            value = [enc_time(v) for v in value]
        elif key == "tags" and isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, timedelta):  # e.g. half_life: the API also takes seconds
            value = value.total_seconds()
        out[key] = value
    return out


def enc_query(query: Any) -> Any:
    return query if isinstance(query, str) else enc_vector(query)


def enc_queries(queries: Any) -> Any:
    if isinstance(queries, np.ndarray):
        return enc_vector(queries)
    qs = list(queries)
    if qs and all(isinstance(q, str) for q in qs):
        return qs
    if qs and all(isinstance(q, np.ndarray) for q in qs):
        return enc_vector(np.stack(qs))
    return [q if isinstance(q, str) else (q.tolist() if isinstance(q, np.ndarray) else list(q)) for q in qs]


# ------------------------------------------------------------------------------------ errors


def error_from(status: int, body: Any, fallback: str) -> E.AetherError:
    """The ``AetherError`` subclass the server named (by status when it named none)."""
    err = body.get("error") if isinstance(body, dict) else None
    name = err.get("type") if isinstance(err, dict) else None
    message = str(err.get("message")) if isinstance(err, dict) else fallback
    cls = getattr(E, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, E.AetherError)):
        cls = (
            E.AuthenticationError if status == 401 else E.PermissionDeniedError if status == 403
            else E.RemoteError if status >= 500 else E.InvalidInputError
        )
    try:
        exc = cls(message)
    except TypeError:  # a subclass with a different constructor
        exc = E.AetherError(message)
    exc.status = status  # type: ignore[attr-defined]
    exc.request_id = err.get("request_id") if isinstance(err, dict) else None  # type: ignore[attr-defined]
    return exc


# ------------------------------------------------------------------------------------ calls


def _pin_params(pin: dict[str, Any] | None) -> dict[str, str]:
    if not pin:
        return {}
    return {f"view_{k}": v for k, v in pin.items() if v is not None}


class Calls:
    """The methods of :class:`aether.Memory`, each as a :class:`Call` (shared by both clients)."""

    _prefix: str
    _pin: dict[str, Any] | None

    def _p(self, tail: str) -> str:
        return self._prefix + tail

    def _read_body(self, body: dict[str, Any]) -> dict[str, Any]:
        if self._pin:
            body["view"] = self._pin
        return body

    def _writable(self) -> None:
        if self._pin is not None:
            raise E.ReadOnlyError("a time-travel view is read-only")

    # ---------------------------------------------------------------- writes
    def c_add(
        self,
        content: str | Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        valid_from: Any = None,
        valid_to: Any = None,
        modality: str = _OMIT,
        subject: str = _OMIT,
        quality_score: float = _OMIT,
        atom_id: str | None = None,
        vector: Any = None,
        content_metadata: Mapping[str, Any] | None = None,
        payload: Any = None,
        content_type: str | None = None,
    ) -> Call[MemoryAtom]:
        self._writable()
        body = _opts(content=content, tags=tags, metadata=metadata, valid_from=valid_from, valid_to=valid_to,
                     modality=modality, subject=subject, quality_score=quality_score, atom_id=atom_id,
                     content_metadata=content_metadata, content_type=content_type)
        body = {k: v for k, v in body.items() if v is not None or k == "content"}
        if vector is not None:
            body["vector"] = enc_vector(vector)
        if payload is not None:
            body["payload_base64"] = enc_payload(payload)
            name = _payload_name(payload)
            if content_type is None and name:  # as a local store does: the type from the file name
                import mimetypes

                guess, _ = mimetypes.guess_type(name, strict=False)
                if guess:
                    body["content_type"] = guess
            if body.get("content") is None:
                body.pop("content", None)
                if name:
                    body["content"] = name
        return Call("POST", self._p("/atoms"), MemoryAtom.model_validate, json=body)

    def c_payload(self, atom_id: str, *, valid_at: Any = None, as_of: Any = None) -> Call[bytes]:
        import base64

        if not isinstance(atom_id, str) or not atom_id:
            raise E.InvalidInputError("atom_id must be a non-empty str")
        params = {k: enc_time(v) for k, v in (("valid_at", valid_at), ("as_of", as_of)) if v is not None}
        params.update(_pin_params(self._pin))
        return Call("GET", self._p("/payload/" + _segment(atom_id)),
                    lambda d: base64.b64decode(d["payload_base64"]), params=params)

    def c_add_many(self, items: Iterable[Mapping[str, Any] | str], *, vectors: Any = None) -> Call[list[str]]:
        self._writable()
        try:
            listed = [_item(it) for it in items]
        except TypeError:
            raise E.InvalidInputError(f"add_many takes an iterable of items, got {type(items).__name__}") from None
        body: dict[str, Any] = {"items": listed}
        if vectors is not None:
            body["vectors"] = enc_vector(vectors)
        return Call("POST", self._p("/atoms/batch"), lambda d: list(d["atom_ids"]), json=body)

    def c_add_columns(
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
        modality: Any = _OMIT,
        subject: Any = _OMIT,
        quality_score: Any = _OMIT,
    ) -> Call[list[str]]:
        self._writable()
        body: dict[str, Any] = {"content": _column(content)}
        binary = None
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.dtype.kind in "fiu":
            binary = np.ascontiguousarray(vectors, dtype="<f4")  # raw bytes after a JSON header: the bulk path
        elif vectors is not None:
            body["vectors"] = enc_vector(vectors)
        for key, value in (("atom_id", atom_id), ("tags", tags), ("metadata", metadata),
                           ("content_metadata", content_metadata), ("modality", modality),
                           ("subject", subject), ("quality_score", quality_score)):
            if value is not None and value is not _OMIT:
                body[key] = _column(value)
        for key, value in (("valid_from", valid_from), ("valid_to", valid_to)):
            if value is not None:
                body[key] = _enc_times(_column(value) if hasattr(value, "to_pylist") else value)
        if binary is not None:
            return Call("POST", self._p("/atoms/columns/binary"), lambda d: list(d["atom_ids"]), json=body,
                        vectors=binary)
        return Call("POST", self._p("/atoms/columns"), lambda d: list(d["atom_ids"]), json=body)

    def c_correct(
        self,
        atom_id: str,
        content: str | None = None,
        *,
        valid_from: Any = None,
        valid_to: Any = None,
        tags: Any = _OMIT,
        metadata: Any = _OMIT,
        vector: Any = None,
    ) -> Call[MemoryAtom]:
        self._writable()
        from ..api import UNSET

        body = _opts(atom_id=atom_id, valid_from=valid_from, valid_to=valid_to,
                     tags=_OMIT if tags is UNSET else tags, metadata=_OMIT if metadata is UNSET else metadata)
        for key in ("valid_from", "valid_to"):
            if body.get(key) is None:
                body.pop(key, None)
        if content is not None:
            body["content"] = content
        if vector is not None:
            body["vector"] = enc_vector(vector)
        return Call("POST", self._p("/correct"), MemoryAtom.model_validate, json=body)

    def c_correct_many(
        self,
        atom_id: Any,
        content: Any = None,
        *,
        vectors: Any = None,
        valid_from: Any = None,
        valid_to: Any = None,
        tags: Any = _OMIT,
        metadata: Any = _OMIT,
    ) -> Call[None]:
        self._writable()
        from ..api import UNSET

        body: dict[str, Any] = {"atom_id": _column(atom_id)}
        if content is not None:
            body["content"] = _column(content)
        if vectors is not None:
            body["vectors"] = enc_vector(vectors)
        for key, value in (("valid_from", valid_from), ("valid_to", valid_to)):
            if value is not None:
                body[key] = _enc_times(_column(value) if hasattr(value, "to_pylist") else value)
        for key, value in (("tags", tags), ("metadata", metadata)):
            if value is not _OMIT and value is not UNSET:
                body[key] = _column(value)
        return Call("POST", self._p("/correct/batch"), lambda d: None, json=body)

    def c_retract_many(self, atom_id: Any, *, at: Any = None) -> Call[None]:
        self._writable()
        body: dict[str, Any] = {"atom_id": _column(atom_id)}
        if at is not None:
            body["at"] = _enc_times(_column(at) if hasattr(at, "to_pylist") else at)
        return Call("POST", self._p("/retract/batch"), lambda d: None, json=body)

    def c_retract(self, atom_id: str, at: Any = None) -> Call[None]:
        self._writable()
        body = _opts(atom_id=atom_id, at=at)
        return Call("POST", self._p("/retract"), lambda d: None, json=body)

    def c_delete(self, atom_id: str) -> Call[None]:
        self._writable()
        if not isinstance(atom_id, str) or not atom_id:
            raise E.InvalidInputError("atom_id must be a non-empty str of at most 256 chars")
        return Call("DELETE", self._p("/atoms/" + _segment(atom_id)), lambda d: None)

    def c_erase(self, *, subject: str | None = None, atom_id: str | None = None) -> Call[Any]:
        self._writable()
        from ..api import EraseResult

        return Call("POST", self._p("/erase"), lambda d: EraseResult(**d),
                    json={"subject": subject, "atom_id": atom_id})

    # ---------------------------------------------------------------- reads
    def c_get(self, atom_id: str, *, valid_at: Any = None, as_of: Any = None) -> Call[MemoryAtom | None]:
        if not isinstance(atom_id, str) or not atom_id:
            raise E.InvalidInputError("atom_id must be a non-empty str")
        params = {k: enc_time(v) for k, v in (("valid_at", valid_at), ("as_of", as_of)) if v is not None}
        params.update(_pin_params(self._pin))
        return Call("GET", self._p("/atoms/" + _segment(atom_id)), MemoryAtom.model_validate,
                    params=params, not_found=None)

    def c_history(self, atom_id: str) -> Call[list[MemoryAtom]]:
        if not isinstance(atom_id, str) or not atom_id:
            raise E.InvalidInputError("atom_id must be a non-empty str")
        return Call("GET", self._p("/history/" + _segment(atom_id)),
                    lambda d: _adapter("atoms").validate_python(d["versions"]), params=_pin_params(self._pin),
                    not_found=[])

    def c_search(
        self,
        query: Any,
        k: int = 10,
        *,
        valid_at: Any = _OMIT,
        as_of: Any = _OMIT,
        valid_during: Any = _OMIT,
        tags: Any = _OMIT,
        mode: str | None = _OMIT,
        **options: Any,
    ) -> Call[list[Hit]]:
        if isinstance(query, np.ndarray) and query.ndim == 2:
            raise E.InvalidInputError("search takes one query; use search_many for a batch")
        body = self._read_body({"query": enc_query(query), "k": k, **_opts(
            valid_at=valid_at, as_of=as_of, valid_during=valid_during, tags=tags, mode=mode, **options)})
        return Call("POST", self._p("/search"), lambda d: _adapter("hits").validate_python(d["hits"]), json=body)

    def c_search_many(
        self,
        queries: Sequence[Any] | np.ndarray,
        *,
        k: int = 10,
        valid_at: Any = _OMIT,
        as_of: Any = _OMIT,
        valid_during: Any = _OMIT,
        tags: Any = _OMIT,
        mode: str | None = _OMIT,
        **options: Any,
    ) -> Call[list[list[Hit]]]:
        body = self._read_body({"queries": enc_queries(queries), "k": k, **_opts(
            valid_at=valid_at, as_of=as_of, valid_during=valid_during, tags=tags, mode=mode, **options)})
        return Call("POST", self._p("/search/batch"),
                    lambda d: _adapter("results").validate_python(d["results"]), json=body)

    def c_explain(
        self,
        query: Any,
        k: int = 10,
        *,
        valid_at: Any = _OMIT,
        as_of: Any = _OMIT,
        valid_during: Any = _OMIT,
        tags: Any = _OMIT,
        mode: str | None = _OMIT,
        **options: Any,
    ) -> Call[SearchPlan]:
        body = self._read_body({"query": enc_query(query), "k": k, **_opts(
            valid_at=valid_at, as_of=as_of, valid_during=valid_during, tags=tags, mode=mode, **options)})
        return Call("POST", self._p("/explain"), SearchPlan.model_validate, json=body)

    def c_stats(self) -> Call[StoreStats]:
        return Call("GET", self._p("/stats"), StoreStats.model_validate)

    def c_info(self) -> Call[dict[str, Any]]:
        return Call("GET", self._p(""), dict)

    def c_view_pins(self, *, valid_at: Any = None, as_of: Any = None) -> Call[dict[str, Any]]:
        body: dict[str, Any] = _opts(valid_at=valid_at, as_of=as_of)
        if self._pin:
            body["view"] = self._pin
        return Call("POST", self._p("/view"), dict, json=body)

    def c_create(self, *, model: str | None = None) -> Call[dict[str, Any]]:
        return Call("PUT", self._p(""), dict, json={"model": model})

    def c_job(self, kind: str, **opts: Any) -> Call[dict[str, Any]]:
        self._writable()
        body = {"kind": kind, **{k: v for k, v in opts.items() if v is not None}}
        return Call("POST", self._p("/jobs"), dict, json=body)

    def c_job_status(self, job_id: str) -> Call[dict[str, Any]]:
        return Call("GET", self._p(f"/jobs/{quote(job_id, safe='')}"), dict)


def _segment(atom_id: str) -> str:
    """``atom_id`` as one URL path segment. ``.`` and ``..`` are percent-encoded too: as bare segments
    the URL layer would remove them (``.../atoms/..`` is ``/v1/namespaces/<ns>``)."""
    seg = quote(atom_id, safe="")
    return seg.replace(".", "%2E") if seg in (".", "..") else seg


def job_result(job: dict[str, Any]) -> Any:
    """A finished job's result as the Python API returns it (or its error raised)."""
    if job["status"] == "failed":
        err = job.get("error") or {}
        raise error_from(500, {"error": err}, "job failed")
    res = dict(job.get("result") or {})
    if job["kind"] == "compact":
        from ..api import CompactResult

        return CompactResult(**res)
    from ..api import ReindexResult

    return ReindexResult(**res)


def compact_opts(merge_below: int | None, retain: Any) -> dict[str, Any]:
    from datetime import timedelta

    if isinstance(retain, timedelta):
        return {"merge_below": merge_below, "retain_days": retain / timedelta(days=1)}
    return {"merge_below": merge_below, "retain": enc_time(retain)}


def reindex_opts(embedder: Any, model: str | None, recipe: str | None, engine: str, batch_size: int) -> dict[str, Any]:
    if embedder is not None:
        raise E.InvalidInputError("a remote store re-indexes by model name: pass model=, not embedder=")
    if engine != "local":
        raise E.InvalidInputError("a remote re-index runs on the server's local engine")
    return {"model": model, "recipe": recipe, "batch_size": batch_size}
