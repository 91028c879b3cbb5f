"""aether: a bitemporal semantic memory engine for LLM agents.

>>> import aether
>>> mem = aether.open(embedder=aether.HashingEmbedder(dim=64))
>>> atom = mem.add("Alice lives in Paris", tags={"user": "alice"})
>>> mem.search("where does alice live?", k=1)[0].atom.content.inline
'Alice lives in Paris'
"""

from __future__ import annotations

from ._version import __version__
from .api import UNSET, Memory, View, open
from .client import AsyncRemoteMemory, RemoteMemory, RemoteView, connect, connect_async
from .embed import (
    Embedder,
    HashingEmbedder,
    PrecomputedEmbedder,
    SentenceTransformerEmbedder,
)
from .errors import (
    AetherError,
    AtomNotFoundError,
    ConfigError,
    CorruptionError,
    EmbeddingError,
    FormatVersionError,
    InvalidContentError,
    InvalidInputError,
    InvalidIntervalError,
    InvalidPayloadError,
    InvalidTagError,
    InvalidVectorError,
    KeyRequiredError,
    MissingDependencyError,
    ModelMismatchError,
    NaiveDatetimeError,
    NoPayloadError,
    PayloadFileError,
    ReadOnlyError,
    SecurityError,
    StateConflictError,
    StateTamperedError,
    StorageIOError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    TamperedError,
    WrongKeyError,
)
from .models import BucketPlan, Hit, MemoryAtom, MemoryContent, MemoryModality, SearchPlan, StoreStats
from .security.verify import VerifyReport, verify
from .seed import BitemporalMemoryStore, MemoryQuery, StorageResult
from .state import (
    ChainReport,
    ConsciousnessLevel,
    ConsciousnessState,
    PersistenceResult,
    SnapshotInfo,
    StatePersistenceManager,
    ValidationResult,
)

__all__ = [
    "UNSET",
    "AetherError",
    "AsyncRemoteMemory",
    "AtomNotFoundError",
    "BitemporalMemoryStore",
    "BucketPlan",
    "ChainReport",
    "ConfigError",
    "ConsciousnessLevel",
    "ConsciousnessState",
    "CorruptionError",
    "Embedder",
    "EmbeddingError",
    "FormatVersionError",
    "HashingEmbedder",
    "Hit",
    "InvalidContentError",
    "InvalidInputError",
    "InvalidIntervalError",
    "InvalidPayloadError",
    "InvalidTagError",
    "InvalidVectorError",
    "KeyRequiredError",
    "Memory",
    "MemoryAtom",
    "MemoryContent",
    "MemoryModality",
    "MemoryQuery",
    "MissingDependencyError",
    "ModelMismatchError",
    "NaiveDatetimeError",
    "NoPayloadError",
    "PayloadFileError",
    "PersistenceResult",
    "PrecomputedEmbedder",
    "ReadOnlyError",
    "RemoteMemory",
    "RemoteView",
    "SearchPlan",
    "SecurityError",
    "SentenceTransformerEmbedder",
    "SnapshotInfo",
    "StateConflictError",
    "StatePersistenceManager",
    "StateTamperedError",
    "StorageIOError",
    "StorageResult",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreStats",
    "TamperedError",
    "ValidationResult",
    "VerifyReport",
    "View",
    "WrongKeyError",
    "__version__",
    "connect",
    "connect_async",
    "open",
    "verify",
]
