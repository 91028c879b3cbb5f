"""Agent state persistence: the seed's ``ConsciousnessState`` in per-agent, hash-chained snapshot chains.

* ``consciousness`` — the state, its level, validation and continuity hash (pure, no I/O).
* ``chain`` — the snapshot file format and where files live (memory or ``<store>/state/``).
* ``_seal`` — the crypto pair (zstd + AES-256-GCM), swappable for the security layer's codec.
* ``manager`` — :class:`StatePersistenceManager`: persist, restore (latest / as of), list, verify.
"""

from __future__ import annotations

from .chain import SnapshotInfo
from .consciousness import ConsciousnessLevel, ConsciousnessState, ValidationResult
from .manager import ChainReport, PersistenceResult, StatePersistenceManager

__all__ = [
    "ChainReport",
    "ConsciousnessLevel",
    "ConsciousnessState",
    "PersistenceResult",
    "SnapshotInfo",
    "StatePersistenceManager",
    "ValidationResult",
]
