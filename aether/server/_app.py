"""The FastAPI application: REST under ``/v1/namespaces/{ns}/``, health, metrics, OpenAPI.

Every engine call (and the JSON encoding of its result) runs on a worker thread through
:func:`anyio.to_thread.run_sync`; the event loop only parses requests and checks keys.
"""

# No ``from __future__ import annotations``: FastAPI resolves the route annotations, which name
# dependencies defined inside create_app.
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from .. import errors as E
from ..api import Memory, search_timings
from ..models import MemoryAtom, SearchPlan, StoreStats
from . import _schemas as S
from ._auth import ANONYMOUS, DEFAULT_KEYS_NAME, KeyStore, Principal
from ._errors import PayloadTooLarge, UnknownResource, describe_validation, error_doc
from ._fastjson import FastJsonRoute
from ._mcp import McpMount
from ._middleware import RequestLayer
from ._names import NAME_RE
from ._state import (
    Ctx,
    Server,
    _add_kwargs,
    _call,
    _error_response,
    _info,
    _json,
    _pin,
    _rid,
    _search_kwargs,
    _target,
    _version_at,
    internal_message,
)

log = logging.getLogger("aether.server")

DEFAULT_MAX_BODY = 256 * 1024 * 1024
DEFAULT_MAX_BATCH = 100_000
DEFAULT_MAX_QUERIES = 1_024
DEFAULT_MAX_HITS = 100_000
DEFAULT_MAX_NAMESPACES = 1_000

NsPath = Annotated[str, PathParam(pattern=f"^{NAME_RE.pattern}$", description="Namespace name")]
TimeQ = Annotated[str | None, Query(max_length=64, description="ISO-8601 with an offset")]

V1_MCP = "/v1/namespaces/{ns}/mcp"
_COMPACT_OPTS = frozenset({"merge_below", "retain", "retain_days"})
_REINDEX_OPTS = frozenset({"model", "recipe", "batch_size"})

_ERR: dict[int | str, dict[str, Any]] = {
    status: {"model": S.ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 422, 503)
}


def _local_host(host: str) -> bool:
    """Whether a ``Host`` header (``name[:port]``, ``[v6][:port]``) names this machine."""
    from ._run import is_loopback

    h = host.strip().lower()
    if h.startswith("["):
        h = h[1:h.find("]")] if "]" in h else ""
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    return bool(h) and is_loopback(h)


# ------------------------------------------------------------------------------------ the app


