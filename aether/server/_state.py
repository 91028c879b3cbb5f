"""What the routes share: the per-app :class:`Server` state, the authorised request :class:`Ctx`, and
small helpers that run engine calls on worker threads and translate bodies into API keyword arguments."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from .. import errors as E
from ..api import Memory
from ..models import MemoryAtom
from . import _schemas as S
from ._auth import KeyStore, Principal
from ._errors import error_doc, error_type, status_for
from ._jobs import Jobs
from ._metrics import Metrics
from ._names import Namespaces

log = logging.getLogger("aether.server")

#: Largest ``k`` x queries of a vector search answered on the event loop instead of a worker thread.
#: Such a search is a few hundred microseconds of index scan: the hop to a worker and back costs about
#: as much again, and under concurrency the loop and the workers trade the GIL in 5 ms slices.
INLINE_WORK = 1_000


@dataclass
class Ctx:
    """One authorised request: the principal and the namespace it may use."""

    server: Server
    principal: Principal
    ns: str

    def memory(self, *, create: bool = False) -> Memory:
        """The namespace's store (call on a worker thread: the first use opens it)."""
        return self.server.namespaces.get(self.ns, create=create and self.server.auto_create)

    def inline(self, query: Any, work: int) -> bool:
        """Whether a search is answered on the event loop (see :func:`_call`): a vector query (no model
        to run), at most :data:`INLINE_WORK` hits (``k`` x queries), and a namespace that is open and
        has answered a search before, on a worker thread (a store just opened may still be loading its
        vectors in the background, and its first search waits for them)."""
        return (not isinstance(query, str | list) and work <= INLINE_WORK and self.ns in self.server.warm
                and self.server.namespaces.is_open(self.ns))


class Server:
    """State shared by the routes of one app."""

    def __init__(
        self,
        root: Path,
        *,
        keys: KeyStore,
        model: str | None,
        key_file: str | os.PathLike[str] | None,
        max_body_bytes: int,
        max_batch: int,
        max_queries: int,
        max_hits: int,
        max_namespaces: int,
        auto_create: bool,
        open_kwargs: dict[str, Any] | None,
    ) -> None:
        self.namespaces = Namespaces(root, model=model, key_file=key_file, open_kwargs=open_kwargs,
                                     max_namespaces=max_namespaces)
        self.keys = keys
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.max_queries = max_queries
        self.max_hits = max_hits
        self.auto_create = auto_create
        self.metrics = Metrics(self.namespaces.opened)
        self.jobs = Jobs(lambda kind, status, dt: self.metrics.job.labels(kind, status).observe(dt))
        self.ready = False
        self.not_ready: list[str] = ["starting"]
        #: Namespaces that have answered a search since they were opened (see :meth:`Ctx.inline`).
        self.warm: set[str] = set()

    def startup(self) -> None:
        """Check that the default model loads and every existing namespace opens (``/readyz``)."""
        problems: list[str] = []
        self.namespaces.reopen()
        self.jobs.start()
        if self.model is not None:
            from ..embed import embedder_for

            try:
                embedder_for(self.model).embed(["ready"])
            except E.AetherError as exc:
                problems.append(f"model {self.model}: {type(exc).__name__}: {exc}")
                log.error("the model %s does not load: %s: %s", self.model, type(exc).__name__, exc)
        for name in self.namespaces.names():
            try:
                mem = self.namespaces.get(name)
                # Load the model now, not on the first request (a store of precomputed vectors has
                # an embedder that embeds no text: nothing to load).
                with contextlib.suppress(E.InvalidInputError):
                    mem.embedder.embed(["ready"])
            except E.AetherError as exc:
                problems.append(f"namespace {name}: {type(exc).__name__}: {exc}")
                log.error("namespace %s does not open: %s: %s", name, type(exc).__name__, exc)
        self.not_ready = problems
        self.ready = not problems

    def shutdown(self) -> None:
        self.ready = False
        self.not_ready = ["shutting down"]
        self.warm.clear()
        self.jobs.shutdown()
        for name, exc in self.namespaces.close_all():
            log.error("closing namespace %s failed: %s: %s", name, type(exc).__name__, exc)


