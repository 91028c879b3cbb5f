"""The keyring: per-subject data keys, wrapped (envelope encryption) by the master key.

``keys/keyring.json`` holds, for one store::

    {"format": 1, "store_id": ..., "check": b64, "keys": {key_id: b64, ...}, "checksum": crc32c}

* ``check`` is a verifier: a fixed string sealed with the master key (AES-256-GCM, associated
  data ``aether|check|<store_id>``). Opening it tells a wrong master key apart from damage before
  anything else of the store is read or written.
* each ``keys`` entry is a 32-byte data key and the name of the subject it belongs to, sealed
  with the master key (associated data ``aether|wrap|<store_id>|<key_id>``, so an entry cannot be
  moved to another store or key id). Subject names are therefore not readable without the key.
* the subject ``""`` is reserved for the store key, which seals whole files (WAL frames,
  segments, index files); every other subject's key seals that subject's rows.
* ``checksum`` (CRC32C of the rest) catches accidental damage with a clear ``CorruptionError``.

Rotating the master key re-wraps the entries and gives every subject a fresh data key for new
writes (its older keys stay, to read older rows; ``current`` names the key each subject writes
with), so a keyring copy from before a rotation, even with the old master key, opens nothing
written after it. Erasing a subject destroys every key it ever had; the erasure also purges the
subject's ciphertext from the store's files (see :mod:`aether.security.erase`), so nothing left in
the store is decryptable with any key that ever existed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import CorruptionError, KeyRequiredError, TamperedError, WrongKeyError
from ..storage import _fs, checked_json
from ..storage._fs import io_errors

REL = "keys/keyring.json"
FORMAT = 1
STORE_SUBJECT = ""
NONCE = 12
_CHECK_PLAIN = b"aether master key check v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, path: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except (ValueError, TypeError):
        raise CorruptionError("keyring entry is not base64", path=path) from None




def seal(aead: AESGCM, data: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a fresh random 96-bit nonce: ``nonce || ciphertext || tag``."""
    nonce = os.urandom(NONCE)
    return nonce + aead.encrypt(nonce, data, aad)


