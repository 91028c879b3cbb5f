"""The authenticated codec: AES-256-GCM for whole files and, per row, with the row subject's data key.

Two layers, both AES-256-GCM with a fresh random 96-bit nonce per record:

* **files** (``seal`` / ``open``, the :class:`aether.storage.codec.Codec` protocol): every WAL frame
  payload, segment and closings file, FAISS index file and state snapshot is sealed with the
  *store key*. The caller's associated data binds the ciphertext to the store id and its place
  (``wal|<store>|<file>|<offset>``, ``file|<store>|<rel>``, ``index|<store>|<rel>``).
* **rows** (``seal_rows`` / ``open_rows``, the hook of :mod:`aether.storage.rows`): inside those
  files, the sensitive fields of each version row (atom id, subject, content, content metadata,
  tags, metadata, vector) are one ciphertext sealed with the *subject's* data key, associated data
  ``row|<store>|<key_id>|<version_id>|<valid_from>|<valid_to>|<tx_from>``. Only the version id,
  key id, modality, quality and the four times stay outside. A row swapped with another, replayed
  from another store or with edited times fails authentication; a row whose subject key was
  destroyed can no longer be read by anyone, from any copy of any file.

Sealed blobs start with one format byte (``0x01``) so the layout can evolve.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import CorruptionError, KeyRequiredError, SecurityError, TamperedError
from ..storage.codec import Codec, PlainCodec
from ..storage.rows import row_schema
from .keyring import NONCE, Keyring, seal, unseal

MODE = "aes-256-gcm"
_V1 = b"\x01"
#: atom id / subject of a row whose data key is destroyed, or that was scrubbed after an erasure.
ERASED = "\x00erased"
#: key id column of a scrubbed row (no ciphertext at all).
NO_KEY = "-"

#: Compact JSON of a row's sensitive fields (tags are ``[key, json-value]`` pairs).
_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

SEALED_COLUMNS = (
    "version_id",
    "key_id",
    "modality",
    "quality",
    "valid_from",
    "valid_to",
    "tx_from",
    "tx_to",
    "sealed",
)


def sealed_schema() -> pa.Schema:
    """Arrow schema of sealed version rows (what encrypted WAL records and segments hold)."""
    return pa.schema(
        [
            ("version_id", pa.int64()),
            ("key_id", pa.string()),
            ("modality", pa.string()),
            ("quality", pa.float64()),
            ("valid_from", pa.int64()),
            ("valid_to", pa.int64()),
            ("tx_from", pa.int64()),
            ("tx_to", pa.int64()),
            ("sealed", pa.binary()),
        ]
    )


def _ints(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype=np.int64)


class AeadCodec:
    """AES-256-GCM codec keyed by a store's keyring (bind it to a store with :meth:`create` / :meth:`bind`).

    Parameters
    ----------
    master
        The 32-byte master key.
    from_env
        The key came from the environment: an unencrypted store opened with it is opened plain.
    """

    encrypted = True

    def __init__(self, master: bytes, *, from_env: bool = False) -> None:
        self._master = master
        self.from_env = from_env
        self.keyring: Keyring | None = None
        self.store_id = ""
        self.dim = 0
        self.read_only = False

    # ------------------------------------------------------------------ binding
    def create(self, root: Path, store_id: str) -> dict[str, Any]:
        """Create the keyring of a new store; returns the manifest's ``encryption`` section."""
        self.keyring = Keyring.create(root, store_id, self._master)
        self.store_id = store_id
        return {
            "mode": MODE,
            "keyring": "keys/keyring.json",
            "key_wrap": "aes-256-gcm",
            "rows": "aes-256-gcm/subject-key/v1",
            "store_key_id": self.keyring.store_key_id,
        }

    def bind(self, root: Path, body: dict[str, Any], *, read_only: bool) -> None:
        """Load and check the keyring (raises ``WrongKeyError`` before anything else is read)."""
        self.keyring = Keyring.load(root, body["store_id"], self._master)
        enc = body.get("encryption") or {}
        if enc.get("store_key_id") not in (None, self.keyring.store_key_id):
            raise CorruptionError("keyring's store key differs from the manifest's", path=str(root / "keys"))
        self.store_id = body["store_id"]
        self.dim = int(body["model"]["dim"])
        self.read_only = read_only
        self._root = root

    def _reload_if_reader(self, key_id: str) -> None:
        """A reader may meet a key the writer created after the reader opened: re-read the keyring."""
        root = getattr(self, "_root", None)
        if self.read_only and root is not None and self.keyring is not None and key_id != NO_KEY:
            self.keyring = Keyring.load(root, self.store_id, self._master)

    def _ring(self) -> Keyring:
        if self.keyring is None:
            raise SecurityError("the encryption codec is not bound to a store")
        return self.keyring

    def log_key(self) -> bytes:
        """The MAC key of the hash-chained log (derived from the store key)."""
        return self._ring().derive(b"hash-chained log")

    @property
    def key_id(self) -> str | None:
        """Public id of the store key (stable across master-key rotation)."""
        return self.keyring.store_key_id if self.keyring is not None else None

    # ------------------------------------------------------------------ whole records
    def seal(self, data: bytes, aad: bytes) -> bytes:
        return _V1 + seal(self._ring().store_aead(), data, aad)

    def open(self, data: bytes, aad: bytes) -> bytes:
        if data[:1] != _V1:
            raise TamperedError("not an aether ciphertext (bad format byte)")
        return unseal(self._ring().store_aead(), data[1:], aad)

    # ------------------------------------------------------------------ rows
    def _row_aad(self, key_id: str, vid: int, vf: int, vt: int, txf: int) -> bytes:
        return f"row|{self.store_id}|{key_id}|{vid}|{vf}|{vt}|{txf}".encode()

    def seal_rows(self, table: pa.Table) -> pa.Table:
        """Plain version rows (``rows.row_schema``) -> sealed rows (:func:`sealed_schema`)."""
        ring = self._ring()
        n = table.num_rows
        subjects = table.column("subject").to_pylist()
        kids = ring.key_ids_for({s for s in subjects if s != ERASED}, create=not self.read_only)
        atom = table.column("atom_id").to_pylist()
        content = table.column("content").to_pylist()
        cmeta = table.column("content_meta").to_pylist()
        tags = table.column("tags").to_pylist()
        meta = table.column("metadata").to_pylist()
        dim = table.schema.field("vector").type.list_size
        vcol = table.column("vector").combine_chunks()
        vecs = (
            np.asarray(vcol.values.to_numpy(zero_copy_only=False), np.float32).reshape(n, dim)
            if n
            else np.zeros((0, dim), np.float32)
        )
        vid, vf, vt, txf = (
            _ints(table, c).tolist() for c in ("version_id", "valid_from", "valid_to", "tx_from")
        )
        vbytes = np.ascontiguousarray(vecs).tobytes()
        stride = 4 * dim
        nonces = os.urandom(NONCE * n)  # one fresh random 96-bit nonce per row, drawn in one call
        aeads = {s: ring.aead(k) for s, k in kids.items()}
        prefix = f"row|{self.store_id}|"
        key_col: list[str] = []
        sealed: list[bytes] = []
        for i in range(n):
            s = subjects[i]
            if s == ERASED:  # a scrubbed row: nothing left to protect
                key_col.append(NO_KEY)
                sealed.append(b"")
                continue
            kid = kids[s]
            hdr = _json([atom[i], s, content[i], cmeta[i], tags[i] or [], meta[i]]).encode()
            plain = b"".join((struct.pack("<I", len(hdr)), hdr, vbytes[i * stride : (i + 1) * stride]))
            aad = f"{prefix}{kid}|{vid[i]}|{vf[i]}|{vt[i]}|{txf[i]}".encode()
            nonce = nonces[i * NONCE : (i + 1) * NONCE]
            aead = aeads[s]
            assert aead is not None
            sealed.append(_V1 + nonce + aead.encrypt(nonce, plain, aad))
            key_col.append(kid)
        cols = [
            table.column("version_id"),
            pa.array(key_col, pa.string()),
            table.column("modality"),
            table.column("quality"),
            table.column("valid_from"),
            table.column("valid_to"),
            table.column("tx_from"),
            table.column("tx_to"),
            pa.array(sealed, pa.binary()),
        ]
        return pa.Table.from_arrays(cols, schema=sealed_schema())

    def open_rows(self, table: pa.Table) -> pa.Table:
        """Sealed rows -> plain rows. Rows whose data key is gone come back as erased placeholders.

        Raises
        ------
        TamperedError
            A row fails authentication (edited, swapped, or replayed from elsewhere).
        """
        ring = self._ring()
        n = table.num_rows
        dim = self.dim
        kids = table.column("key_id").to_pylist()
        blobs = table.column("sealed").to_pylist()
        vid, vf, vt, txf = (_ints(table, c) for c in ("version_id", "valid_from", "valid_to", "tx_from"))
        atom: list[str] = []
        subj: list[str] = []
        content: list[str] = []
        cmeta: list[str] = []
        tags: list[list[tuple[str, str]]] = []
        meta: list[str] = []
        vecs = np.zeros((n, dim), np.float32)
        reloaded = False
        for i in range(n):
            aead = ring.aead(kids[i]) if kids[i] != NO_KEY else None
            if aead is None and not reloaded and kids[i] != NO_KEY and self.read_only:
                reloaded = True
                self._reload_if_reader(kids[i])
                ring = self._ring()
                aead = ring.aead(kids[i])
            if aead is None:
                atom.append(ERASED)
                subj.append(ERASED)
                content.append("")
                cmeta.append("{}")
                tags.append([])
                meta.append("{}")
                continue
            blob = blobs[i]
            if blob[:1] != _V1:
                raise TamperedError(f"version {int(vid[i])}: not an aether ciphertext")
            try:
                plain = unseal(
                    aead, blob[1:], self._row_aad(kids[i], int(vid[i]), int(vf[i]), int(vt[i]), int(txf[i]))
                )
            except TamperedError:
                raise TamperedError(
                    f"row {i} (version {int(vid[i])}) fails authentication: edited, swapped or replayed"
                ) from None
            (hlen,) = struct.unpack_from("<I", plain, 0)
            a, s, c, cm, tg, m = json.loads(plain[4 : 4 + hlen])
            atom.append(a)
            subj.append(s)
            content.append(c)
            cmeta.append(cm)
            tags.append([(k, v) for k, v in tg])
            meta.append(m)
            vecs[i] = np.frombuffer(plain, np.float32, count=dim, offset=4 + hlen)
        flat = pa.array(vecs.reshape(-1), type=pa.float32())
        cols = [
            table.column("version_id"),
            pa.array(atom, pa.string()),
            pa.array(subj, pa.string()),
            table.column("modality"),
            pa.array(content, pa.string()),
            pa.array(cmeta, pa.string()),
            pa.array(tags, type=pa.map_(pa.string(), pa.string())),
            pa.array(meta, pa.string()),
            table.column("quality"),
            table.column("valid_from"),
            table.column("valid_to"),
            table.column("tx_from"),
            table.column("tx_to"),
            pa.FixedSizeListArray.from_arrays(flat, dim),
        ]
        return pa.Table.from_arrays(cols, schema=row_schema(dim))


def bind_codec(codec: Codec, root: Path, body: dict[str, Any], *, read_only: bool) -> Codec:
    """Check the store's encryption mode against the codec; returns the codec the engine must use.

    Raises
    ------
    KeyRequiredError
        The store is encrypted and no key was given.
    WrongKeyError
        The key does not open the store.
    SecurityError
        A key was given explicitly for an unencrypted store.
    """
    mode = (body.get("encryption") or {}).get("mode", "none")
    if mode == "none":
        if getattr(codec, "encrypted", False):
            if getattr(codec, "from_env", False):
                return PlainCodec()  # AETHER_KEY is set for other stores; this one is plain
            raise SecurityError(f"the store at {root} is not encrypted; open it without a key")
        return codec
    if mode != MODE:
        raise CorruptionError(f"unknown encryption mode {mode!r}", path=str(root / "MANIFEST.json"))
    if not isinstance(codec, AeadCodec):
        raise KeyRequiredError(
            f"the store at {root} is encrypted: give key=, key_file=, or set AETHER_KEY (base64)"
        )
    codec.bind(root, body, read_only=read_only)
    return codec
