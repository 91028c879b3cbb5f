"""An MCP memory server: an agent remembers, recalls, corrects and forgets through MCP tools.

``build_server(memory)`` returns an ``mcp.server.mcpserver.MCPServer`` (``pip install 'aether[mcp]'``)
whose tools are thin calls of the public :class:`aether.Memory` facade:

========== ============================================================ ==========================
tool       effect                                                       annotations
========== ============================================================ ==========================
remember   ``Memory.add``                                               additive
recall     ``Memory.search`` at a valid time and a transaction time     read-only, idempotent
correct    ``Memory.correct`` (a new version; history keeps the old)    additive
forget     ``Memory.retract`` (the fact stops being true)               additive
history    ``Memory.history``                                           read-only, idempotent
payload    ``Memory.payload`` (the bytes, base64)                       read-only, idempotent
erase      ``Memory.erase`` (GDPR; only with ``allow_erase=True``)      destructive
========== ============================================================ ==========================

Every write returns the ``tx_time`` of its transaction; ``recall(as_of=tx_time)`` then answers as
the store knew things right after that write, so an agent can replay what it knew at any step.
Times are ISO-8601 strings with an offset (``Z`` accepted); a bare ``YYYY-MM-DD`` means midnight UTC.
A bad argument is a tool error (``is_error``) carrying aether's message; the server keeps running.

Run one over stdio or streamable HTTP with ``aether mcp STORE``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field

from ..api import UNSET, Memory
from ..errors import AetherError, InvalidInputError, MissingDependencyError
from ..models import MemoryAtom

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = [
    "EraseOutput",
    "ForgetOutput",
    "HistoryOutput",
    "PayloadOutput",
    "RecallHit",
    "RecallOutput",
    "Version",
    "WriteOutput",
    "build_server",
]

INSTRUCTIONS = """\
Long-term memory with two time axes. `remember` stores a fact; `recall` finds the facts most relevant
to a question. Every fact has a valid time (when it is true in the world; you may give valid_from /
valid_to) and a transaction time (when the memory recorded it; returned as tx_time by every write).
When a fact changes, call `correct` on its atom_id instead of remembering a contradiction; when it
stops being true, call `forget`. Nothing is lost: `recall(as_of=<a tx_time>)` answers as the memory
knew things right after that write, `recall(valid_at=<time>)` answers what was true at that time,
and `history(atom_id)` lists every version. Times are ISO-8601 (2024-06-01 or 2024-06-01T09:30:00Z)."""

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

Scalar = str | int | float | bool
TagsArg = Annotated[
    dict[str, Scalar] | None,
    Field(description='Flat labels, e.g. {"user": "alice", "topic": "travel"}. Values are strings, numbers '
                      "or booleans."),
]
TimeArg = str | None


class WriteOutput(BaseModel):
    """The atom a write touched and the transaction time it was recorded at."""

    atom_id: str = Field(description="Stable id of the memory; pass it to correct, forget or history.")
    tx_time: str = Field(description="When the memory recorded this write (ISO-8601). Use it as recall's as_of.")


class RecallHit(BaseModel):
    """One recalled memory."""

    atom_id: str
    content: str
    score: float = Field(description="Relevance, higher is better.")
    valid_from: str = Field(description="When the fact started to hold.")
    valid_to: str | None = Field(description="When it stopped holding; null: still holds.")
    tx_time: str = Field(description="When this version was recorded.")
    tags: dict[str, Scalar]


class RecallOutput(BaseModel):
    """The memories most relevant to a query, at one valid time and one transaction time."""

    hits: list[RecallHit]
    as_of: str | None = Field(description="The transaction time the answer reflects (null: the memory is empty).")
    valid_at: str | None = Field(description="The world time the facts hold at (null: now).")


class ForgetOutput(BaseModel):
    """A retracted memory."""

    atom_id: str
    at: str | None = Field(description="When the fact stopped being true (null: now).")
    tx_time: str = Field(description="When the memory recorded the retraction (ISO-8601).")


class Version(BaseModel):
    """One immutable version of a memory."""

    version_id: int | None
    content: str
    valid_from: str
    valid_to: str | None = Field(description="null: open-ended.")
    tx_from: str = Field(description="When the memory started to believe this version.")
    tx_to: str | None = Field(description="When it stopped believing it (superseded); null: still believed.")
    tags: dict[str, Scalar]
    content_type: str | None = Field(None, description="The payload's media type; null: no payload.")
    payload_digest: str | None = Field(None, description="SHA-256 (hex) of this version's payload.")


class PayloadOutput(BaseModel):
    """The payload (image, audio, video... bytes) of one version of a memory."""

    atom_id: str
    content_type: str | None
    size_bytes: int | None
    payload_digest: str | None = Field(description="SHA-256 (hex) of the bytes.")
    payload_base64: str


class HistoryOutput(BaseModel):
    """Every version of one memory, oldest transaction first."""

    atom_id: str
    versions: list[Version]


class EraseOutput(BaseModel):
    """What an erasure removed."""

    erased_versions: int
    keys_destroyed: int


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def _time(value: str | None, name: str) -> datetime | str | None:
    """A bare date is midnight UTC (as on the command line); anything else is parsed by aether itself."""
    if value is None:
        return None
    text = value.strip()
    if _DATE.fullmatch(text):
        try:
            d = date.fromisoformat(text)
        except ValueError:
            raise InvalidInputError(f"{name}: {value!r} is not a valid date") from None
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    return text


def _hit(atom: MemoryAtom, score: float) -> RecallHit:
    return RecallHit(
        atom_id=atom.atom_id, content=atom.content.inline, score=float(score), valid_from=atom.valid_from.isoformat(),
        valid_to=_iso(atom.valid_to), tx_time=_iso(atom.tx_from) or "", tags=atom.tags,
    )


def _version(atom: MemoryAtom) -> Version:
    return Version(
        version_id=atom.version_id, content=atom.content.inline, valid_from=atom.valid_from.isoformat(),
        valid_to=_iso(atom.valid_to), tx_from=_iso(atom.tx_from) or "", tx_to=_iso(atom.tx_to), tags=atom.tags,
        content_type=atom.content_type if atom.payload_digest is not None else None,
        payload_digest=atom.payload_digest,
    )


_F = TypeVar("_F", bound=Callable[..., Any])


def build_server(memory: Memory, *, allow_erase: bool = False, name: str = "aether") -> MCPServer:
    """An MCP server whose tools read and write ``memory``.

    Parameters
    ----------
    memory
        The store (or a read-only :class:`aether.View`: its write tools then answer with an error).
    allow_erase
        Also offer the ``erase`` tool (permanent GDPR erasure of a subject or an atom). Off by default:
        an agent should not be able to destroy history unless its operator says so.
    name
        The server name announced to clients.

    Returns
    -------
    mcp.server.mcpserver.MCPServer
        Run it with ``.run("stdio")`` / ``.run("streamable-http", host=..., port=...)``, mount its
        ``streamable_http_app()``, or connect in-process with ``mcp.Client(server)``.

    Raises
    ------
    MissingDependencyError
        If the ``mcp`` package is not installed (``pip install 'aether[mcp]'``).
    """
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
        from mcp.types import ToolAnnotations
    except ImportError as exc:
        raise MissingDependencyError("the MCP server needs the mcp package: pip install 'aether[mcp]'") from exc

    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS)
    # Serialises this server's writes with the read of the commit time that follows them, so that
    # forget's tx_time is the retraction's own commit, not a later write's.
    write_lock = threading.Lock()

    def tool_errors(fn: _F) -> _F:
        """aether's typed errors become tool errors the model can read (never a server failure)."""
        import functools

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except AetherError as exc:
                raise ToolError(f"{type(exc).__name__}: {exc}") from exc

        return wrapper  # type: ignore[return-value]

    def hints(*, read_only: bool, destructive: bool = False, idempotent: bool) -> Any:
        return ToolAnnotations(
            read_only_hint=read_only, destructive_hint=destructive, idempotent_hint=idempotent, open_world_hint=False
        )

    @server.tool(annotations=hints(read_only=False, idempotent=False))
    @tool_errors
    def remember(
        content: Annotated[str, Field(description="The fact to remember, as one self-contained sentence.")],
        tags: TagsArg = None,
        valid_from: Annotated[TimeArg, Field(description="When the fact started to hold (ISO-8601). Default: now.")]
        = None,
        valid_to: Annotated[TimeArg, Field(description="When it stops holding, if known. Default: open-ended.")]
        = None,
        subject: Annotated[
            str | None, Field(description="Whom the fact is about or belongs to (a user id); the unit of erasure.")
        ] = None,
        payload_base64: Annotated[
            str | None, Field(description="Bytes to keep with the fact (an image, audio...), base64; content is "
                                          "then their caption or transcript.")
        ] = None,
        content_type: Annotated[
            str | None, Field(description="The payload's media type, e.g. image/png.")
        ] = None,
    ) -> WriteOutput:
        """Store a new fact in long-term memory and return its atom_id and tx_time.

        Use this for information worth keeping across conversations (preferences, facts about people,
        decisions). If the fact updates something already remembered, call `correct` on that atom_id
        instead, so that recall does not return both the old and the new fact.
        """
        payload = None
        if payload_base64 is not None:
            import base64
            import binascii

            try:
                payload = base64.b64decode(payload_base64, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInputError("payload_base64 is not valid base64") from None
        with write_lock:
            atom = memory.add(
                content, tags=tags, valid_from=_time(valid_from, "valid_from"), valid_to=_time(valid_to, "valid_to"),
                subject="default" if subject is None else subject, payload=payload, content_type=content_type,
            )
        return WriteOutput(atom_id=atom.atom_id, tx_time=_iso(atom.tx_from) or "")

    @server.tool(annotations=hints(read_only=True, idempotent=True))
    @tool_errors
    def recall(
        query: Annotated[str, Field(description="What you want to know, in natural language.")],
        k: Annotated[int, Field(ge=1, le=1000, description="How many memories to return at most.")] = 10,
        valid_at: Annotated[
            TimeArg, Field(description="World time the facts must hold at (ISO-8601). Default: now.")
        ] = None,
        as_of: Annotated[
            TimeArg,
            Field(description="Answer as the memory knew things at this transaction time, e.g. a tx_time an "
                              "earlier call returned. Default: the latest state."),
        ] = None,
        tags: Annotated[
            dict[str, Scalar] | None, Field(description="Only memories having all these tags (exact match).")
        ] = None,
        mode: Annotated[
            Literal["dense", "keyword", "hybrid"] | None,
            Field(description="dense: by meaning; keyword: by exact words (BM25); hybrid: both. Default: the "
                              "store's default."),
        ] = None,
    ) -> RecallOutput:
        """Find the remembered facts most relevant to a query, best first.

        By default you get what is true now, as currently known. Give valid_at to ask what was true at
        another time, and as_of (a tx_time from an earlier call) to ask what the memory knew back then:
        corrections recorded after as_of are not visible.
        """
        at = _time(as_of, "as_of")
        if at is None:
            # Pin the answer to one commit, so the as_of reported is exactly what was searched.
            at = memory.last_commit
        hits = memory.search(
            query, k, valid_at=_time(valid_at, "valid_at"), as_of=at, tags=tags, mode=mode,
        )
        as_of_out = at.isoformat() if isinstance(at, datetime) else at
        return RecallOutput(hits=[_hit(h.atom, h.score) for h in hits], as_of=as_of_out, valid_at=valid_at)

    @server.tool(annotations=hints(read_only=False, idempotent=False))
    @tool_errors
    def correct(
        atom_id: Annotated[str, Field(description="The atom_id of the memory to correct.")],
        content: Annotated[str, Field(description="What is now believed, as one self-contained sentence.")],
        valid_from: Annotated[
            TimeArg,
            Field(description="From when the corrected fact holds (ISO-8601); may be in the past. Default: now."),
        ] = None,
        tags: Annotated[
            dict[str, Scalar] | None, Field(description="New tags; omit to keep the current ones.")
        ] = None,
    ) -> WriteOutput:
        """Record a new version of a remembered fact (it changed, or it was wrong).

        The old version stays in history: recall with an as_of before this call still returns it.
        """
        with write_lock:
            atom = memory.correct(
                atom_id, content, valid_from=_time(valid_from, "valid_from"), tags=UNSET if tags is None else tags,
            )
        return WriteOutput(atom_id=atom.atom_id, tx_time=_iso(atom.tx_from) or "")

    @server.tool(annotations=hints(read_only=False, idempotent=False))
    @tool_errors
    def forget(
        atom_id: Annotated[str, Field(description="The atom_id of the memory that stopped being true.")],
        at: Annotated[TimeArg, Field(description="When it stopped being true (ISO-8601). Default: now.")] = None,
    ) -> ForgetOutput:
        """Mark a remembered fact as no longer true from a time on (default now).

        Recall at later times no longer returns it; history and recall at earlier valid times or
        earlier as_of still do. Use this, not erase, when a fact simply ends.
        """
        with write_lock:
            memory.retract(atom_id, at=_time(at, "at"))
            tx = memory.last_commit
        return ForgetOutput(atom_id=atom_id, at=at, tx_time=_iso(tx) or "")

    @server.tool(annotations=hints(read_only=True, idempotent=True))
    @tool_errors
    def history(
        atom_id: Annotated[str, Field(description="The atom_id of a memory.")],
    ) -> HistoryOutput:
        """List every version of a memory, oldest first: what was believed, for which valid time, and when."""
        versions = memory.history(atom_id)
        if not versions:
            raise ToolError(f"AtomNotFoundError: no memory with atom_id {atom_id!r}")
        return HistoryOutput(atom_id=atom_id, versions=[_version(a) for a in versions])

    @server.tool(annotations=hints(read_only=True, idempotent=True))
    @tool_errors
    def payload(
        atom_id: Annotated[str, Field(description="The atom_id of a memory that has a payload.")],
        valid_at: Annotated[TimeArg, Field(description="World time (ISO-8601). Default: now.")] = None,
        as_of: Annotated[TimeArg, Field(description="Transaction time: as the memory knew it then.")] = None,
    ) -> PayloadOutput:
        """Fetch the bytes (base64) kept with a memory: an image, a recording, a document."""
        import base64

        va, ao = _time(valid_at, "valid_at"), _time(as_of, "as_of")
        atom = memory.get(atom_id, valid_at=va, as_of=ao)
        if atom is None:
            raise ToolError(f"AtomNotFoundError: no memory with atom_id {atom_id!r} at those times")
        data = memory.payload(atom_id, valid_at=atom.valid_from, as_of=atom.tx_from)
        return PayloadOutput(atom_id=atom_id, content_type=atom.content_type, size_bytes=atom.size_bytes,
                             payload_digest=atom.payload_digest, payload_base64=base64.b64encode(data).decode())

    if allow_erase:

        @server.tool(annotations=hints(read_only=False, destructive=True, idempotent=False))
        @tool_errors
        def erase(
            subject: Annotated[str | None, Field(description="Erase every memory of this subject.")] = None,
            atom_id: Annotated[str | None, Field(description="Erase this one memory, all its versions.")] = None,
        ) -> EraseOutput:
            """Permanently erase a subject's memories or one memory, for all time (privacy requests only).

            Unlike forget, this destroys history: nothing, not even recall with an earlier as_of, can
            return the erased data again. Give exactly one of subject or atom_id.
            """
            with write_lock:
                res = memory.erase(subject=subject, atom_id=atom_id)
            return EraseOutput(erased_versions=res.versions, keys_destroyed=res.keys_destroyed)

    return server