def unseal(aead: AESGCM, blob: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`seal`; raises ``TamperedError`` if the blob does not authenticate."""
    if len(blob) < NONCE + 16:
        raise TamperedError("ciphertext is truncated")
    try:
        return aead.decrypt(blob[:NONCE], blob[NONCE:], aad)
    except InvalidTag:
        raise TamperedError("ciphertext fails AES-GCM authentication") from None


def _wrap_aad(store_id: str, key_id: str) -> bytes:
    return f"aether|wrap|{store_id}|{key_id}".encode()


def _check_aad(store_id: str) -> bytes:
    return f"aether|check|{store_id}".encode()


class Keyring:
    """The unwrapped data keys of one store (in memory) and their wrapped form on disk."""

    def __init__(self, root: Path | None, store_id: str, master: bytes) -> None:
        self.root = root
        self.store_id = store_id
        self._master = AESGCM(master)
        self._lock = threading.RLock()
        #: key_id -> (subject, data key)
        self._keys: dict[str, tuple[str, bytes]] = {}
        self._by_subject: dict[str, str] = {}
        self._aeads: dict[str, AESGCM] = {}
        self._check = b""

    # ------------------------------------------------------------------ create / load
    @classmethod
    def create(cls, root: Path | None, store_id: str, master: bytes) -> Keyring:
        """A new keyring with a fresh store key; written to ``root/keys`` when ``root`` is given."""
        ring = cls(root, store_id, master)
        ring._check = seal(ring._master, _CHECK_PLAIN, _check_aad(store_id))
        ring._add(STORE_SUBJECT)
        ring.save()
        return ring

    @classmethod
    def path_of(cls, root: Path) -> Path:
        return root / REL

    @classmethod
    def load(cls, root: Path, store_id: str, master: bytes) -> Keyring:
        """Read and unwrap the keyring.

        Raises
        ------
        WrongKeyError
            The master key does not open this store.
        CorruptionError
            The keyring file is missing or damaged.
        TamperedError
            A wrapped key does not authenticate (edited, or moved from another store).
        """
        path = cls.path_of(root)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptionError(
                "the store is encrypted but its keyring is missing", path=str(path)
            ) from None
        except OSError as exc:
            raise CorruptionError(f"cannot read keyring: {exc}", path=str(path)) from None
        doc = parse(data, str(path))
        if doc["store_id"] != store_id:
            raise CorruptionError("keyring belongs to another store", path=str(path))
        ring = cls(root, store_id, master)
        ring._check = _unb64(doc["check"], str(path))
        try:
            if unseal(ring._master, ring._check, _check_aad(store_id)) != _CHECK_PLAIN:
                raise TamperedError("verifier mismatch")
        except TamperedError:
            raise WrongKeyError(f"the key does not open the store at {root}") from None
        for key_id, blob in doc["keys"].items():
            try:
                plain = unseal(ring._master, _unb64(blob, str(path)), _wrap_aad(store_id, key_id))
                (slen,) = struct.unpack_from("<H", plain, 0)
                subject = plain[2 : 2 + slen].decode()
                dk = plain[2 + slen :]
                if len(dk) != 32:
                    raise TamperedError("bad data key length")
            except (TamperedError, struct.error, UnicodeDecodeError) as exc:
                raise TamperedError(f"wrapped data key {key_id} in {path} does not verify: {exc}") from None
            ring._install(key_id, subject, dk)
        current = doc.get("current")
        if isinstance(current, list):  # which key each subject writes with (several after a rotation)
            for key_id in current:
                if not isinstance(key_id, str) or key_id not in ring._keys:
                    raise CorruptionError("keyring names an unknown current key", path=str(path))
                ring._by_subject[ring._keys[key_id][0]] = key_id
        if STORE_SUBJECT not in ring._by_subject:
            raise CorruptionError("keyring has no store key", path=str(path))
        return ring

    # ------------------------------------------------------------------ persistence
    def _doc(self) -> dict[str, Any]:
        keys = {}
        for key_id, (subject, dk) in sorted(self._keys.items()):
            s = subject.encode()
            plain = struct.pack("<H", len(s)) + s + dk
            keys[key_id] = _b64(seal(self._master, plain, _wrap_aad(self.store_id, key_id)))
        return {
            "format": FORMAT, "store_id": self.store_id, "check": _b64(self._check), "keys": keys,
            "current": sorted(self._by_subject.values()),
        }

    def save(self) -> None:
        """Write the keyring atomically and durably (before any ciphertext that needs a new key)."""
        if self.root is None:
            return
        body = self._doc()
        path = self.path_of(self.root)
        with io_errors("mkdir", path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
        _fs.write_atomic(path, checked_json.dumps(body))
        with io_errors("chmod", path):
            os.chmod(path, 0o600)

    # ------------------------------------------------------------------ keys
    def _install(self, key_id: str, subject: str, dk: bytes) -> None:
        self._keys[key_id] = (subject, dk)
        self._by_subject[subject] = key_id
        self._aeads[key_id] = AESGCM(dk)

    def _add(self, subject: str) -> str:
        key_id = secrets.token_hex(8)
        self._install(key_id, subject, secrets.token_bytes(32))
        return key_id

    @property
    def store_key_id(self) -> str:
        return self._by_subject[STORE_SUBJECT]

    def store_aead(self) -> AESGCM:
        return self._aeads[self.store_key_id]

    def derive(self, label: bytes) -> bytes:
        """A 32-byte key for ``label`` derived from the store key (stable across master-key rotation)."""
        dk = self._keys[self.store_key_id][1]
        return hashlib.blake2b(label, digest_size=32, key=dk, person=b"aether-derive").digest()

    def key_ids_for(self, subjects: set[str], *, create: bool) -> dict[str, str]:
        """Key ids of ``subjects``; missing ones are created (and saved once) when ``create``."""
        with self._lock:
            missing = [s for s in subjects if s not in self._by_subject]
            if missing:
                if not create:
                    raise KeyRequiredError(
                        f"no data key for subject(s) {sorted(missing)[:3]} (read-only keyring)"
                    )
                for s in missing:
                    self._add(s)
                self.save()
            return {s: self._by_subject[s] for s in subjects}

    def aead(self, key_id: str) -> AESGCM | None:
        """The cipher of a data key, or ``None`` if the key was destroyed (or never existed)."""
        return self._aeads.get(key_id)

    def key_id_of(self, subject: str) -> str | None:
        """The key ``subject`` writes with (``None``: it has none)."""
        return self._by_subject.get(subject)

    def key_ids_of(self, subject: str) -> list[str]:
        """Every key ``subject`` has had (one per master-key rotation since its first write)."""
        with self._lock:
            return sorted(k for k, (s, _) in self._keys.items() if s == subject)

    def subjects(self) -> list[str]:
        return sorted(s for s in self._by_subject if s != STORE_SUBJECT)

    def destroy(self, key_ids: list[str]) -> int:
        """Forget data keys and rewrite the keyring; returns how many were present."""
        with self._lock:
            n = 0
            for key_id in key_ids:
                entry = self._keys.pop(key_id, None)
                if entry is None or entry[0] == STORE_SUBJECT:
                    if entry is not None:  # never destroy the store key
                        self._keys[key_id] = entry
                    continue
                self._aeads.pop(key_id, None)
                if self._by_subject.get(entry[0]) == key_id:
                    del self._by_subject[entry[0]]
                n += 1
            if n:
                self.save()
            return n

    def rewrap(self, new_master: bytes) -> None:
        """Wrap every data key under ``new_master`` (and a new verifier), give every subject a fresh
        key for new writes (a keyring copy wrapped by the old master must not open them), then save."""
        with self._lock:
            for subject in self.subjects():
                self._add(subject)
            self._master = AESGCM(new_master)
            self._check = seal(self._master, _CHECK_PLAIN, _check_aad(self.store_id))
            self.save()


def parse(data: bytes, path: str) -> dict[str, Any]:
    """Parse and checksum-verify keyring bytes (no key needed)."""
    body = checked_json.loads(data, path=path, what="keyring")
    if body.get("format") != FORMAT or not isinstance(body.get("store_id"), str):
        raise CorruptionError("keyring has an unknown format", path=path)
    if not isinstance(body.get("keys"), dict) or not isinstance(body.get("check"), str):
        raise CorruptionError("keyring is malformed", path=path)
    return body
