"""Snapshot files and where they live: the on-disk format and the two backends (memory, directory).

One snapshot is one immutable file ``state/a-<agent>/<seq:010d>.snap`` (``<agent>`` is the
percent-encoded agent id), written atomically and never rewritten::

    b"AETHSNP1"                  magic and format version
    u32 big-endian               header length
    header                       canonical JSON, plaintext (listing needs no key)
    u64 big-endian               body length
    body                         zstd(serialized state), AES-256-GCM-sealed when a key is set
    32 bytes                     BLAKE2b-256 of everything before it

The header names the agent, the state, its sequence number, its persist time and the
digest of the previous snapshot file, so the files form a hash chain; with a key the
header is also authenticated (it is part of the AES-GCM associated data).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

from .._time import from_us_strict
from ..errors import StateConflictError, StateTamperedError
from ..storage._fs import io_errors, write_atomic

MAGIC = b"AETHSNP1"
FORMAT = 1
_DIGEST = 32
_NAME = re.compile(r"(\d{10})\.snap")


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def aad_for(agent_id: str, state_id: str, header: bytes) -> bytes:
    """Associated data: binds a sealed body to its agent, its state id and its header."""
    return b"aether-state/v1\x00" + agent_id.encode() + b"\x00" + state_id.encode() + b"\x00" + header


def encode(header: bytes, body: bytes) -> bytes:
    """One snapshot file from its header and sealed body."""
    out = MAGIC + struct.pack(">I", len(header)) + header + struct.pack(">Q", len(body)) + body
    return out + digest(out)


@dataclass(frozen=True)
class RawSnapshot:
    """A decoded file: its header (parsed and raw), sealed body and digest."""

    header: dict[str, Any]
    header_bytes: bytes
    body: bytes
    digest: bytes


def decode(data: bytes, where: str) -> RawSnapshot:
    """Parse and checksum one snapshot file.

    Raises
    ------
    StateTamperedError
        If the magic, a length or the trailing digest is wrong, or the header is not JSON.
    """
    if len(data) < len(MAGIC) + 4 + 8 + _DIGEST or not data.startswith(MAGIC):
        raise StateTamperedError(f"{where}: not a snapshot file (bad magic or truncated)")
    if digest(data[:-_DIGEST]) != data[-_DIGEST:]:
        raise StateTamperedError(f"{where}: checksum mismatch (the file was modified or corrupted)")
    pos = len(MAGIC)
    (hlen,) = struct.unpack_from(">I", data, pos)
    pos += 4
    header_bytes = data[pos : pos + hlen]
    pos += hlen
    if pos + 8 > len(data) - _DIGEST:
        raise StateTamperedError(f"{where}: header length out of range")
    (blen,) = struct.unpack_from(">Q", data, pos)
    pos += 8
    if pos + blen != len(data) - _DIGEST:
        raise StateTamperedError(f"{where}: body length out of range")
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise StateTamperedError(f"{where}: header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StateTamperedError(f"{where}: unknown snapshot header format")
    return RawSnapshot(header, header_bytes, data[pos : pos + blen], data[-_DIGEST:])


@dataclass(frozen=True)
class SnapshotInfo:
    """One entry of an agent's chain, from its plaintext header (no key needed).

    ``problem`` is set (and the other fields may be placeholders) when the file failed its checksum.
    """

    agent_id: str
    seq: int
    state_id: str
    previous_state_id: str | None
    timestamp: datetime | None
    persisted_at: datetime | None
    persisted_us: int | None
    continuity_hash: str
    encrypted: bool
    size_bytes: int
    digest: str
    prev_digest: str | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file passed its checksum."""
        return self.problem is None

    @classmethod
    def from_raw(cls, agent_id: str, seq: int, raw: RawSnapshot, size: int) -> SnapshotInfo:
        h = raw.header
        if h.get("agent_id") != agent_id or h.get("seq") != seq:
            # A file copied or renamed into another chain or position.
            return cls.broken(agent_id, seq, size, f"snapshot {seq} of agent {agent_id!r}: header names agent "
                              f"{h.get('agent_id')!r} seq {h.get('seq')!r} (moved or copied file)")
        try:
            return cls(
                agent_id=str(h["agent_id"]),
                seq=int(h["seq"]),
                state_id=str(h["state_id"]),
                previous_state_id=h.get("previous_state_id"),
                timestamp=from_us_strict(int(h["timestamp_us"])),
                persisted_at=from_us_strict(int(h["persisted_us"])),
                persisted_us=int(h["persisted_us"]),
                continuity_hash=str(h["continuity_hash"]),
                encrypted=bool(h["encrypted"]),
                size_bytes=size,
                digest=raw.digest.hex(),
                prev_digest=h.get("prev_digest"),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise StateTamperedError(f"snapshot {seq} of agent {agent_id!r}: bad header ({exc})") from None

    @classmethod
    def broken(cls, agent_id: str, seq: int, size: int, problem: str) -> SnapshotInfo:
        return cls(agent_id, seq, "?", None, None, None, None, "", False, size, "", None, problem)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the CLI's ``--json``)."""

        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d is not None else None

        return {
            "agent_id": self.agent_id,
            "seq": self.seq,
            "state_id": self.state_id,
            "previous_state_id": self.previous_state_id,
            "timestamp": iso(self.timestamp),
            "persisted_at": iso(self.persisted_at),
            "continuity_hash": self.continuity_hash,
            "encrypted": self.encrypted,
            "size_bytes": self.size_bytes,
            "digest": self.digest,
            "prev_digest": self.prev_digest,
            "problem": self.problem,
        }


class Backend(Protocol):
    """Where snapshot files live."""

    def agents(self) -> list[str]: ...

    def seqs(self, agent_id: str) -> list[int]: ...

    def read(self, agent_id: str, seq: int) -> bytes: ...

    def create(self, agent_id: str, seq: int, data: bytes) -> None: ...

    def agent_lock(self, agent_id: str) -> contextlib.AbstractContextManager[None]: ...

    def describe(self, agent_id: str, seq: int) -> str: ...


class MemoryBackend:
    """Snapshots held in a dict (``StatePersistenceManager()`` with no path): same bytes as on disk."""

    def __init__(self) -> None:
        self.files: dict[str, dict[int, bytes]] = {}

    def agents(self) -> list[str]:
        return sorted(a for a, f in self.files.items() if f)

    def seqs(self, agent_id: str) -> list[int]:
        return sorted(self.files.get(agent_id, {}))

    def read(self, agent_id: str, seq: int) -> bytes:
        return self.files[agent_id][seq]

    def create(self, agent_id: str, seq: int, data: bytes) -> None:
        chain = self.files.setdefault(agent_id, {})
        if seq in chain:
            raise StateConflictError(f"snapshot {seq} of agent {agent_id!r} already exists")
        chain[seq] = bytes(data)

    @contextlib.contextmanager
    def agent_lock(self, agent_id: str) -> Iterator[None]:
        yield

    def describe(self, agent_id: str, seq: int) -> str:
        return f"agent {agent_id!r} snapshot {seq} (in memory)"


def agent_dirname(agent_id: str) -> str:
    """A safe, reversible directory name (the ``a-`` prefix keeps ``.`` and ``..`` harmless)."""
    return "a-" + quote(agent_id, safe="")


class DirBackend:
    """Snapshots as files under ``<store>/state/``; a per-agent ``flock`` serialises writers across processes."""

    def __init__(self, root: Path) -> None:
        self.root = root / "state"
        self._tlock = threading.Lock()

    def _dir(self, agent_id: str) -> Path:
        return self.root / agent_dirname(agent_id)

    def path(self, agent_id: str, seq: int) -> Path:
        return self._dir(agent_id) / f"{seq:010d}.snap"

    def agents(self) -> list[str]:
        if not self.root.is_dir():
            return []
        with io_errors("list", self.root):
            names = [p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("a-")]
        return sorted(unquote(n[2:]) for n in names if any(self._dir(unquote(n[2:])).glob("*.snap")))

    def seqs(self, agent_id: str) -> list[int]:
        d = self._dir(agent_id)
        if not d.is_dir():
            return []
        with io_errors("list", d):
            names = os.listdir(d)
        return sorted(int(m.group(1)) for n in names if (m := _NAME.fullmatch(n)))

    def read(self, agent_id: str, seq: int) -> bytes:
        p = self.path(agent_id, seq)
        with io_errors("read", p):
            return p.read_bytes()

    def create(self, agent_id: str, seq: int, data: bytes) -> None:
        p = self.path(agent_id, seq)
        if p.exists():
            raise StateConflictError(f"{p} already exists (another writer extended the chain)")
        write_atomic(p, data)

    @contextlib.contextmanager
    def agent_lock(self, agent_id: str) -> Iterator[None]:
        d = self._dir(agent_id)
        with io_errors("create", d):
            d.mkdir(parents=True, exist_ok=True)
        lock = d / "LOCK"
        with self._tlock:
            with io_errors("lock", lock):
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # held only for one append: blocking is fine
                yield
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def describe(self, agent_id: str, seq: int) -> str:
        return str(self.path(agent_id, seq))
