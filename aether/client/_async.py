"""The asynchronous twin: :class:`AsyncRemoteMemory` (``await mem.search(...)``), on ``httpx.AsyncClient``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from .. import errors as E
from ._sync import RemoteMemory, _httpx, _request_body
from ._wire import Call, Calls, compact_opts, job_result, reindex_opts

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="AsyncRemoteMemory")


def _method(build: Callable[Concatenate[Any, P], Call[T]]) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncRemoteMemory, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(self, *args, **kwargs))

    method.__name__ = build.__name__.removeprefix("c_")
    method.__doc__ = build.__doc__
    method.__wrapped__ = build  # type: ignore[attr-defined]
    return method


class AsyncRemoteMemory(Calls):
    """:class:`aether.RemoteMemory` with ``async`` methods (the same arguments, results and errors)."""

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
            _http = _httpx().AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        self._http = _http

    async def _send(self, call: Call[T]) -> T:
        httpx = _httpx()
        try:
            r = await self._http.request(call.method, call.path, params=call.params, **_request_body(call))
        except httpx.TransportError as exc:
            raise E.RemoteError(f"cannot reach the aether server at {self.url}: {exc}") from None
        return RemoteMemory._reply(call, r.status_code, r.content, r.reason_phrase)

    @property
    def path(self) -> str:
        return f"{self.url}{self._prefix}"

    @property
    def read_only(self) -> bool:
        return self._pin is not None

    async def last_commit(self) -> datetime | None:
        """Transaction time of the latest commit (a coroutine here: it asks the server)."""
        last = (await self._send(self.c_info())).get("last_commit")
        return None if last is None else datetime.fromisoformat(last)

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

    async def create(self, *, model: str | None = None) -> dict[str, Any]:
        return await self._send(self.c_create(model=model))

    async def view(self, *, valid_at: Any = None, as_of: Any = None) -> AsyncRemoteMemory:
        """A read-only view pinned at ``valid_at`` / ``as_of``."""
        pins = await self._send(self.c_view_pins(valid_at=valid_at, as_of=as_of))
        return AsyncRemoteMemory(self.url, namespace=self.namespace, _http=self._http, _pin=pins)

    async def _job(self, kind: str, opts: dict[str, Any], poll: float, timeout: float | None) -> Any:
        import anyio

        job = await self._send(self.c_job(kind, **opts))
        with anyio.fail_after(timeout):
            while job["status"] in ("queued", "running"):
                await anyio.sleep(poll)
                job = await self._send(self.c_job_status(job["id"]))
        return job_result(job)

    async def compact(
        self, *, merge_below: int | None = None, retain: timedelta | Any = None, timeout: float | None = None
    ) -> Any:
        return await self._job("compact", compact_opts(merge_below, retain), 0.05, timeout)

    async def reindex(
        self, *, embedder: Any = None, model: str | None = None, recipe: str | None = None, engine: str = "local",
        batch_size: int = 256, timeout: float | None = None,
    ) -> Any:
        return await self._job("reindex", reindex_opts(embedder, model, recipe, engine, batch_size), 0.1, timeout)

    async def refresh(self) -> None:
        """Nothing to do: the server always answers from its latest commit."""

    async def aclose(self) -> None:
        if self._owns:
            await self._http.aclose()

    async def __aenter__(self: S) -> S:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<aether.AsyncRemoteMemory {self.path}>"
