"""Error mapping: every ``AetherError`` becomes a status and ``{"error": {"type", "message"}}``.

Client mistakes are 4xx; a 500 means a bug or a broken store on the server, and its body never
carries a stack trace (the trace goes to the server log with the request id).
"""

from __future__ import annotations

import logging
from typing import Any

from .. import errors as E
from ._names import NamespaceLimit

log = logging.getLogger("aether.server")

# Most specific first: the first class an error is an instance of gives the status.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (E.AuthenticationError, 401),
    (E.PermissionDeniedError, 403),
    (E.InvalidContentError, 422),
    (E.InvalidInputError, 422),
    (E.AtomNotFoundError, 404),
    (E.StoreNotFoundError, 404),
    (E.ReadOnlyError, 409),
    (E.StoreLockedError, 409),
    (E.StateConflictError, 409),
    (E.ReindexConflictError, 409),
    (E.ModelMismatchError, 409),
    (E.ConfigError, 400),
    (E.MissingDependencyError, 501),
    (E.StoreClosedError, 503),
    (E.EmbeddingError, 503),
)


class PayloadTooLarge(E.InvalidInputError):
    """Internal marker: the body or a batch is over the server's limit (reported as InvalidInputError, 413)."""


class UnknownResource(E.InvalidInputError):
    """Internal marker: no such job (reported as InvalidInputError, 404)."""


def status_for(exc: BaseException) -> int:
    if isinstance(exc, PayloadTooLarge):
        return 413
    if isinstance(exc, NamespaceLimit):
        return 409
    if isinstance(exc, UnknownResource):
        return 404
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_type(exc: BaseException) -> str:
    """The public type name: the nearest class that is part of ``aether.errors``."""
    for cls in type(exc).__mro__:
        if cls.__module__ == E.__name__ and issubclass(cls, E.AetherError):
            return cls.__name__
    return "AetherError"


def error_doc(type_name: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_name, "message": message}
    if request_id is not None:
        body["request_id"] = request_id
    return {"error": body}


def describe_validation(errors: list[Any]) -> tuple[int, str]:
    """Status and one-line message for pydantic / FastAPI request validation errors."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed JSON body"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "; ".join(parts) + more
