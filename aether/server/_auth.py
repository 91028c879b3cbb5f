"""API keys: random, shown once, stored only as SHA-256 hashes, compared in constant time.

The keys file is JSON (``{"format": 1, "keys": [...]}``), written atomically with mode 0600. Each
entry has an ``id`` (public, part of the key), a ``name``, a ``scope`` (``read`` < ``write`` <
``admin``: a scope includes the ones below it), the ``namespaces`` it may use (``null``: all) and
the hash. A key looks like ``aek_<id>_<secret>``; the server finds the entry by id and compares
the hash of the whole key with :func:`hmac.compare_digest`. The running server re-reads the file
when it changes, so ``aether keys revoke`` takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InvalidInputError
from ._names import check_namespace

log = logging.getLogger("aether.server")

SCOPES = ("read", "write", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
#: Default keys file name inside ROOT (holds a dot, so it can never be a namespace).
DEFAULT_KEYS_NAME = "api-keys.json"
FORMAT = 1


def _hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's id and name, its scope and namespaces (``None``: all)."""

    key_id: str
    name: str
    scope: str
    namespaces: frozenset[str] | None

    def allows(self, scope: str, namespace: str | None) -> bool:
        if _RANK[self.scope] < _RANK[scope]:
            return False
        return namespace is None or self.namespaces is None or namespace in self.namespaces


#: The principal of a server that runs without keys (loopback only).
ANONYMOUS = Principal("anonymous", "anonymous", "admin", None)


def check_scope(scope: str) -> str:
    if scope not in _RANK:
        raise InvalidInputError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    return scope


class KeysFile:
    """The keys file of a server (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """Every entry (revoked ones included); ``[]`` when the file does not exist."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"cannot read the keys file {self.path}: {exc}") from None
        try:
            doc = json.loads(raw)
            keys = doc["keys"]
            if doc.get("format") != FORMAT or not isinstance(keys, list):
                raise ValueError("unsupported format")
            for k in keys:
                if not isinstance(k, dict) or not {"id", "name", "scope", "hash"} <= k.keys():
                    raise ValueError("an entry lacks id, name, scope or hash")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the keys file {self.path} is not valid: {exc}") from None
        return keys

    def _save(self, keys: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        data = json.dumps({"format": FORMAT, "keys": keys}, indent=2).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def add(self, *, name: str, scope: str, namespaces: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        """Create a key; returns ``(key, entry)``. The key itself is not stored: show it once."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidInputError("a key needs a name of 1-200 characters")
        check_scope(scope)
        if namespaces is not None and not namespaces:
            # an empty list is not "no restriction": None means every namespace, [] would mean none
            raise InvalidInputError("a key needs at least one namespace, or namespaces=None for all of them")
        ns = None if namespaces is None else sorted({check_namespace(n) for n in namespaces})
        keys = self.load()
        used = {k["id"] for k in keys}
        key_id = secrets.token_hex(4)
        while key_id in used:
            key_id = secrets.token_hex(4)
        key = f"aek_{key_id}_{secrets.token_urlsafe(32)}"
        entry = {
            "id": key_id, "name": name.strip(), "scope": scope, "namespaces": ns, "hash": _hash(key),
            "created": datetime.now(UTC).isoformat(), "revoked": None,
        }
        keys.append(entry)
        self._save(keys)
        return key, entry

    def revoke(self, key_id: str) -> dict[str, Any]:
        """Mark a key revoked (it stays listed); raises ``InvalidInputError`` for an unknown id."""
        keys = self.load()
        for k in keys:
            if k["id"] == key_id:
                if k.get("revoked") is None:
                    k["revoked"] = datetime.now(UTC).isoformat()
                    self._save(keys)
                return k
        raise InvalidInputError(f"no key with id {key_id!r} in {self.path}")


def _principal(entry: dict[str, Any]) -> Principal:
    ns = entry.get("namespaces")
    return Principal(entry["id"], entry["name"], check_scope(entry["scope"]), None if ns is None else frozenset(ns))


class KeyStore:
    """What the server checks keys against: a keys file (re-read when it changes) and ``AETHER_API_KEY``."""

    def __init__(self, keys_file: str | os.PathLike[str] | None, env_key: str | None) -> None:
        self.file = KeysFile(keys_file) if keys_file is not None else None
        self._env_hash = _hash(env_key) if env_key else None
        self._lock = threading.Lock()
        self._by_id: dict[str, tuple[str, Principal]] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._required = False
        self.reload(force=True)

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (else the server is open, which only loopback allows).

        Once true it stays true: a keys file deleted or moved away while serving must not turn a
        server that needed keys into an open one (it then rejects every key, not none).
        """
        if not self._required:
            self._required = (self._env_hash is not None or bool(self._by_id)
                              or (self.file is not None and self.file.path.exists()))
        return self._required

    def reload(self, *, force: bool = False) -> None:
        """Re-read the keys file if it changed (checked at most every 0.5 s)."""
        if self.file is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < 0.5:
            return
        with self._lock:
            self._checked = now
            try:
                st = self.file.path.stat()
                stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = None
            if not force and stamp == self._stamp:
                return
            try:
                entries = self.file.load()
            except ConfigError as exc:
                if force:
                    raise
                # A file broken while serving (a manual edit half done): keep the last good keys, and tell
                # the operator, not the client (the message names a server path). Re-read once it changes.
                self._stamp = stamp
                log.error("%s; keeping the keys read before", exc)
                return
            self._by_id = {e["id"]: (e["hash"], _principal(e)) for e in entries if e.get("revoked") is None}
            self._stamp = stamp

    def authenticate(self, key: str) -> Principal | None:
        """The principal of ``key``, or ``None`` for a wrong or revoked key."""
        self.reload()
        presented = _hash(key)
        if self._env_hash is not None and hmac.compare_digest(presented, self._env_hash):
            return Principal("env", "AETHER_API_KEY", "admin", None)
        parts = key.split("_", 2)
        found = self._by_id.get(parts[1]) if len(parts) == 3 and parts[0] == "aek" else None
        # Compare against a dummy hash for an unknown id too, so both paths cost the same.
        stored, principal = found if found is not None else ("sha256:" + "0" * 64, None)
        if hmac.compare_digest(presented, stored) and principal is not None:
            return principal
        return None
