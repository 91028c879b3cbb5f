"""Typed data model: atoms, their content, search hits and plans (pydantic v2).

``MemoryAtom`` is one *version* of a memory as the store returns it, and also the
seed specification's mutable builder (``MemoryAtom()``, ``set_content``...), so code
written against the seed keeps working.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._time import to_us


def _now() -> datetime:
    return datetime.now(UTC)


def new_atom_id() -> str:
    """A fresh random atom id (UUID4, the seed's format)."""
    return str(uuid.uuid4())


class MemoryModality(str, Enum):
    """What kind of memory an atom holds; non-text kinds carry a text rendering that is embedded."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    STRUCTURED = "structured"


#: Reserved key of a version's stored content metadata: the payload descriptor
#: ``{"type": content type, "size": bytes, "sha256": digest}`` (see :mod:`aether.payloads`).
PAYLOAD_KEY = "aether:payload"
#: Reserved key of a STRUCTURED version's stored content metadata: its JSON object.
JSON_KEY = "aether:json"


def split_content_meta(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None, Any]:
    """``(caller's content metadata, payload descriptor or None, JSON object or None)`` of a stored one.

    The descriptor and the JSON object of a STRUCTURED atom ride in the content metadata column,
    so they are sealed with the row (encrypted stores), scrubbed with it (erasure) and kept by a
    correction that does not replace them; callers never see the reserved keys.
    """
    if PAYLOAD_KEY not in meta and JSON_KEY not in meta:
        return meta, None, None
    desc = meta.get(PAYLOAD_KEY)
    data = meta.get(JSON_KEY)
    user = {k: v for k, v in meta.items() if k != PAYLOAD_KEY and k != JSON_KEY}
    return user, desc if isinstance(desc, dict) else None, data


def content_values(text: str, stored_meta: dict[str, Any]) -> dict[str, Any]:
    """Every field of the ``MemoryContent`` of a stored version, in declaration order (the read path)."""
    meta, desc, data = split_content_meta(stored_meta) if stored_meta else (stored_meta, None, None)
    if desc is not None:
        return {"inline": text, "metadata": meta, "content_type": desc.get("type", "application/octet-stream"),
                "encoding": "binary", "size_bytes": int(desc.get("size", 0)), "payload_digest": desc.get("sha256"),
                "data": data}
    return {
        "inline": text, "metadata": meta, "content_type": "text/plain", "encoding": "utf-8",
        "size_bytes": (len(text) if text.isascii() else len(text.encode("utf-8"))) if text else 0,
        "payload_digest": None, "data": data,
    }


_PAYLOAD_FIELDS = ("content_type", "encoding", "size_bytes", "payload_digest")
_SETS: dict[tuple[bool, bool], frozenset[str]] = {
    (p, d): frozenset(("inline", "metadata") + (_PAYLOAD_FIELDS if p else ()) + (("data",) if d else ()))
    for p in (False, True) for d in (False, True)
}


def content_fields_set(values: dict[str, Any]) -> frozenset[str]:
    """The fields a validating ``MemoryContent(...)`` of :func:`content_values` records as set."""
    return _SETS[values["payload_digest"] is not None, values["data"] is not None]


def content_from_stored(text: str, stored_meta: dict[str, Any]) -> MemoryContent:
    """The validated ``MemoryContent`` of a stored version (the one-row read path)."""
    cv = content_values(text, stored_meta)
    extra = {k: cv[k] for k in content_fields_set(cv) if k not in ("inline", "metadata")}
    return MemoryContent(cv["inline"], cv["metadata"], **extra)


class MemoryContent(BaseModel):
    """The content of an atom: ``inline`` is the text that is embedded and searched.

    For an atom with a payload (an image, audio, video...), ``content_type`` and ``size_bytes``
    describe the payload and ``payload_digest`` is the SHA-256 (hex) of its bytes; the bytes
    themselves come from :meth:`aether.Memory.payload`. For a STRUCTURED atom, ``data`` is its
    JSON object and ``inline`` the deterministic text rendering that is embedded and searched.
    """

    model_config = ConfigDict(validate_assignment=True)

    inline: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    content_type: str = "text/plain"
    encoding: str = "utf-8"
    size_bytes: int = 0
    payload_digest: str | None = None
    data: dict[str, Any] | None = None

    def __init__(self, inline: str = "", metadata: dict[str, Any] | None = None, /, **data: Any) -> None:
        # The seed builds it positionally: MemoryContent("text", {...}).
        data.setdefault("inline", inline)
        data.setdefault("metadata", metadata or {})
        super().__init__(**data)
        if self.size_bytes == 0 and self.inline and self.payload_digest is None:
            object.__setattr__(self, "size_bytes", len(self.inline.encode(self.encoding)))


class MemoryAtom(BaseModel):
    """One version of a memory, with its two time axes.

    Attributes
    ----------
    atom_id
        Stable identity of the memory across versions.
    version_id
        Identity of this immutable version row (``None`` until stored).
    valid_from, valid_to
        When the fact holds in the world, ``[valid_from, valid_to)``; ``valid_to=None`` is open-ended.
    tx_from, tx_to
        When the store believed this version; ``tx_to=None`` means it still does.
    """

    model_config = ConfigDict(validate_assignment=False, use_enum_values=False)

    atom_id: str = Field(default_factory=new_atom_id)
    modality: MemoryModality = MemoryModality.TEXT
    content: MemoryContent = Field(default_factory=MemoryContent)
    tags: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    subject: str = "default"
    quality_score: float = 1.0
    access_count: int = 0
    last_accessed: datetime | None = None
    creation_context: dict[str, Any] = Field(default_factory=dict)
    version_id: int | None = None
    valid_from: datetime = Field(default_factory=_now)
    valid_to: datetime | None = None
    tx_from: datetime | None = None
    tx_to: datetime | None = None

    def __init__(self, modality: MemoryModality | str | None = None, /, **data: Any) -> None:
        # The seed constructs MemoryAtom(MemoryModality.IMAGE) positionally.
        if modality is not None:
            data.setdefault("modality", modality)
        super().__init__(**data)

    @model_validator(mode="after")
    def _aware_times(self) -> MemoryAtom:
        for name in ("valid_from", "valid_to", "tx_from", "tx_to", "last_accessed"):
            value = getattr(self, name)
            if value is not None:
                to_us(value, name=name)  # raises NaiveDatetimeError on a naive time
        return self

    # -- convenience -----------------------------------------------------------------
    @property
    def text(self) -> str:
        """The atom's text (``content.inline``)."""
        return self.content.inline

    @property
    def content_type(self) -> str | None:
        """The payload's content type (``"image/png"``...); ``application/json`` for a STRUCTURED atom;
        ``None`` for a plain text atom."""
        if self.content.payload_digest is not None:
            return self.content.content_type
        return "application/json" if self.content.data is not None else None

    @property
    def size_bytes(self) -> int | None:
        """The payload's size in bytes; ``None`` without a payload."""
        return self.content.size_bytes if self.content.payload_digest is not None else None

    @property
    def payload_digest(self) -> str | None:
        """SHA-256 (hex) of the payload's bytes; ``None`` without a payload."""
        return self.content.payload_digest

    @property
    def data(self) -> dict[str, Any] | None:
        """A STRUCTURED atom's JSON object (``None`` for other atoms)."""
        return self.content.data

    # -- the seed's names ------------------------------------------------------------
    @property
    def valid_time(self) -> datetime:
        """Seed name for :attr:`valid_from`."""
        return self.valid_from

    @valid_time.setter
    def valid_time(self, value: datetime) -> None:
        self.set_valid_time(value)

    @property
    def transaction_time(self) -> datetime | None:
        """Seed name for :attr:`tx_from`."""
        return self.tx_from

    @transaction_time.setter
    def transaction_time(self, value: datetime) -> None:
        self.set_transaction_time(value)

    @property
    def expiration_time(self) -> datetime | None:
        """Seed name for :attr:`valid_to`."""
        return self.valid_to

    @expiration_time.setter
    def expiration_time(self, value: datetime | None) -> None:
        if value is not None:
            to_us(value, name="expiration_time")
        self.valid_to = value

    def set_content(self, content: str, metadata: dict[str, Any] | None = None) -> None:
        """Set the text content and its metadata."""
        self.content = MemoryContent(content, metadata or {})

    def set_valid_time(self, valid_time: datetime) -> None:
        """Set when the fact starts to hold (``valid_from``)."""
        to_us(valid_time, name="valid_time")
        self.valid_from = valid_time

    def set_transaction_time(self, transaction_time: datetime) -> None:
        """Set the transaction time (the store overrides it when the atom is stored)."""
        to_us(transaction_time, name="transaction_time")
        self.tx_from = transaction_time

    def is_valid_at_time(self, query_time: datetime) -> bool:
        """Whether the fact holds at ``query_time``: ``valid_from <= t < valid_to``."""
        t = to_us(query_time, name="query_time")
        if t < to_us(self.valid_from):
            return False
        return self.valid_to is None or t < to_us(self.valid_to)

    def record_access(self) -> None:
        """Count one access (in memory; not a bitemporal change)."""
        self.access_count += 1
        self.last_accessed = _now()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the seed's layout, plus the bitemporal fields."""

        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d is not None else None

        return {
            "atom_id": self.atom_id,
            "modality": self.modality.value,
            "content": self.content.inline,
            "content_metadata": self.content.metadata,
            "content_type": self.content_type,
            "size_bytes": self.size_bytes,
            "payload_digest": self.payload_digest,
            "data": self.content.data,
            "tags": self.tags,
            "metadata": self.metadata,
            "subject": self.subject,
            "transaction_time": iso(self.tx_from),
            "valid_time": iso(self.valid_from),
            "expiration_time": iso(self.valid_to),
            "access_count": self.access_count,
            "last_accessed": iso(self.last_accessed),
            "creation_context": self.creation_context,
            "quality_score": self.quality_score,
            "version_id": self.version_id,
            "valid_from": iso(self.valid_from),
            "valid_to": iso(self.valid_to),
            "tx_from": iso(self.tx_from),
            "tx_to": iso(self.tx_to),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryAtom:
        """Inverse of :meth:`to_dict`."""

        def parse(v: Any) -> datetime | None:
            return datetime.fromisoformat(v) if v else None

        atom = cls(
            atom_id=data["atom_id"],
            modality=MemoryModality(data.get("modality", "text")),
            content=_content_from_dict(data),
            tags=data.get("tags") or {},
            metadata=data.get("metadata") or {},
            subject=data.get("subject", "default"),
            access_count=data.get("access_count", 0),
            last_accessed=parse(data.get("last_accessed")),
            creation_context=data.get("creation_context") or {},
            quality_score=data.get("quality_score", 1.0),
            version_id=data.get("version_id"),
            valid_from=parse(data.get("valid_from") or data.get("valid_time")) or _now(),
            valid_to=parse(data.get("valid_to") or data.get("expiration_time")),
            tx_from=parse(data.get("tx_from") or data.get("transaction_time")),
            tx_to=parse(data.get("tx_to")),
        )
        return atom


def _content_from_dict(data: dict[str, Any]) -> MemoryContent:
    extra: dict[str, Any] = {}
    if data.get("payload_digest"):
        extra = {"payload_digest": data["payload_digest"], "content_type": data.get("content_type") or
                 "application/octet-stream", "size_bytes": int(data.get("size_bytes") or 0), "encoding": "binary"}
    if data.get("data") is not None:
        extra["data"] = data["data"]
    return MemoryContent(data.get("content", ""), data.get("content_metadata") or {}, **extra)


class Hit(BaseModel):
    """One search result: the atom version and its score (higher is better).

    What ``score`` is depends on the search (``aether.retrieval.hybrid`` and
    ``aether.retrieval.ranking`` document each):

    - ``mode="dense"``, and any search with a vector query: the cosine similarity, in [-1, 1];
    - ``mode="keyword"``: the BM25 score (corpus statistics over every indexed version);
    - ``mode="hybrid"``, ``fusion="rrf"``: ``sum over the halves of 1 / (rrf_k + rank)``;
    - ``fusion="weighted"`` or ``"adaptive"`` (the default search): the convex combination of the
      halves' scores, each min-max scaled over the union of both candidate lists, in [0, 1]
      (adaptive: the dense weight set per query; under a point-in-time filter whose keyword
      ranking is exhausted, the keyword half scored as BM25 over the visible rows alone);
    - with a ``recency`` / ``importance`` blend (or a ``ranking`` preset): the blended score, in
      [0, 1]; with ``diversity`` (MMR) the hits are in MMR order, each keeping that score.
    """

    atom: MemoryAtom
    score: float

    @property
    def atom_id(self) -> str:
        """Shortcut for ``hit.atom.atom_id``."""
        return self.atom.atom_id


class BucketPlan(BaseModel):
    """How one bucket (or the whole table) was searched."""

    bucket: str
    rows: int
    selected: int
    strategy: str
    params: dict[str, Any] = Field(default_factory=dict)


class RankedHit(BaseModel):
    """One entry of a ranked list inside a plan (a half of a hybrid search)."""

    atom_id: str
    version_id: int
    rank: int
    score: float


class KeywordPlan(BaseModel):
    """How the keyword (BM25) half ran: query terms after analysis, filter strategy, hits."""

    terms: list[str] = Field(default_factory=list)
    strategy: str = "none"
    examined: int = 0
    rounds: int = 0
    hits: list[RankedHit] = Field(default_factory=list)


class FusedHit(RankedHit):
    """One returned hit of a hybrid search with both halves' view of it: its rank among each
    half's candidates (``None``: beyond ``depth``) and each half's score (cosine; BM25, 0 when no
    query term matches; ``None`` without a keyword half, for a vector query)."""

    dense_rank: int | None = None
    dense_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None


class FusionPlan(BaseModel):
    """How a hybrid search fused its dense and keyword halves.

    ``dense_weight`` is the weight asked for (for ``"adaptive"``, the base weight) and
    ``effective_dense_weight`` the one the first query used (``None`` for RRF).
    """

    method: str
    rrf_k: int
    dense_weight: float
    depth: int
    dense_hits: list[RankedHit] = Field(default_factory=list)
    keyword_hits: list[RankedHit] = Field(default_factory=list)
    effective_dense_weight: float | None = None
    hits: list[FusedHit] = Field(default_factory=list)


class SearchPlan(BaseModel):
    """What ``explain`` reports about a search."""

    valid_at: datetime | None = None
    valid_during: tuple[datetime | None, datetime | None] | None = None
    as_of: datetime | None = None
    tags: dict[str, Any] | None = None
    k: int
    mode: str = "dense"
    total_rows: int
    selected_rows: int
    buckets_total: int = 1
    buckets_pruned: int = 0
    buckets: list[BucketPlan] = Field(default_factory=list)
    keyword: KeywordPlan | None = None
    fusion: FusionPlan | None = None
    notes: list[str] = Field(default_factory=list)


_M = TypeVar("_M", bound=BaseModel)


def trusted_builder(cls: type[_M]) -> Callable[[frozenset[str], dict[str, Any]], _M]:
    """A constructor of ``cls`` from values the engine wrote and validated already (the read path).

    ``build(fields_set, values)``: ``values`` holds every field, in declaration order (the order
    ``model_dump`` keeps; only the count is checked, on every call), and
    ``fields_set`` the fields a validating constructor would record as set. The instance equals
    ``cls(**values)`` but skips validation, like ``model_construct``, and also skips its per-call
    field walk (in pydantic 2.14 it inspects each default factory's signature on every call: ~15 us
    an atom). Only for plain models (no aliases, extras, private attributes or post-init hooks);
    any other model gets ``model_construct``.
    """
    plain = (
        not cls.__pydantic_root_model__
        and cls.__pydantic_post_init__ is None
        and not cls.__private_attributes__
        and cls.model_config.get("extra") != "allow"
        and all(f.alias is None and f.validation_alias is None for f in cls.__pydantic_fields__.values())
    )
    nfields = len(cls.__pydantic_fields__)
    new = cls.__new__
    setattr_ = object.__setattr__
    # BaseModel's slots, set through their descriptors (no attribute lookup per call)
    set_fields = BaseModel.__dict__["__pydantic_fields_set__"].__set__
    set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
    set_private = BaseModel.__dict__["__pydantic_private__"].__set__

    def build(fields_set: frozenset[str], values: dict[str, Any]) -> _M:
        if not plain or len(values) != nfields:
            return cls.model_construct(set(fields_set), **values)
        m = new(cls)
        setattr_(m, "__dict__", values)
        set_fields(m, set(fields_set))
        set_extra(m, None)
        set_private(m, None)
        return m

    return build


class StoreStats(BaseModel):
    """Counts and sizes reported by ``stats``."""

    path: str | None
    model: str
    dim: int
    atoms_current: int
    atoms_total: int
    versions: int
    transactions: int
    last_commit: datetime | None
    segments: int
    wal_bytes: int
    disk_bytes: int
    encrypted: bool = False
    #: Rows the vector index scans exactly, not yet sealed into an ANN partition (all rows without one).
    tail_rows: int = 0
    #: Index builds (sealing the tail into runs, merging runs into bucket partitions) since open.
    seals: int = 0
    #: Seconds those builds took, in total.
    seal_seconds: float = 0.0
