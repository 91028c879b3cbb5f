""":class:`StatePersistenceManager`: per-agent, hash-chained, optionally encrypted snapshot chains.

Seed-compatible methods are async (``persist_consciousness_state``, ``restore_consciousness_state``)
and run the file work in a worker thread, so they never block the event loop; they report
failure the seed's way (``PersistenceResult(success=False)``, ``None``) and log why. The sync
methods (``persist``, ``restore(strict=True)``, ``verify``) raise typed errors instead. An
invalid argument (an empty agent id, a naive ``as_of``) raises ``InvalidInputError`` everywhere.

What each check covers:

* ``restore`` checks the snapshot it returns: file checksum, authentication (with a key),
  continuity hash, and its link to the previous file (``prev_digest``, ``previous_state_id``).
* ``verify`` checks every snapshot of the chain that way, plus contiguous sequence numbers
  and increasing persist times. A flipped byte anywhere in any snapshot file is reported.
* Without a key the checksum is unkeyed: it catches corruption and edits, but someone who can
  write the files can also recompute it. With a key the header and body are authenticated.
  Deleting the newest files (a rollback) is not detectable from the files alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .._time import TimeLike, now_us, to_us
from ..errors import (
    AetherError,
    CorruptionError,
    InvalidInputError,
    KeyRequiredError,
    StateConflictError,
    StateTamperedError,
    StorageIOError,
    TamperedError,
    WrongKeyError,
)
from ..storage import manifest
from ..storage.codec import Codec
from . import _seal
from .chain import (
    FORMAT,
    Backend,
    DirBackend,
    MemoryBackend,
    SnapshotInfo,
    aad_for,
    agent_dirname,
    canonical,
    decode,
    encode,
)
from .consciousness import MAX_AGENT_ID, ConsciousnessState

logger = logging.getLogger("aether.state")


@dataclass
class PersistenceResult:
    """Outcome of ``persist_consciousness_state`` (the seed's fields, plus the chain position)."""

    success: bool
    state_id: str | None = None
    storage_timestamp: datetime | None = None
    error: str | None = None
    seq: int | None = None
    persisted_at: datetime | None = None


@dataclass
class ChainReport:
    """Outcome of :meth:`StatePersistenceManager.verify`."""

    agent_id: str
    length: int
    ok: bool
    problems: list[str] = field(default_factory=list)
    head_state_id: str | None = None
    #: Snapshots whose content could not be checked (encrypted and no key given).
    unchecked: int = 0


def _check_agent(agent_id: Any) -> str:
    if not isinstance(agent_id, str) or not agent_id or len(agent_id) > MAX_AGENT_ID:
        raise InvalidInputError(f"agent_id must be a non-empty str of at most {MAX_AGENT_ID} characters")
    if len(agent_dirname(agent_id)) > 250:  # it names a directory: keep within filesystem name limits
        raise InvalidInputError("agent_id is too long once percent-encoded for the filesystem")
    return agent_id


def _store_is_encrypted(path: Path) -> bool:
    """Whether ``path`` holds an aether store whose manifest records encryption."""
    try:
        body = manifest.load(path)
    except AetherError:
        return False  # no store there (a state-only directory), or one another command will report
    return (body.get("encryption") or {}).get("mode", "none") != "none"


class StatePersistenceManager:
    """Persists and restores agents' :class:`ConsciousnessState` snapshot chains.

    Parameters
    ----------
    config
        ``None`` keeps snapshots in memory. A store directory (or an object with a ``path``,
        such as :class:`aether.Memory`) keeps them durably under ``<path>/state/``; the
        directory may be shared with a memory store. A mapping may give ``path``, ``key``,
        ``codec`` and ``clock``.
    key
        32 bytes: snapshots are zstd-compressed, then AES-256-GCM-encrypted.
    codec
        Instead of ``key``: any :class:`aether.storage.codec.Codec` (the security layer's). Given
        an encrypted :class:`aether.Memory` and neither, its store codec is used.
    clock
        Microseconds since the epoch (tests pass a fake clock); persist times never go backwards.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Any | None = None,
        *,
        key: bytes | None = None,
        codec: Codec | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if isinstance(config, Mapping):  # {"path": ..., "key": ...}, like BitemporalMemoryStore's mapping
            unknown = set(config) - {"path", "key", "codec", "clock"}
            if unknown:
                raise InvalidInputError(f"unknown state config keys {sorted(unknown)}")
            key = config.get("key", key)
            codec = config.get("codec", codec)
            clock = config.get("clock", clock)
            config = config.get("path")
        path: Any = config
        if config is not None and not isinstance(config, str | os.PathLike):
            path = getattr(config, "path", None)  # a Memory / BitemporalMemoryStore: share its directory
            if path is None and not hasattr(config, "path"):
                raise InvalidInputError("config must be a store directory, a Memory, or None")
            # An encrypted store seals its snapshots with its own codec (the store key), unless told otherwise.
            memory = getattr(config, "memory", config)
            store_codec = getattr(getattr(memory, "_engine", None), "codec", None)
            if key is None and codec is None and getattr(store_codec, "encrypted", False):
                codec = store_codec
        self.path: Path | None = Path(path) if path is not None else None
        self._backend: Backend = DirBackend(self.path) if self.path is not None else MemoryBackend()
        self._codec = _seal.make_codec(key, codec)
        self._store_encrypted = self.path is not None and _store_is_encrypted(self.path)
        self._clock = clock or now_us
        self._lock = threading.RLock()
        self._cache: dict[str, list[tuple[int, SnapshotInfo]]] = {}

    @property
    def encrypted(self) -> bool:
        """Whether new snapshots are encrypted."""
        return bool(self._codec.encrypted)

    # ------------------------------------------------------------------ chain index
    def _info(self, agent_id: str, seq: int) -> SnapshotInfo:
        where = self._backend.describe(agent_id, seq)
        try:
            data = self._backend.read(agent_id, seq)
        except (KeyError, StorageIOError) as exc:
            return SnapshotInfo.broken(agent_id, seq, 0, f"{where}: unreadable ({exc})")
        try:
            info = SnapshotInfo.from_raw(agent_id, seq, decode(data, where), len(data))
        except StateTamperedError as exc:
            return SnapshotInfo.broken(agent_id, seq, len(data), str(exc))
        return info

    def _chain(self, agent_id: str) -> list[SnapshotInfo]:
        """The agent's snapshots in order, from their headers (cached; contents are re-checked on restore)."""
        with self._lock:
            seqs = self._backend.seqs(agent_id)
            cached = self._cache.get(agent_id, [])
            if [s for s, _ in cached] != seqs[: len(cached)]:
                cached = []
            for s in seqs[len(cached):]:
                cached.append((s, self._info(agent_id, s)))
            # Cache only the prefix before the first broken entry, so a repaired file reads as repaired.
            good: list[tuple[int, SnapshotInfo]] = []
            for entry in cached:
                if not entry[1].ok:
                    break
                good.append(entry)
            self._cache[agent_id] = good
            return [i for _, i in cached]

    def list_agents(self) -> list[str]:
        """Agent ids that have at least one snapshot."""
        return self._backend.agents()

    def list_states(self, agent_id: str) -> list[SnapshotInfo]:
        """The agent's chain, oldest first (from the plaintext headers; no key needed)."""
        return self._chain(_check_agent(agent_id))

    # ------------------------------------------------------------------ persist
    def persist(self, state: ConsciousnessState) -> PersistenceResult:
        """Append ``state`` to its agent's chain (sync; raises on failure).

        If ``state.previous_state_id`` is ``None`` it is set to the chain head; the continuity hash
        is (re)computed, as in the seed. The state object is updated in place.

        Raises
        ------
        InvalidInputError
            If the state does not validate.
        StateConflictError
            If the state id is already in the chain, or ``previous_state_id`` is not the head.
        StorageIOError
            If the file cannot be written.
        """
        if not isinstance(state, ConsciousnessState):
            raise InvalidInputError("persist takes a ConsciousnessState")
        agent_id = _check_agent(state.agent_id)
        if self._store_encrypted and not self._codec.encrypted:
            # Never write a plaintext snapshot into an encrypted store.
            raise KeyRequiredError(
                f"the store at {self.path} is encrypted: pass StatePersistenceManager(aether.open(path, key=...))"
            )
        with self._lock, self._backend.agent_lock(agent_id):
            chain = self._chain(agent_id)
            head = chain[-1] if chain else None
            if head is not None and not head.ok:
                raise StateTamperedError(f"cannot extend the chain of {agent_id!r}: {head.problem}")
            if any(i.state_id == state.state_id for i in chain):
                raise StateConflictError(
                    f"state {state.state_id} is already in the chain of {agent_id!r}; "
                    "persist a new state (state.successor()) instead"
                )
            if head is not None:
                if state.previous_state_id is None:
                    state.previous_state_id = head.state_id
                elif state.previous_state_id != head.state_id:
                    raise StateConflictError(
                        f"state {state.state_id} continues {state.previous_state_id}, "
                        f"but the head of {agent_id!r} is {head.state_id} (a fork)"
                    )
            state.continuity_hash = state.calculate_continuity_hash()
            result = state.validate()
            if not result.is_valid:
                raise InvalidInputError(f"State validation failed: {result.errors}")
            seq = head.seq + 1 if head is not None else 1
            persisted = self._clock()
            if head is not None and head.persisted_us is not None:
                persisted = max(persisted, head.persisted_us + 1)
            header = canonical({
                "format": FORMAT,
                "agent_id": agent_id,
                "state_id": state.state_id,
                "seq": seq,
                "previous_state_id": state.previous_state_id,
                "prev_digest": head.digest if head is not None else None,
                "timestamp_us": to_us(state.timestamp, name="timestamp"),
                "persisted_us": persisted,
                "continuity_hash": state.continuity_hash,
                "encrypted": bool(self._codec.encrypted),
                "key_id": _seal.codec_key_id(self._codec),
                "compression": "zstd",
            })
            body = _seal.seal(state.serialize().encode("utf-8"), aad_for(agent_id, state.state_id, header),
                              self._codec)
            self._backend.create(agent_id, seq, encode(header, body))
            info = self._chain(agent_id)[-1]
        return PersistenceResult(
            success=True, state_id=state.state_id, storage_timestamp=state.timestamp,
            seq=seq, persisted_at=info.persisted_at,
        )

    async def persist_consciousness_state(self, consciousness_state: ConsciousnessState) -> PersistenceResult:
        """Seed API: persist without blocking the event loop; failures come back as ``success=False``."""
        try:
            return await asyncio.to_thread(self.persist, consciousness_state)
        except AetherError as exc:
            logger.error("State persistence failed: %s: %s", type(exc).__name__, exc)
            return PersistenceResult(success=False, error=f"State persistence failed: {exc}")

    # ------------------------------------------------------------------ restore
    def _load(self, agent_id: str, info: SnapshotInfo, prev: SnapshotInfo | None) -> ConsciousnessState:
        """Read, check and decode one snapshot (see the module docstring for what is checked)."""
        where = self._backend.describe(agent_id, info.seq)
        if not info.ok:
            raise StateTamperedError(info.problem or where)
        try:
            raw = decode(self._backend.read(agent_id, info.seq), where)
        except (KeyError, StorageIOError) as exc:
            raise StateTamperedError(f"{where}: unreadable ({exc})") from None
        h = raw.header
        if h.get("agent_id") != agent_id or h.get("seq") != info.seq:
            raise StateTamperedError(f"{where}: header names agent {h.get('agent_id')!r} seq {h.get('seq')}")
        if prev is not None:
            # Re-read the predecessor: its digest must still be the one this snapshot was chained to.
            pwhere = self._backend.describe(agent_id, prev.seq)
            try:
                pdigest = decode(self._backend.read(agent_id, prev.seq), pwhere).digest.hex()
            except (KeyError, StorageIOError) as exc:
                raise StateTamperedError(f"{pwhere}: unreadable ({exc})") from None
            if h.get("prev_digest") != pdigest:
                raise StateTamperedError(f"{where}: does not chain to the previous snapshot {pwhere}")
        elif h.get("prev_digest") is not None:
            raise StateTamperedError(f"{where}: chained to a snapshot that is missing")
        encrypted = bool(h.get("encrypted"))
        if encrypted and not self._codec.encrypted:
            raise KeyRequiredError(f"{where} is encrypted; give key=")
        if not encrypted and self._codec.encrypted:
            raise StateTamperedError(f"{where}: plaintext snapshot in an encrypted chain")
        plain = _seal.unseal(raw.body, aad_for(agent_id, str(h.get("state_id")), raw.header_bytes),
                             self._codec, expect_key_id=h.get("key_id"))
        try:
            state = ConsciousnessState.deserialize(plain.decode("utf-8"))
        except (InvalidInputError, UnicodeDecodeError) as exc:
            raise StateTamperedError(f"{where}: body does not decode: {exc}") from None
        if (state.state_id, state.agent_id, state.previous_state_id, state.continuity_hash) != (
            h.get("state_id"), agent_id, h.get("previous_state_id"), h.get("continuity_hash")
        ):
            raise StateTamperedError(f"{where}: body and header disagree")
        if prev is not None and state.previous_state_id != prev.state_id:
            raise StateTamperedError(f"{where}: previous_state_id is not the previous snapshot's state")
        if state.continuity_hash != state.calculate_continuity_hash():
            raise StateTamperedError(f"{where}: continuity hash mismatch")
        check = state.validate()
        if not check.is_valid:
            raise StateTamperedError(f"{where}: restored state does not validate: {check.errors}")
        return state

    def restore(
        self, agent_id: str, *, as_of: TimeLike | None = None, strict: bool = False
    ) -> ConsciousnessState | None:
        """The agent's latest state, or the latest persisted at or before ``as_of``; ``None`` if there is none.

        Parameters
        ----------
        as_of
            A persist (transaction) time: restore what the chain held then.
        strict
            Raise instead of logging and returning ``None`` when the snapshot fails its checks.

        Raises
        ------
        StateTamperedError
            (strict) The snapshot or its link to the previous one does not verify.
        KeyRequiredError, WrongKeyError
            (strict) The snapshot is encrypted and no key, or another key, was given.
        """
        agent_id = _check_agent(agent_id)
        t = None if as_of is None else to_us(as_of, name="as_of")
        chain = self._chain(agent_id)
        idx = len(chain) - 1
        if t is not None:
            # Persist times increase along the chain, so the answer sits just before the first later one.
            later = next((i for i, s in enumerate(chain) if s.persisted_us is not None and s.persisted_us > t),
                         len(chain))
            idx = later - 1
        if idx < 0:
            return None
        try:
            return self._load(agent_id, chain[idx], chain[idx - 1] if idx > 0 else None)
        # TamperedError / CorruptionError: what a swapped-in codec (the security layer's) may raise.
        except (TamperedError, CorruptionError, KeyRequiredError, WrongKeyError) as exc:
            if strict:
                raise
            logger.error("State restoration failed for agent %r: %s: %s", agent_id, type(exc).__name__, exc)
            return None

    async def restore_consciousness_state(
        self, agent_id: str, *, as_of: TimeLike | None = None, strict: bool = False
    ) -> ConsciousnessState | None:
        """Seed API: :meth:`restore` without blocking the event loop."""
        return await asyncio.to_thread(self.restore, agent_id, as_of=as_of, strict=strict)

    async def restore_consciousness_state_strict(
        self, agent_id: str, *, as_of: TimeLike | None = None
    ) -> ConsciousnessState | None:
        """Like :meth:`restore_consciousness_state` but raises a typed error on a failed check."""
        return await self.restore_consciousness_state(agent_id, as_of=as_of, strict=True)

    # ------------------------------------------------------------------ verify
    def verify(self, agent_id: str) -> ChainReport:
        """Check every snapshot of the agent's chain and every link between them."""
        agent_id = _check_agent(agent_id)
        with self._lock:
            self._cache.pop(agent_id, None)  # re-read every header from the files
            chain = self._chain(agent_id)
        problems: list[str] = []
        unchecked = 0
        prev: SnapshotInfo | None = None
        for i, info in enumerate(chain):
            where = self._backend.describe(agent_id, info.seq)
            if info.seq != i + 1:
                problems.append(f"{where}: expected sequence number {i + 1} (a snapshot is missing)")
            if info.ok and prev is not None and prev.ok and (
                info.persisted_us is None or prev.persisted_us is None or info.persisted_us <= prev.persisted_us
            ):
                problems.append(f"{where}: persist time does not increase")
            try:
                self._load(agent_id, info, prev)
            except KeyRequiredError:
                unchecked += 1
            except (TamperedError, CorruptionError, WrongKeyError) as exc:
                problems.append(str(exc))
            prev = info
        problems = list(dict.fromkeys(problems))  # a broken file is also reported by its successor's link
        head = chain[-1].state_id if chain and chain[-1].ok else None
        return ChainReport(agent_id, len(chain), not problems, problems, head, unchecked)

    def close(self) -> None:
        """Nothing to release (files are written and closed per snapshot); for symmetry with stores."""

    def __enter__(self) -> StatePersistenceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "in-memory"
        return f"<aether.StatePersistenceManager {where} encrypted={self.encrypted}>"
