"""The synchronous client: :class:`RemoteMemory` (from :func:`aether.connect`) and :class:`RemoteView`."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from .. import errors as E
from ._http import StdlibTransport, proxied
from ._wire import _OMIT, Call, Calls, compact_opts, error_from, job_result, reindex_opts

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="RemoteMemory")


def _method(build: Callable[Concatenate[Any, P], Call[T]]) -> Callable[Concatenate[Any, P], T]:
    """A client method from a :class:`Calls` builder: same signature, sends the call, parses the reply."""

    def method(self: RemoteMemory, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(self, *args, **kwargs))

    method.__name__ = build.__name__.removeprefix("c_")
    method.__doc__ = build.__doc__
    method.__wrapped__ = build  # type: ignore[attr-defined]  # inspect.signature shows the real parameters
    return method


def _finite(doc: Any) -> bool:
    """No NaN or infinity anywhere in a JSON document."""
    stack = [doc]
    while stack:
        x = stack.pop()
        if type(x) is float:
            if x != x or x in (float("inf"), float("-inf")):
                return False
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            if x and type(x[0]) is str and all(type(y) is str for y in x):
                continue  # a text column: nothing to check
            stack.extend(x)
    return True


def _body(doc: Any) -> dict[str, Any]:
    """Request body arguments for httpx.

    JSON is encoded with orjson when it is installed (bulk loads encode several times faster) and the
    document holds no NaN or infinity (orjson would write null); otherwise with the standard library,
    which writes ``NaN`` (httpx's own ``json=`` refuses it): the server then rejects the value with the
    error the in-process API raises.
    """
    if doc is None:
        return {}
    headers = {"Content-Type": "application/json"}
    if _finite(doc):
        try:
            import orjson

            return {"content": orjson.dumps(doc), "headers": headers}
        except (ImportError, TypeError):  # not installed, or a value it does not encode (a huge int)
            pass
    import json

    try:
        return {"content": json.dumps(doc).encode(), "headers": headers}
    except (TypeError, ValueError) as exc:  # e.g. a tag value that is not a JSON scalar
        raise E.InvalidInputError(f"cannot send this request as JSON: {exc}") from None


def _request_body(call: Call[Any]) -> dict[str, Any]:
    """:func:`_body` of the call's JSON, or for vectors sent raw the ``application/vnd.aether.columns`` body:
    ``u32 LE n``, ``n`` bytes of JSON (with ``"shape"``), then the little-endian float32 matrix."""
    if call.vectors is None:
        return _body(call.json)
    head = _body({**call.json, "shape": list(call.vectors.shape)})["content"]
    content = b"".join((len(head).to_bytes(4, "little"), head, call.vectors.tobytes()))
    return {"content": content, "headers": {"Content-Type": "application/vnd.aether.columns"}}


def _loads(content: bytes) -> Any:
    """JSON of a reply: orjson when installed (~3x the standard library on search replies)."""
    try:
        import orjson
    except ImportError:
        import json

        return json.loads(content)
    return orjson.loads(content)  # its JSONDecodeError is a ValueError


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise E.MissingDependencyError("aether.connect needs httpx: pip install 'aether[client]'") from None
    return httpx


class RemoteMemory(Calls):
    """A namespace of an aether server, with the methods and return types of :class:`aether.Memory`.

    Errors the server reports are raised as the same :class:`aether.AetherError` subclasses
    (``.status`` and ``.request_id`` say more); a server that fails or cannot be reached raises
    :class:`aether.errors.RemoteError`. Create one with :func:`aether.connect`.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        namespace: str = "default",
        timeout: float = 60.0,
        _http: Any = None,
        _pin: dict[str, Any] | None = None,
    ) -> None:
        from ..server._names import check_namespace

        self.url = url.rstrip("/")
        self.namespace = check_namespace(namespace)
        self._prefix = f"/v1/namespaces/{self.namespace}"
        self._pin = _pin
        self._owns = _http is None
        if _http is None:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            if proxied(self.url):  # httpx honours the proxy settings; the stdlib transport does not
                _http = _httpx().Client(base_url=self.url, headers=headers, timeout=timeout)
            else:
                _http = StdlibTransport(self.url, headers=headers, timeout=timeout)
        self._http = _http

    # ---------------------------------------------------------------- transport
    def _send(self, call: Call[T]) -> T:
        if isinstance(self._http, StdlibTransport):  # raises RemoteError itself
            r = self._http.request(call.method, call.path, params=call.params, **_request_body(call))
        else:
            httpx = _httpx()
            try:
                r = self._http.request(call.method, call.path, params=call.params, **_request_body(call))
            except httpx.TransportError as exc:
                raise E.RemoteError(f"cannot reach the aether server at {self.url}: {exc}") from None
        return self._reply(call, r.status_code, r.content, r.reason_phrase)

    @staticmethod
    def _reply(call: Call[T], status: int, content: bytes, reason: str) -> T:
        try:
            doc = _loads(content) if content else None
        except ValueError:
            doc = None
        if status >= 400:
            exc = error_from(status, doc, f"HTTP {status} {reason}")
            if status == 404 and isinstance(exc, E.AtomNotFoundError) and call.not_found is not _OMIT:
                return call.not_found
            raise exc
        try:
            return call.parse(doc)
        except E.AetherError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # pydantic's ValidationError included
            # A URL that answers 2xx with something else (a proxy page, another service): typed, not raw.
            raise E.RemoteError(f"not an aether server reply to {call.method} {call.path} "
                                f"(HTTP {status}): {type(exc).__name__}") from None

    # ---------------------------------------------------------------- properties
    @property
    def path(self) -> str:
        """The namespace's URL (a remote store has no local path)."""
        return f"{self.url}{self._prefix}"

    @property
    def read_only(self) -> bool:
        return self._pin is not None

    @property
    def last_commit(self) -> datetime | None:
        """Transaction time of the namespace's latest commit (``None`` for an empty store)."""
        last = self._send(self.c_info()).get("last_commit")
        return None if last is None else datetime.fromisoformat(last)

    @property
    def model(self) -> str:
        """The model identity of the namespace's store."""
        return str(self._send(self.c_info())["model"])

    # ---------------------------------------------------------------- the Memory methods
    add = _method(Calls.c_add)
    add_many = _method(Calls.c_add_many)
    add_columns = _method(Calls.c_add_columns)
    correct = _method(Calls.c_correct)
    correct_many = _method(Calls.c_correct_many)
    retract_many = _method(Calls.c_retract_many)
    retract = _method(Calls.c_retract)
    delete = _method(Calls.c_delete)
    erase = _method(Calls.c_erase)
    get = _method(Calls.c_get)
    payload = _method(Calls.c_payload)
    history = _method(Calls.c_history)
    search = _method(Calls.c_search)
    search_many = _method(Calls.c_search_many)
    explain = _method(Calls.c_explain)
    stats = _method(Calls.c_stats)

    def create(self, *, model: str | None = None) -> dict[str, Any]:
        """Create the namespace (admin) with ``model`` (``hashing:DIM`` or a ``models/`` name)."""
        return self._send(self.c_create(model=model))

    def view(self, *, valid_at: Any = None, as_of: Any = None) -> RemoteView:
        """A read-only view pinned at ``valid_at`` / ``as_of`` (defaults: now / the latest commit)."""
        pins = self._send(self.c_view_pins(valid_at=valid_at, as_of=as_of))
        return RemoteView(self.url, namespace=self.namespace, _http=self._http, _pin=pins)

    def _job(self, kind: str, opts: dict[str, Any], poll: float, timeout: float | None) -> Any:
        job = self._send(self.c_job(kind, **opts))
        deadline = None if timeout is None else time.monotonic() + timeout
        while job["status"] in ("queued", "running"):
            if deadline is not None and time.monotonic() > deadline:
                raise E.RemoteError(f"{kind} job {job['id']} still {job['status']} after {timeout} s")
            time.sleep(poll)
            job = self._send(self.c_job_status(job["id"]))
        return job_result(job)

    def compact(
        self, *, merge_below: int | None = None, retain: timedelta | Any = None, timeout: float | None = None
    ) -> Any:
        """``Memory.compact`` as a server job (admin); waits for it and returns its ``CompactResult``."""
        return self._job("compact", compact_opts(merge_below, retain), 0.05, timeout)

    def reindex(
        self, *, embedder: Any = None, model: str | None = None, recipe: str | None = None, engine: str = "local",
        batch_size: int = 256, timeout: float | None = None,
    ) -> Any:
        """``Memory.reindex`` as a server job (admin, by ``model`` name); waits and returns its ``ReindexResult``."""
        return self._job("reindex", reindex_opts(embedder, model, recipe, engine, batch_size), 0.1, timeout)

    def refresh(self) -> None:
        """Nothing to do: the server always answers from its latest commit."""

    def close(self) -> None:
        """Close the connection pool (a view shares its parent's; closing it does nothing)."""
        if self._owns:
            self._http.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<aether.RemoteMemory {self.path}>"


class RemoteView(RemoteMemory):
    """A read-only, time-pinned view of a remote namespace (from :meth:`RemoteMemory.view`)."""

    @property
    def valid_at(self) -> datetime | None:
        v = (self._pin or {}).get("valid_at")
        return None if v is None else datetime.fromisoformat(v)

    @property
    def as_of(self) -> datetime | None:
        v = (self._pin or {}).get("as_of")
        return None if v is None else datetime.fromisoformat(v)

    def view(self, *, valid_at: Any = None, as_of: Any = None) -> RemoteView:
        pins = self._send(self.c_view_pins(valid_at=valid_at, as_of=as_of))
        return RemoteView(self.url, namespace=self.namespace, _http=self._http, _pin=pins)

    def compact(self, **kwargs: Any) -> Any:
        raise E.ReadOnlyError("a time-travel view is read-only")

    def reindex(self, **kwargs: Any) -> Any:
        raise E.ReadOnlyError("a time-travel view is read-only")

    def __repr__(self) -> str:
        return f"<aether.RemoteView {self.path} valid_at={self.valid_at} as_of={self.as_of}>"


__all__ = ["RemoteMemory", "RemoteView"]
