"""The outer ASGI layer: request ids, the body size limit, request metrics and JSON access logs."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from ._errors import error_doc

access_log = logging.getLogger("aether.server.access")
_RID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class RequestLayer:
    """Pure ASGI middleware (no per-request task or thread of its own).

    * ``X-Request-ID``: taken from the request when well-formed, else a new one; echoed in the response
      and stored in ``scope["state"]["request_id"]``.
    * Bodies over ``max_body`` bytes get a 413 before the app sees them (``Content-Length`` or streamed).
    * Every request is timed into ``aether_request_duration_seconds`` (by route template) and logged
      as one JSON line on the ``aether.server.access`` logger.
    """

    def __init__(self, app: Any, *, max_body: int, metrics: Any) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = dict(scope.get("headers") or ())
        rid_in = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = rid_in if _RID.fullmatch(rid_in) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status_box = [500]
        sent_bytes = [0]

        async def send_wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                sent_bytes[0] += len(message.get("body", b""))
            await send(message)

        try:
            if scope["method"] in _BODY_METHODS:
                body = await self._read_body(headers, receive)
                if body is None:
                    await self._too_large(send_wrapped, rid)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapped)
        except BaseException:
            status_box[0] = 500
            raise
        finally:
            dt = time.perf_counter() - t0
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            status = status_box[0]
            self.metrics.child(self.metrics.request, template, scope["method"], str(status)).observe(dt)
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state", {})
                access_log.info(json.dumps({
                    "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "request_id": rid,
                    "method": scope["method"],
                    "path": scope.get("path"),
                    "route": template,
                    "status": status,
                    "ms": round(dt * 1000, 3),
                    "bytes": sent_bytes[0],
                    "namespace": (scope.get("path_params") or {}).get("ns"),
                    "key_id": state.get("key_id"),
                    "client": (scope.get("client") or (None,))[0],
                }))

    async def _read_body(self, headers: dict[bytes, bytes], receive: Any) -> bytes | None:
        length = headers.get(b"content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    return None
            except ValueError:
                pass
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _too_large(self, send: Any, rid: str) -> None:
        doc = error_doc("InvalidInputError", f"request body over the server's limit of {self.max_body} bytes", rid)
        body = json.dumps(doc).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Any) -> Any:
    done = [False]

    async def replay() -> Any:
        if not done[0]:
            done[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then wait for the disconnect, as a server would

    return replay
