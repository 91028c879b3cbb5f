"""Request and response bodies (pydantic). Field names and time format are those of the Python API.

Times are ISO-8601 strings with an offset (``Z`` accepted), passed to the engine as given, so the
server accepts and rejects exactly what :class:`aether.Memory` does. Vectors are JSON arrays of numbers
or, much faster for bulk loads, base64 of little-endian float32 (:class:`VectorsB64`).
"""

from __future__ import annotations

import binascii
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidVectorError
from ..models import Hit, MemoryAtom

TimeStr = Annotated[
    str,
    Field(max_length=64, json_schema_extra={"format": "date-time"},
          description="ISO-8601 with an offset, e.g. 2024-06-01T00:00:00Z"),
]
JsonObject = dict[str, Any]
Tags = dict[str, Any]


class VectorsB64(BaseModel):
    """Vectors as base64 of a C-ordered little-endian float32 array of ``shape`` (``[n, dim]`` or ``[dim]``)."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float32"] = "float32"
    shape: list[Annotated[int, Field(ge=0, le=1 << 24)]] = Field(min_length=1, max_length=2)
    data: str

    def array(self) -> np.ndarray:
        try:
            # strict C decoder: rejects stray characters without b64decode(validate=True)'s regex pass
            raw = binascii.a2b_base64(self.data, strict_mode=True)
        except (binascii.Error, ValueError):
            raise InvalidVectorError("vectors.data is not valid base64") from None
        n = 1
        for s in self.shape:
            n *= s
        if len(raw) != 4 * n:
            raise InvalidVectorError(f"vectors.data holds {len(raw)} bytes; shape {self.shape} needs {4 * n}")
        return np.frombuffer(raw, dtype="<f4").reshape(self.shape)


Vector = list[float] | VectorsB64
Vectors = list[list[float]] | VectorsB64


def as_array(v: Any) -> Any:
    """A wire vector (or matrix) as numpy; the engine then checks its shape and values."""
    if isinstance(v, VectorsB64):
        return v.array()
    if isinstance(v, list):
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # out-of-range numbers become inf: rejected later
                return np.asarray(v, dtype=np.float32)
        except (TypeError, ValueError) as exc:  # ragged rows
            raise InvalidVectorError(f"not a numeric vector or matrix: {exc}") from None
    return v


def as_queries(qs: Any) -> Any:
    """search_many queries: a list of texts stays a list; vectors become an ``(m, dim)`` array."""
    if isinstance(qs, list) and all(isinstance(q, str) for q in qs):
        return qs
    return as_array(qs)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddRequest(_Body):
    """One memory: the keyword arguments of ``Memory.add`` (``content`` a JSON object: a STRUCTURED memory;
    ``payload_base64``: the payload bytes, base64, with their ``content_type``)."""

    content: str | JsonObject | None = None
    payload_base64: str | None = None
    content_type: str | None = None
    tags: Tags | None = None
    metadata: JsonObject | None = None
    valid_from: TimeStr | None = None
    valid_to: TimeStr | None = None
    modality: str | None = None
    subject: str | None = None
    quality_score: float | None = None
    atom_id: str | None = None
    vector: Vector | None = None
    content_metadata: JsonObject | None = None


class AddManyRequest(_Body):
    """``Memory.add_many``: items (texts or ``add`` objects) in one atomic transaction."""

    items: list[str | AddRequest]
    vectors: Vectors | None = None


class AddColumnsRequest(_Body):
    """``Memory.add_columns``: the same rows column by column (one value for all rows, or one per row)."""

    content: list[str]
    vectors: Vectors | None = None
    atom_id: list[str | None] | None = None
    valid_from: TimeStr | list[TimeStr | None] | None = None
    valid_to: TimeStr | list[TimeStr | None] | None = None
    tags: Tags | list[Tags | None] | None = None
    metadata: JsonObject | list[JsonObject | None] | None = None
    content_metadata: JsonObject | list[JsonObject | None] | None = None
    modality: str | list[str] | None = None
    subject: str | list[str] | None = None
    quality_score: float | list[float] | None = None


#: Content type of ``atoms/columns/binary``: ``u32 LE n``, ``n`` bytes of JSON (the fields of
#: :class:`AddColumnsRequest` but ``vectors``, plus ``"shape": [rows, dim]``), then ``rows x dim``
#: little-endian float32. No base64 to encode and decode, no 20 MB JSON string to scan: the bulk path.
BINARY_COLUMNS = "application/vnd.aether.columns"


def parse_binary_columns(raw: bytes) -> tuple[AddColumnsRequest, np.ndarray]:
    """The request and vectors of an ``atoms/columns/binary`` body (``InvalidInputError`` if malformed)."""
    import json

    from pydantic import ValidationError

    from ..errors import InvalidInputError

    if len(raw) < 4:
        raise InvalidInputError("binary columns body: shorter than its 4-byte header length")
    n = int.from_bytes(raw[:4], "little")
    if n > len(raw) - 4:
        raise InvalidInputError(f"binary columns body: header length {n} runs past the body ({len(raw)} bytes)")
    try:
        head = json.loads(raw[4:4 + n])
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("binary columns body: the header is not JSON") from None
    if not isinstance(head, dict):
        raise InvalidInputError("binary columns body: the header is not a JSON object")
    shape = head.pop("shape", None)
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(type(x) is int and 0 <= x <= 1 << 24 for x in shape)):
        raise InvalidInputError("binary columns body: the header needs \"shape\": [rows, dim] (two non-negative ints)")
    if "vectors" in head:
        raise InvalidInputError("binary columns body: the vectors follow the header; \"vectors\" is not a header field")
    try:
        body = AddColumnsRequest.model_validate(head)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(x) for x in e['loc']) or 'header'}: {e['msg']}" for e in exc.errors()[:5]]
        raise InvalidInputError("binary columns body: " + "; ".join(parts)) from None
    data = memoryview(raw)[4 + n:]
    if len(data) != 4 * shape[0] * shape[1]:
        raise InvalidVectorError(f"binary columns body: {len(data)} bytes of vectors; shape {shape} needs "
                                 f"{4 * shape[0] * shape[1]}")
    return body, np.frombuffer(data, dtype="<f4").reshape(shape)


class AtomIds(BaseModel):
    """The atom ids written, in order."""

    atom_ids: list[str]


class CorrectRequest(_Body):
    """``Memory.correct``: fields not given are kept from the atom's latest version (``null`` clears tags)."""

    atom_id: str
    content: str | None = None
    valid_from: TimeStr | None = None
    valid_to: TimeStr | None = None
    tags: Tags | None = None
    metadata: JsonObject | None = None
    vector: Vector | None = None