# ------------------------------------------------------------------------------------ helpers


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def _error_response(exc: BaseException, request_id: str | None) -> JSONResponse:
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    message = str(exc)
    if status == 500:
        # A broken store or a bug, not a client mistake: its text (file paths, internals) goes to the log only.
        log.error("request %s failed: %s: %s", request_id, type(exc).__name__, exc)
        message = internal_message(request_id)
    return JSONResponse(error_doc(error_type(exc), message, request_id), status_code=status, headers=headers)


def internal_message(request_id: str | None) -> str:
    return f"internal server error; the server log has the details under request id {request_id}"


def _rid(request: Request) -> str | None:
    rid: str | None = request.scope.get("state", {}).get("request_id")
    return rid


async def _call(request: Request, fn: Callable[[], Response], *, inline: bool = False) -> Response:
    """Run ``fn`` on a worker thread (on the event loop itself when ``inline``: a short vector search,
    see :meth:`Ctx.inline`); an error that is not an ``AetherError`` is a logged 500, never a trace."""
    try:
        if inline:
            return fn()
        return await anyio.to_thread.run_sync(fn)
    except E.AetherError:
        raise
    except Exception:
        rid = _rid(request)
        log.exception("internal error in %s %s (request %s)", request.method, request.url.path, rid)
        return JSONResponse(error_doc("RemoteError", internal_message(rid), rid), status_code=500)


@functools.cache
def _options_of(fn: Callable[..., Any]) -> frozenset[str]:
    """Keyword parameters of a Memory read method (the search options the engine takes)."""
    return frozenset(
        n for n, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "self"
    )


def _search_kwargs(body: S._SearchOptions, fn: Callable[..., Any], exclude: set[str]) -> dict[str, Any]:
    """The options the caller set (so the engine's defaults apply to the others), checked against ``fn``."""
    data = body.model_dump(exclude_unset=True, exclude={"view", *exclude})
    for key in list(data):
        if data[key] is None and key in S._SearchOptions.model_fields:
            del data[key]  # an explicit null means "default", as when the option is left out
    unknown = sorted(set(data) - _options_of(fn))
    if unknown:
        raise E.InvalidInputError(f"unknown search option(s): {', '.join(unknown)}")
    return data


def _target(mem: Memory, pin: S.ViewPin | None) -> Memory:
    return mem if pin is None else mem.view(valid_at=pin.valid_at, as_of=pin.as_of)


def _pin(valid_at: str | None, as_of: str | None) -> S.ViewPin | None:
    return None if valid_at is None and as_of is None else S.ViewPin(valid_at=valid_at, as_of=as_of)


def _version_at(
    mem: Memory, atom_id: str, valid_at: str | None, as_of: str | None, view_valid_at: str | None,
    view_as_of: str | None,
) -> tuple[Memory, MemoryAtom]:
    """The (pinned) memory and the version of ``atom_id`` true at ``valid_at`` as known at ``as_of``; 404 if none."""
    mem = _target(mem, _pin(view_valid_at, view_as_of))
    atom = mem.get(atom_id, valid_at=valid_at, as_of=as_of)
    if atom is None:
        raise E.AtomNotFoundError(f"no version of atom {atom_id!r} at that valid and transaction time")
    return mem, atom


def _info(name: str, mem: Memory) -> S.NamespaceInfo:
    last = mem.last_commit
    return S.NamespaceInfo(name=name, model=mem.embedder.identity, dim=mem.embedder.dim,
                           last_commit=None if last is None else last.isoformat())


def _add_kwargs(item: S.AddRequest) -> dict[str, Any]:
    data = item.model_dump(exclude_unset=True, exclude={"vector", "payload_base64"})
    if item.vector is not None:
        data["vector"] = S.as_array(item.vector)
    if item.payload_base64 is not None:
        import base64
        import binascii

        try:
            data["payload"] = base64.b64decode(item.payload_base64, validate=True)
        except (binascii.Error, ValueError):
            raise E.InvalidPayloadError("payload_base64 is not valid base64") from None
    return {k: v for k, v in data.items() if v is not None or k in ("tags", "metadata", "content_metadata")}
