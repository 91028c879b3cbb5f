"""Request bodies parsed with orjson (when installed) instead of the standard library.

A bulk ``add_columns`` body is tens of megabytes (texts and base64 vectors): the standard library
decodes the bytes to ``str`` and then scans it; orjson reads the bytes directly, several times faster.
What orjson refuses (``NaN``, integers beyond 64 bits) is read again by the standard library, so the
engine sees, and rejects, exactly what it would have seen before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

try:
    import orjson
except ImportError:  # pragma: no cover - optional: the standard library then
    orjson = None  # type: ignore[assignment]


class _Request(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if orjson is None:
                self._json = json.loads(body)
            else:
                try:
                    self._json = orjson.loads(body)
                except orjson.JSONDecodeError:
                    self._json = json.loads(body)  # NaN, huge integers; malformed JSON raises here as before
        return self._json


class FastJsonRoute(APIRoute):
    """An ``APIRoute`` whose JSON body is parsed by :class:`_Request`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            return await handler(_Request(request.scope, request.receive))

        return run
