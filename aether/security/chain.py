"""The hash-chained transaction log (``log/``): tamper evidence over every committed transaction.

One JSON line per committed transaction, in files ``log/<first-seq>.log`` (a new file after each
checkpoint)::

    {"seq": 7, "tx": 1735689600000123, "kind": "tx", "payload": <hex>, "prev": <hex>, "hash": <hex>}

* ``payload`` is the BLAKE2b-256 of the WAL frame payload as written (ciphertext when encrypted),
  so the log is checkable without a key while the WAL file still exists;
* ``prev`` is the previous entry's ``hash`` (64 zeros for the first entry of a store);
* ``hash`` is BLAKE2b-256 (personalised ``aether-log-v1``) of the canonical JSON of the other fields.

An erasure's entry is its content-free tombstone: ``kind: "erase"``, the scope (``subject`` or
``atom``) and how many versions and keys it removed; never an id, a name or content.

At each checkpoint the head (``seq``, ``hash``) is fsynced and recorded in the manifest, which
anchors the older files. Between checkpoints entries are written (not fsynced) after the WAL
record is durable; entries lost in a power cut are rebuilt from the WAL on the next open.
In an encrypted store the hash is keyed (BLAKE2b MAC with a key derived from the store key, which
master-key rotation does not change): without the key nobody can forge a consistent log. In a plain
store it is unkeyed: it detects damage and edits, but a writer able to rewrite the whole log and
the manifest could forge a consistent one, so publish the head (``aether verify`` prints it).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TamperedError
from ..storage import _fs
from ..storage._fs import io_errors

GENESIS = "0" * 64
_FIELDS = ("seq", "tx", "kind", "payload", "prev")


def payload_digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=32).hexdigest()


def entry_hash(entry: dict[str, Any], mac_key: bytes | None = None) -> str:
    """BLAKE2b-256 of the entry's other fields; keyed (a MAC) in an encrypted store."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(canon, digest_size=32, key=mac_key or b"", person=b"aether-log-v1").hexdigest()


@dataclass
class LogProblem:
    file: str
    offset: int
    message: str


def read_entries(
    path: Path, mac_key: bytes | None = None, *, check_hashes: bool = True
) -> tuple[list[tuple[int, dict[str, Any]]], list[LogProblem], int | None]:
    """Parse one log file: ``(offset, entry)`` pairs, problems, and the offset of a torn last line.

    ``check_hashes=False`` checks structure only (an encrypted store's keyed log, verified without key).
    """
    data = path.read_bytes()
    out: list[tuple[int, dict[str, Any]]] = []
    problems: list[LogProblem] = []
    pos = 0
    torn: int | None = None
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            torn = pos  # a crash while the last line was written
            break
        line = data[pos:nl]
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or any(k not in entry for k in (*_FIELDS, "hash")):
                raise ValueError("missing fields")
            if check_hashes and entry_hash(entry, mac_key) != entry["hash"]:
                problems.append(
                    LogProblem(str(path), pos, "log entry hash mismatch (entry edited or damaged)")
                )
            out.append((pos, entry))
        except ValueError as exc:
            problems.append(LogProblem(str(path), pos, f"unreadable log entry: {exc}"))
        pos = nl + 1
    return out, problems, torn


def check_links(
    entries: list[tuple[str, int, dict[str, Any]]], head: dict[str, Any] | None
) -> list[LogProblem]:
    """Check sequence continuity and ``prev`` links of entries (in order, over all files)."""
    problems: list[LogProblem] = []
    prev: dict[str, Any] | None = None
    for file, off, e in entries:
        if prev is not None:
            if e["seq"] != prev["seq"] + 1:
                problems.append(LogProblem(file, off, f"log sequence gap: {prev['seq']} then {e['seq']}"))
            if e["prev"] != prev["hash"]:
                problems.append(
                    LogProblem(file, off, f"log entry {e['seq']} does not link to entry {prev['seq']}")
                )
        elif e["prev"] != GENESIS and head is None:
            problems.append(LogProblem(file, off, "first log entry does not start the chain"))
        prev = e
    if head is not None and head.get("seq", 0) > 0:
        match = [e for _, _, e in entries if e["seq"] == head["seq"]]
        if not match or match[0]["hash"] != head.get("hash"):
            problems.append(
                LogProblem("MANIFEST.json", 0, f"manifest log head (seq {head['seq']}) is not in the log")
            )
    return problems