def create_app(
    root: str | os.PathLike[str],
    *,
    keys_file: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    model: str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_queries: int = DEFAULT_MAX_QUERIES,
    max_hits: int = DEFAULT_MAX_HITS,
    max_namespaces: int = DEFAULT_MAX_NAMESPACES,
    auto_create: bool = True,
    open_kwargs: dict[str, Any] | None = None,
    local_host_only: bool = False,
) -> FastAPI:
    """The aether HTTP API over the stores under ``root`` (one store per namespace), as an ASGI app.

    Parameters
    ----------
    root
        Directory of the namespaces (``root/<namespace>/`` is an ordinary store).
    keys_file
        API keys file (``aether keys add``); default ``root/api-keys.json``.
    api_key
        One admin key for every namespace; default ``AETHER_API_KEY`` from the environment.
        Without any key every request is allowed (only :func:`aether.server.serve` on loopback permits that).
    model
        Model of namespaces created through the server (``hashing:DIM`` or a ``models/`` name);
        default aether's default model.
    key_file
        Master key file: namespaces are encrypted stores.
    max_body_bytes, max_batch, max_queries, max_hits
        Largest request body, rows per write, queries per ``search_many`` and ``k`` x queries of one
        ``search_many`` (else 413).
    max_namespaces
        Most namespaces under ``root``: creating one more is a 409 (a typo'd or hostile namespace name
        must not create stores without end).
    auto_create
        A write to a namespace that does not exist creates it (with ``model``).
    open_kwargs
        More keyword arguments of :func:`aether.open` for every namespace.
    local_host_only
        While no key is configured, answer only requests whose ``Host`` header names this machine
        (``localhost``, a loopback address): a keyless server must not be reachable from a web page by
        DNS rebinding. :func:`aether.server.serve` sets it for a server started without keys.
    """
    root = Path(root)
    keys = KeyStore(keys_file if keys_file is not None else root / DEFAULT_KEYS_NAME,
                    api_key if api_key is not None else os.environ.get("AETHER_API_KEY"))
    server = Server(root, keys=keys, model=model, key_file=key_file, max_body_bytes=max_body_bytes,
                    max_batch=max_batch, max_queries=max_queries, max_hits=max_hits, max_namespaces=max_namespaces,
                    auto_create=auto_create, open_kwargs=open_kwargs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(server.startup)
        try:
            async with anyio.create_task_group() as tg:  # runs the MCP session managers
                mcp.task_group = tg
                try:
                    yield
                finally:
                    mcp.task_group = None
                    mcp.apps.clear()
                    tg.cancel_scope.cancel()
        finally:
            # uvicorn gets here after SIGTERM/SIGINT once in-flight requests are done: checkpoint and close.
            await anyio.to_thread.run_sync(server.shutdown)

    from .. import __version__

    app = FastAPI(
        title="aether", version=__version__, lifespan=lifespan,
        description="Bitemporal semantic memory over HTTP. Every namespace is an aether store; "
        "times are ISO-8601 with an offset; errors are {\"error\": {\"type\", \"message\"}}.",
    )
    app.state.server = server
    app.router.route_class = FastJsonRoute  # before the routes are declared
    app.add_middleware(RequestLayer, max_body=max_body_bytes, metrics=server.metrics)

    @app.exception_handler(E.AetherError)
    async def _aether_error(request: Request, exc: E.AetherError) -> JSONResponse:
        return _error_response(exc, _rid(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Raised outside _call (a route's own code, a dependency): logged with the request id, never echoed.
        rid = _rid(request)
        log.error("internal error in %s %s (request %s)", request.method, request.url.path, rid,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return JSONResponse(error_doc("RemoteError", internal_message(rid), rid), status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = describe_validation(list(exc.errors()))
        return JSONResponse(error_doc("InvalidInputError", message, _rid(request)), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        rid = _rid(request)
        message = str(exc.detail) if exc.status_code < 500 else internal_message(rid)
        return JSONResponse(error_doc("InvalidInputError" if exc.status_code < 500 else "RemoteError", message, rid),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    # ---------------------------------------------------------------- auth
    # Keys are read from the headers in one dependency (FastAPI's security classes would add two more
    # dependency levels to every request); the OpenAPI document declares both schemes (see below).
    def authenticate(request: Request) -> Principal:
        if not server.keys.enabled:
            if local_host_only and not _local_host(request.headers.get("host", "")):
                raise E.PermissionDeniedError(
                    "this server has no API keys and answers only requests addressed to localhost "
                    "(the Host header names another host)"
                )
            return ANONYMOUS
        headers = request.headers
        auth = headers.get("authorization")
        key: str | None = None
        if auth is not None:
            scheme, _, cred = auth.partition(" ")
            if scheme.lower() == "bearer" and cred.strip():
                key = cred.strip()
        if key is None:
            key = headers.get("x-api-key") or None
        if not key:
            raise E.AuthenticationError("an API key is required (Authorization: Bearer <key> or X-API-Key)")
        p = server.keys.authenticate(key)
        if p is None:
            raise E.AuthenticationError("the API key is wrong or revoked")
        request.scope.setdefault("state", {})["key_id"] = p.key_id
        return p

    async def principal(request: Request) -> Principal:
        return authenticate(request)

    def need(scope: str) -> Callable[..., Any]:
        async def dep(request: Request, ns: NsPath) -> Ctx:
            p = authenticate(request)
            if not p.allows(scope, ns):
                what = f"scope {scope!r}" if not p.allows(scope, None) else f"namespace {ns!r}"
                raise E.PermissionDeniedError(f"key {p.key_id!r} does not grant {what}")
            return Ctx(server, p, ns)

        return dep

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, ops in doc.get("paths", {}).items():
                if path not in ("/healthz", "/readyz"):
                    for op in ops.values():
                        op["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    mcp = McpMount(server, authenticate)
    # A plain Starlette route (every method, not in the OpenAPI document: MCP describes itself).
    app.router.routes.append(Route(V1_MCP, endpoint=mcp))

    Read = Annotated[Ctx, Depends(need("read"))]
    Write = Annotated[Ctx, Depends(need("write"))]
    Admin = Annotated[Ctx, Depends(need("admin"))]
    V1 = "/v1/namespaces/{ns}"

    def limit(n: int, what: str, most: int) -> None:
        if n > most:
            raise PayloadTooLarge(f"{n} {what} in one request; the server accepts at most {most}")

    # ---------------------------------------------------------------- health and metrics
    @app.get("/healthz", response_model=S.Health, tags=["health"])
    async def healthz() -> S.Health:
        """Liveness: the process serves requests."""
        return S.Health(status="ok")

    @app.get("/readyz", response_model=S.Health, tags=["health"], responses={503: {"model": S.ErrorResponse}})
    async def readyz(request: Request) -> Response:
        """Readiness: the model loaded and every namespace opened (503 while starting, failing or stopping)."""
        if server.ready:
            return _json(S.Health(status="ready"))
        phases = {"starting", "shutting down"}
        if server.not_ready and not set(server.not_ready) <= phases:
            # No key is needed here: the details (namespace names, error messages) go to the server log only.
            message = f"{len(server.not_ready)} problem(s) at startup (a namespace or the model); see the server log"
        else:
            message = "; ".join(server.not_ready) or "not ready"
        return JSONResponse(error_doc("StoreError", message, _rid(request)), status_code=503)

    @app.get("/metrics", tags=["health"], response_class=Response, responses=_ERR)
    async def metrics(request: Request, p: Annotated[Principal, Depends(principal)]) -> Response:
        """Prometheus metrics (text format); needs any valid key."""
        body = await anyio.to_thread.run_sync(server.metrics.render)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    # ---------------------------------------------------------------- namespaces
    @app.get("/v1/namespaces", response_model=S.NamespaceList, tags=["namespaces"], responses=_ERR)
    async def list_namespaces(p: Annotated[Principal, Depends(principal)]) -> Response:
        """The namespaces this key may read."""
        names = await anyio.to_thread.run_sync(server.namespaces.names)
        return _json(S.NamespaceList(namespaces=[n for n in names if p.allows("read", n)]))

    @app.get(V1, response_model=S.NamespaceInfo, tags=["namespaces"], responses=_ERR)
    async def namespace_info(request: Request, ctx: Read) -> Response:
        """The namespace's model and last commit."""
        return await _call(request, lambda: _json(_info(ctx.ns, ctx.memory())))

    @app.put(V1, response_model=S.NamespaceInfo, status_code=201, tags=["namespaces"], responses=_ERR)
    async def create_namespace(request: Request, body: S.CreateNamespace, ctx: Admin) -> Response:
        """Create the namespace with a model (201), or check an existing one's model (200)."""

        def run() -> Response:
            existed = server.namespaces.exists(ctx.ns)
            if existed and body.model is not None:
                from ..embed import embedder_for

                want = embedder_for(body.model).identity
                mem = ctx.memory()
                if mem.embedder.identity != want:
                    raise E.ModelMismatchError(f"namespace {ctx.ns!r} uses {mem.embedder.identity}, not {want}")
            else:
                mem = server.namespaces.get(ctx.ns, create=True, model=body.model)
            return _json(_info(ctx.ns, mem), 200 if existed else 201)

        return await _call(request, run)

    @app.post(f"{V1}/view", response_model=S.ViewResponse, tags=["read"], responses=_ERR)
    async def view(request: Request, body: S.ViewRequest, ctx: Read) -> Response:
        """Resolve the pins of ``Memory.view`` (defaults: now, the latest commit)."""

        def run() -> Response:
            v = _target(ctx.memory(), body.view).view(valid_at=body.valid_at, as_of=body.as_of)
            va, ao = v.valid_at, v.as_of
            return _json(S.ViewResponse(valid_at=None if va is None else va.isoformat(),
                                        as_of=None if ao is None else ao.isoformat()))

        return await _call(request, run)

    # ---------------------------------------------------------------- writes
    @app.post(f"{V1}/atoms", response_model=MemoryAtom, status_code=201, tags=["write"], responses=_ERR)
    async def add(request: Request, body: S.AddRequest, ctx: Write) -> Response:
        """``Memory.add``: one memory (text, or with a pre-computed ``vector``); returns the version written."""
        kwargs = _add_kwargs(body)
        return await _call(request, lambda: _json(ctx.memory(create=True).add(**kwargs), 201))

    @app.post(f"{V1}/atoms/batch", response_model=S.AtomIds, status_code=201, tags=["write"], responses=_ERR)
    async def add_many(request: Request, body: S.AddManyRequest, ctx: Write) -> Response:
        """``Memory.add_many``: many memories in one atomic transaction."""
        limit(len(body.items), "items", server.max_batch)
        items = [it if isinstance(it, str) else _add_kwargs(it) for it in body.items]
        vectors = None if body.vectors is None else S.as_array(body.vectors)

        def run() -> Response:
            return _json(S.AtomIds(atom_ids=ctx.memory(create=True).add_many(items, vectors=vectors)), 201)

        return await _call(request, run)

    async def columns(request: Request, body: S.AddColumnsRequest, vectors: Any, ctx: Ctx) -> Response:
        limit(len(body.content), "rows", server.max_batch)
        data = body.model_dump(exclude_unset=True, exclude={"content", "vectors"})
        data = {k: v for k, v in data.items() if v is not None or k in ("tags", "metadata", "content_metadata")}
        content = body.content

        def run() -> Response:
            ids = ctx.memory(create=True).add_columns(content, vectors=vectors, **data)
            return _json(S.AtomIds(atom_ids=ids), 201)

        return await _call(request, run)

    @app.post(f"{V1}/atoms/columns", response_model=S.AtomIds, status_code=201, tags=["write"], responses=_ERR)
    async def add_columns(request: Request, body: S.AddColumnsRequest, ctx: Write) -> Response:
        """``Memory.add_columns``: the bulk path (``atoms/columns/binary`` takes the vectors as raw bytes)."""
        return await columns(request, body, None if body.vectors is None else S.as_array(body.vectors), ctx)

    @app.post(
        f"{V1}/atoms/columns/binary", response_model=S.AtomIds, status_code=201, tags=["write"], responses=_ERR,
        openapi_extra={"requestBody": {"required": True, "content": {
            S.BINARY_COLUMNS: {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def add_columns_binary(request: Request, ctx: Write) -> Response:
        """``Memory.add_columns`` with the vectors as raw little-endian float32 after a JSON header
        (``application/vnd.aether.columns``: ``u32 LE n``, ``n`` bytes of the ``atoms/columns`` fields
        but ``vectors``, plus ``"shape": [rows, dim]``, then the vectors). What the client sends for a
        numpy matrix: no base64 on either side."""
        body, vectors = S.parse_binary_columns(await request.body())
        return await columns(request, body, vectors, ctx)

    @app.post(f"{V1}/correct", response_model=MemoryAtom, tags=["write"], responses=_ERR)
    async def correct(request: Request, body: S.CorrectRequest, ctx: Write) -> Response:
        """``Memory.correct``: what is now believed for a valid period (``tags``/``metadata`` kept unless given)."""
        data = body.model_dump(exclude_unset=True, exclude={"atom_id", "content", "vector"})
        if body.vector is not None:
            data["vector"] = S.as_array(body.vector)
        aid, content = body.atom_id, body.content
        return await _call(request, lambda: _json(ctx.memory().correct(aid, content, **data)))

    @app.post(f"{V1}/correct/batch", status_code=204, tags=["write"], responses=_ERR)
    async def correct_many(request: Request, body: S.CorrectManyRequest, ctx: Write) -> Response:
        """``Memory.correct_many``: many corrections in one atomic transaction."""
        limit(len(body.atom_id), "rows", server.max_batch)
        data = body.model_dump(exclude_unset=True, exclude={"atom_id", "vectors"})
        if body.vectors is not None:
            data["vectors"] = S.as_array(body.vectors)
        ids = body.atom_id

        def run() -> Response:
            ctx.memory().correct_many(ids, **data)
            return Response(status_code=204)

        return await _call(request, run)

    @app.post(f"{V1}/retract/batch", status_code=204, tags=["write"], responses=_ERR)
    async def retract_many(request: Request, body: S.RetractManyRequest, ctx: Write) -> Response:
        """``Memory.retract_many``: many retractions in one atomic transaction."""
        limit(len(body.atom_id), "rows", server.max_batch)

        def run() -> Response:
            ctx.memory().retract_many(body.atom_id, at=body.at)
            return Response(status_code=204)

        return await _call(request, run)

    @app.post(f"{V1}/retract", status_code=204, tags=["write"], responses=_ERR)
    async def retract(request: Request, body: S.RetractRequest, ctx: Write) -> Response:
        """``Memory.retract``: the fact stopped being true ``at`` (default now)."""

        def run() -> Response:
            ctx.memory().retract(body.atom_id, at=body.at)
            return Response(status_code=204)

        return await _call(request, run)

    @app.delete(V1 + "/atoms/{atom_id:path}", status_code=204, tags=["write"], responses=_ERR)
    async def delete(request: Request, atom_id: str, ctx: Write) -> Response:
        """``Memory.delete``: no longer believed for any valid time (history stays)."""

        def run() -> Response:
            ctx.memory().delete(atom_id)
            return Response(status_code=204)

        return await _call(request, run)

    @app.post(f"{V1}/erase", response_model=S.EraseResponse, tags=["admin"], responses=_ERR)
    async def erase(request: Request, body: S.EraseRequest, ctx: Admin) -> Response:
        """``Memory.erase`` (admin): a subject or an atom, gone for all valid and transaction time."""

        def run() -> Response:
            res = ctx.memory().erase(subject=body.subject, atom_id=body.atom_id)
            return _json(S.EraseResponse(versions=res.versions, keys_destroyed=res.keys_destroyed, seq=res.seq))

        return await _call(request, run)

    # ---------------------------------------------------------------- reads
    @app.get(V1 + "/atoms/{atom_id:path}", response_model=MemoryAtom, tags=["read"], responses=_ERR)
    async def get(
        request: Request, atom_id: str, ctx: Read, valid_at: TimeQ = None, as_of: TimeQ = None,
        view_valid_at: TimeQ = None, view_as_of: TimeQ = None,
    ) -> Response:
        """``Memory.get``: the version true at ``valid_at`` as known at ``as_of`` (404 when there is none)."""

        def run() -> Response:
            return _json(_version_at(ctx.memory(), atom_id, valid_at, as_of, view_valid_at, view_as_of)[1])

        return await _call(request, run)

    @app.get(V1 + "/payload/{atom_id:path}", response_model=S.PayloadResponse, tags=["read"], responses=_ERR)
    async def payload(
        request: Request, atom_id: str, ctx: Read, valid_at: TimeQ = None, as_of: TimeQ = None,
        view_valid_at: TimeQ = None, view_as_of: TimeQ = None,
    ) -> Response:
        """``Memory.payload``: the payload bytes (base64) of the version true at ``valid_at`` as known at ``as_of``."""

        def run() -> Response:
            import base64

            mem, atom = _version_at(ctx.memory(), atom_id, valid_at, as_of, view_valid_at, view_as_of)
            data = mem.payload(atom_id, valid_at=atom.valid_from, as_of=atom.tx_from)  # exactly this version
            return _json(S.PayloadResponse(
                atom_id=atom_id, version_id=atom.version_id, content_type=atom.content_type,
                size_bytes=atom.size_bytes, payload_digest=atom.payload_digest,
                payload_base64=base64.b64encode(data).decode("ascii"),
            ))

        return await _call(request, run)

    @app.get(V1 + "/history/{atom_id:path}", response_model=S.HistoryResponse, tags=["read"], responses=_ERR)
    async def history(
        request: Request, atom_id: str, ctx: Read, view_valid_at: TimeQ = None, view_as_of: TimeQ = None,
    ) -> Response:
        """``Memory.history``: every version, by transaction time (404 for an unknown atom)."""

        def run() -> Response:
            versions = _target(ctx.memory(), _pin(view_valid_at, view_as_of)).history(atom_id)
            if not versions:
                raise E.AtomNotFoundError(f"no atom {atom_id!r}")
            return _json(S.HistoryResponse(versions=versions))

        return await _call(request, run)

    def _timed(
        ctx: Ctx, mode: str | None, op: str, fn: Callable[[], Any], reply: Callable[[Any], Response]
    ) -> Response:
        """``reply(fn())``, timed by phase (``embed``, ``index``, ``materialize`` inside ``fn``; ``encode``)."""
        with search_timings() as phases:
            out = fn()
        t1 = time.perf_counter()
        server.warm.add(ctx.ns)  # searched once (on a worker: a fresh store may still load its vectors)
        resp = reply(out)
        t2 = time.perf_counter()
        m = mode or "default"
        for name in ("embed", "index", "materialize"):
            server.metrics.child(server.metrics.search, m, op, name).observe(phases.get(name, 0.0))
        server.metrics.child(server.metrics.search, m, op, "encode").observe(t2 - t1)
        return resp

    @app.post(f"{V1}/search", response_model=S.SearchResponse, tags=["read"], responses=_ERR)
    async def search(request: Request, body: S.SearchRequest, ctx: Read) -> Response:
        """``Memory.search``: the ``k`` best hits for a text or vector query under the time and tag filters."""
        kwargs = _search_kwargs(body, Memory.search, {"query"})
        q = S.as_array(body.query)

        def run() -> Response:
            mem = _target(ctx.memory(), body.view)
            return _timed(ctx, body.mode, "search", lambda: mem.search(q, **kwargs),
                          lambda hits: _json(S.SearchResponse(hits=hits)))

        return await _call(request, run, inline=ctx.inline(q, body.k))

    @app.post(f"{V1}/search/batch", response_model=S.SearchManyResponse, tags=["read"], responses=_ERR)
    async def search_many(request: Request, body: S.SearchManyRequest, ctx: Read) -> Response:
        """``Memory.search_many``: a batch of text or vector queries with the same options."""
        kwargs = _search_kwargs(body, Memory.search_many, {"queries"})
        qs = S.as_queries(body.queries)
        limit(len(qs), "queries", server.max_queries)
        if body.k * len(qs) > server.max_hits:
            raise PayloadTooLarge(f"k={body.k} for {len(qs)} queries asks for {body.k * len(qs)} hits in one request; "
                                  f"the server returns at most {server.max_hits} (send fewer queries per request)")

        def run() -> Response:
            mem = _target(ctx.memory(), body.view)
            return _timed(ctx, body.mode, "search_many", lambda: mem.search_many(qs, **kwargs),
                          lambda results: _json(S.SearchManyResponse(results=results)))

        return await _call(request, run, inline=ctx.inline(qs, body.k * len(qs)))

    @app.post(f"{V1}/explain", response_model=SearchPlan, tags=["read"], responses=_ERR)
    async def explain(request: Request, body: S.SearchRequest, ctx: Read) -> Response:
        """``Memory.explain``: run the search and report its plan."""
        kwargs = _search_kwargs(body, Memory.explain, {"query"})
        q = S.as_array(body.query)

        def run() -> Response:
            mem = _target(ctx.memory(), body.view)
            return _timed(ctx, body.mode, "explain", lambda: mem.explain(q, **kwargs), _json)

        return await _call(request, run, inline=ctx.inline(q, body.k))

    @app.get(f"{V1}/stats", response_model=StoreStats, tags=["read"], responses=_ERR)
    async def stats(request: Request, ctx: Read) -> Response:
        """``Memory.stats``: counts and sizes (``path`` is the namespace name, not a server path)."""

        def run() -> Response:
            s = ctx.memory().stats()
            return _json(s.model_copy(update={"path": ctx.ns}))

        return await _call(request, run)

    # ---------------------------------------------------------------- admin jobs
    def check_job(body: S.JobRequest) -> None:
        """Every option of a job checked before it is queued: a bad one is a 4xx now, not a failed job later."""
        given = {f for f in body.model_fields_set - {"kind"} if getattr(body, f) is not None}  # null: not given
        wrong = sorted(given & (_REINDEX_OPTS if body.kind == "compact" else _COMPACT_OPTS))
        if wrong:
            raise E.InvalidInputError(f"option(s) {', '.join(wrong)} do not apply to a {body.kind} job")
        if body.retain is not None and body.retain_days is not None:
            raise E.InvalidInputError("give retain or retain_days, not both")
        if body.retain is not None:
            from .._time import to_us

            to_us(body.retain, name="retain")  # a malformed or naive time: InvalidInputError
        if body.recipe is not None:
            from .._resources import data_dir

            known = sorted(p.stem for p in data_dir("indexes").glob("*.json"))
            if body.recipe not in known:
                raise E.ConfigError(f"unknown index recipe {body.recipe!r}; known recipes: {', '.join(known)}")

    @app.post(f"{V1}/jobs", response_model=S.Job, status_code=202, tags=["admin"], responses=_ERR)
    async def submit_job(request: Request, body: S.JobRequest, ctx: Admin) -> Response:
        """Start a compaction or a re-index (admin); poll ``GET .../jobs/{id}`` for its status."""

        check_job(body)

        def run() -> Response:
            mem = ctx.memory()
            if body.kind == "compact":
                retain: Any = body.retain
                if body.retain_days is not None:
                    from datetime import timedelta

                    retain = timedelta(days=body.retain_days)

                def job() -> Any:
                    return mem.compact(merge_below=body.merge_below, retain=retain)
            else:
                from ..embed import embedder_for

                embedder = embedder_for(body.model) if body.model is not None else None  # ConfigError now, not later
                opts: dict[str, Any] = {"recipe": body.recipe}
                if body.batch_size is not None:
                    opts["batch_size"] = body.batch_size

                def job() -> Any:
                    return mem.reindex(embedder=embedder, **opts)
            return _json(server.jobs.submit(ctx.ns, body.kind, job), 202)

        return await _call(request, run)

    @app.get(f"{V1}/jobs", response_model=S.JobList, tags=["admin"], responses=_ERR)
    async def list_jobs(ctx: Admin) -> Response:
        """The namespace's recent jobs."""
        return _json(S.JobList(jobs=server.jobs.list(ctx.ns)))

    @app.get(V1 + "/jobs/{job_id}", response_model=S.Job, tags=["admin"], responses=_ERR)
    async def job_status(job_id: Annotated[str, PathParam(max_length=64)], ctx: Admin) -> Response:
        """One job's status and, when finished, its result or error."""
        job = server.jobs.get(job_id)
        if job is None or job.namespace != ctx.ns:
            raise UnknownResource(f"no job {job_id!r} in namespace {ctx.ns!r}")
        return _json(job)

    # Starlette tries the routes in order, a regex match each: the hot read routes go first (no other
    # route matches their paths, so the order changes nothing else).
    hot = {f"{V1}/search", f"{V1}/search/batch", f"{V1}/explain"}
    app.router.routes.sort(key=lambda r: getattr(r, "path", "") not in hot)
    return app