class CorrectManyRequest(_Body):
    """``Memory.correct_many``: many corrections in one transaction, column by column."""

    atom_id: list[str]
    content: list[str | None] | None = None
    vectors: Vectors | None = None
    valid_from: TimeStr | list[TimeStr | None] | None = None
    valid_to: TimeStr | list[TimeStr | None] | None = None
    tags: Tags | list[Tags | None] | None = None
    metadata: JsonObject | list[JsonObject | None] | None = None


class RetractManyRequest(_Body):
    """``Memory.retract_many``: many retractions in one transaction (``at``: one time or one per row)."""

    atom_id: list[str]
    at: TimeStr | list[TimeStr | None] | None = None


class RetractRequest(_Body):
    """``Memory.retract``: the fact stopped being true ``at`` (default now)."""

    atom_id: str
    at: TimeStr | None = None


class DeleteRequest(_Body):
    atom_id: str


class EraseRequest(_Body):
    """``Memory.erase``: every version of a subject or of one atom, for all time."""

    subject: str | None = None
    atom_id: str | None = None


class EraseResponse(BaseModel):
    versions: int
    keys_destroyed: int
    seq: int


class ViewPin(_Body):
    """Run the read on ``Memory.view(valid_at=, as_of=)`` (a read-only, time-pinned view)."""

    valid_at: TimeStr | None = None
    as_of: TimeStr | None = None


class ViewRequest(ViewPin):
    """Pins for a new view; ``view`` makes it a view of that view (as ``View.view``)."""

    view: ViewPin | None = None


class ViewResponse(BaseModel):
    """The pins of a view as the store resolved them."""

    valid_at: str | None
    as_of: str | None


class _SearchOptions(BaseModel):
    # Options beyond the declared ones are allowed and passed to Memory.search when it takes a
    # keyword of that name (so a new search option works without a server change); others are a 422.
    model_config = ConfigDict(extra="allow")

    k: int = Field(10, ge=1, le=10_000)
    valid_at: TimeStr | None = None
    as_of: TimeStr | None = None
    valid_during: Annotated[list[TimeStr | None], Field(min_length=2, max_length=2)] | None = None
    tags: Tags | None = None
    mode: str | None = Field(None, description="dense, keyword or hybrid (default: the store's default)")
    fusion: str | None = None
    rrf_k: int | None = None
    dense_weight: float | None = None
    view: ViewPin | None = None


class SearchRequest(_SearchOptions):
    """``Memory.search`` (and ``explain``): a text or a vector query, and its options."""

    query: str | Vector


class SearchManyRequest(_SearchOptions):
    """``Memory.search_many``: texts, or vectors (``[[...], ...]`` or base64)."""

    queries: list[str] | list[list[float]] | VectorsB64


class SearchResponse(BaseModel):
    hits: list[Hit]


class SearchManyResponse(BaseModel):
    results: list[list[Hit]]


class PayloadResponse(BaseModel):
    """``Memory.payload``: the payload bytes of one version, base64, with what describes them."""

    atom_id: str
    version_id: int | None
    content_type: str | None
    size_bytes: int | None
    payload_digest: str | None
    payload_base64: str


class HistoryResponse(BaseModel):
    versions: list[MemoryAtom]


class CreateNamespace(_Body):
    """Create a namespace with a model (``hashing:DIM`` or a name from ``models/``; default: the server's)."""

    model: str | None = Field(None, max_length=200)


class NamespaceInfo(BaseModel):
    name: str
    model: str
    dim: int
    last_commit: str | None


class NamespaceList(BaseModel):
    namespaces: list[str]


class JobRequest(_Body):
    """An admin job: ``compact`` (``merge_below``, ``retain`` a time or ``retain_days``) or ``reindex``
    (``model``, ``recipe``, ``batch_size``)."""

    kind: Literal["compact", "reindex"]
    merge_below: int | None = Field(None, ge=1)
    retain: TimeStr | None = None
    retain_days: float | None = Field(None, ge=0, le=3_650_000)
    model: str | None = Field(None, max_length=200)
    recipe: str | None = Field(None, max_length=200)
    batch_size: int | None = Field(None, ge=1, le=65_536)


class JobError(BaseModel):
    type: str
    message: str


class Job(BaseModel):
    """An admin job and its status (``queued``, ``running``, ``succeeded``, ``failed``)."""

    id: str
    namespace: str
    kind: str
    status: str
    created: str
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    result: dict[str, Any] | None = None
    error: JobError | None = None


class JobList(BaseModel):
    jobs: list[Job]


class ErrorBody(BaseModel):
    type: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"type": "<AetherError subclass>", "message": "..."}}``."""

    error: ErrorBody


class Health(BaseModel):
    status: str