class ChainLog:
    """Appends entries for the engine (under its write lock) and checks the newest file on open."""

    def __init__(self, directory: Path, mac_key: bytes | None = None) -> None:
        self.dir = directory
        self.mac_key = mac_key
        self.head_seq = 0
        self.head_hash = GENESIS
        self._fh: Any = None
        self._path: Path | None = None
        #: Files up to this first-seq were closed by a checkpoint; later entries start a new file.
        self._sealed_upto = -1

    def files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)

    def open(self, manifest_head: dict[str, Any] | None, *, repair: bool) -> None:
        """Find the head; verify the newest file and its link to the manifest's head.

        Raises
        ------
        TamperedError
            An entry of the newest file is damaged or does not link.
        """
        if manifest_head:
            self.head_seq, self.head_hash = int(manifest_head["seq"]), str(manifest_head["hash"])
        files = self.files()
        if not files:
            return
        newest = files[-1]
        with io_errors("read", newest):
            entries, problems, torn = read_entries(newest, self.mac_key)
        if torn is not None and repair:
            with io_errors("truncate", newest), open(newest, "r+b") as fh:
                fh.truncate(torn)
        flat = [(str(newest), off, e) for off, e in entries]
        if (
            flat
            and manifest_head
            and flat[0][2]["seq"] == self.head_seq + 1
            and flat[0][2]["prev"] != self.head_hash
        ):
            problems.append(LogProblem(str(newest), 0, "log does not link to the manifest's recorded head"))
        problems += [p for p in check_links(flat, None) if "start the chain" not in p.message]
        if problems:
            p = problems[0]
            raise TamperedError(f"hash-chained log: {p.message} [{p.file} @ offset {p.offset}]")
        if entries:
            last = entries[-1][1]
            if last["seq"] >= self.head_seq:
                self.head_seq, self.head_hash = int(last["seq"]), str(last["hash"])

    def append(
        self, seq: int, tx: int, kind: str, payload: bytes, extra: dict[str, Any] | None = None, *,
        digest: str | None = None,
    ) -> None:
        """Record one committed transaction (after its WAL record is durable); ``digest``, when
        given, is ``payload_digest(payload)`` computed already."""
        if seq <= self.head_seq:
            return  # already recorded (replayed on open)
        entry: dict[str, Any] = {
            "seq": seq,
            "tx": tx,
            "kind": kind,
            "payload": payload_digest(payload) if digest is None else digest,
            "prev": self.head_hash,
        }
        if extra:
            entry.update(extra)
        entry["hash"] = entry_hash(entry, self.mac_key)
        if self._fh is None:
            with io_errors("mkdir", self.dir):
                self.dir.mkdir(parents=True, exist_ok=True)
            files = self.files()
            self._path = files[-1] if files and not self._sealed(files[-1]) else self.dir / f"{seq:020d}.log"
            with io_errors("open", self._path):
                self._fh = open(self._path, "ab")
        with io_errors("log append", self._path or self.dir):
            self._fh.write(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n")
            self._fh.flush()
        self.head_seq, self.head_hash = seq, entry["hash"]

    def _sealed(self, path: Path) -> bool:
        # Files before the last checkpoint are closed; only the one started after it is continued.
        return self._sealed_upto >= int(path.stem)

    def sync(self) -> dict[str, Any]:
        """fsync and close the current file (a checkpoint is coming); returns the head for the manifest."""
        if self._fh is not None:
            with io_errors("fsync", self._path or self.dir):
                self._fh.flush()
                _fs.fsync_fd(self._fh.fileno())
                self._fh.close()
            self._fh = None
            if self._path is not None:
                self._sealed_upto = int(self._path.stem)
                _fs.fsync_dir(self.dir)
        return {"seq": self.head_seq, "hash": self.head_hash}

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except OSError:
                pass
            self._fh.close()
            self._fh = None
