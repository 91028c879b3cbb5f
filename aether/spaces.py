"""Modality spaces: a payload embedder per modality, each with its own vectors and model identity.

``aether.open(path, embedders={"image": my_clip})`` registers a *payload embedder* for a modality:
an object with ``identity`` (a string naming the model), ``dim`` and ``embed(payloads) -> (n, dim)``
taking the payload **bytes**. Every version of that modality that has a payload then also gets a
vector in the modality's space, computed from its bytes, besides the text-space vector of its
caption. ``Memory.search(text)`` searches the text space (every atom, by its text rendering);
``Memory.search_space("image", image_bytes_or_vector)`` searches the image space, under the same
valid-time, transaction-time and tag filters.

A space is a derived index, rebuilt from the rows and the blobs whenever it lacks something::

    spaces/<modality>/SPACE.json   {"modality", "identity", "dim", "format": 1} (written atomically)
    spaces/<modality>/vectors.bin  records: u32 len | u32 crc32c(body) | body,
                                   body = codec.seal(i64 version_id | float32[dim], b"space|<store>|<modality>")

Vectors are appended after the rows they belong to are committed; a crash before that, a torn
last record or a deleted file only means the missing versions are embedded again (from their
payload bytes) at the next sync, which runs before every space search and after payload writes.
A store opened with a different model identity for a space raises ``ModelMismatchError``.
Erasure and compaction rewrite the file without the versions that are gone (the facade runs
:func:`purge` with the blob garbage collection), so no vector of an erased payload stays on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import crc32c
import numpy as np

from .errors import AetherError, ConfigError, InvalidInputError, ModelMismatchError
from .models import PAYLOAD_KEY, MemoryModality
from .storage._fs import fsync_dir, fsync_fd, io_errors, replace, write_atomic

if TYPE_CHECKING:
    from .engine.store import Engine

_HDR = struct.Struct("<II")
_VID = struct.Struct("<q")
_REGISTRY: weakref.WeakKeyDictionary[Any, dict[str, Space]] = weakref.WeakKeyDictionary()


class PayloadEmbedder(Protocol):
    """What a modality embedder provides (a CLIP image model, an audio model...)."""

    @property
    def identity(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, payloads: Sequence[bytes]) -> np.ndarray: ...


def _unit(arr: Any, n: int, dim: int, what: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    if a.shape != (n, dim) or not np.isfinite(a).all():
        raise InvalidInputError(f"{what}: expected {n} finite vectors of dimension {dim}, got shape {a.shape}")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise InvalidInputError(f"{what}: a zero vector")
    return np.ascontiguousarray(a / norms, dtype=np.float32)


class Space:
    """One modality's vectors (see the module docstring)."""

    def __init__(self, engine: Engine, modality: str, embedder: PayloadEmbedder) -> None:
        self.modality = modality
        self.embedder = embedder
        self.dim = int(embedder.dim)
        self.identity = str(embedder.identity)
        self._engine_ref = weakref.ref(engine)
        self._codec = engine.codec
        self._aad = f"space|{engine.store_id}|{modality}".encode()
        self._lock = threading.Lock()
        self.vids = np.zeros(0, np.int64)
        self.vecs = np.zeros((0, self.dim), np.float32)
        self._hwm = -1  # highest version id scanned
        self.dir: Path | None = None if engine.path is None else Path(engine.path) / "spaces" / modality
        if self.dir is not None:
            self._load(read_only=engine.read_only)

    # ------------------------------------------------------------------ files
    def _load(self, *, read_only: bool) -> None:
        assert self.dir is not None
        meta = self.dir / "SPACE.json"
        if meta.exists():
            with io_errors("read", meta):
                body = json.loads(meta.read_text())
            if body.get("identity") != self.identity or int(body.get("dim", -1)) != self.dim:
                raise ModelMismatchError(
                    f"space {self.modality!r} of this store was built with {body.get('identity')!r} "
                    f"(dim {body.get('dim')}), not {self.identity!r} (dim {self.dim})"
                )
        elif not read_only:
            self.dir.mkdir(parents=True, exist_ok=True)
            doc = {"format": 1, "modality": self.modality, "identity": self.identity, "dim": self.dim}
            write_atomic(meta, json.dumps(doc, sort_keys=True).encode())
            fsync_dir(self.dir)
        path = self.dir / "vectors.bin"
        if not path.exists():
            return
        with io_errors("read", path):
            data = path.read_bytes()
        vids: list[int] = []
        vecs: list[np.ndarray] = []
        pos = 0
        good = 0
        while pos + _HDR.size <= len(data):
            n, crc = _HDR.unpack_from(data, pos)
            body = data[pos + _HDR.size:pos + _HDR.size + n]
            if len(body) != n or crc32c.crc32c(body) != crc:
                break  # a torn or damaged tail: those versions are embedded again
            try:
                plain = self._codec.open(body, self._aad)
            except AetherError:  # a record that does not open is re-derived, like a torn one
                break
            if len(plain) != _VID.size + 4 * self.dim:
                break
            vids.append(_VID.unpack_from(plain, 0)[0])
            vecs.append(np.frombuffer(plain, np.float32, self.dim, _VID.size))
            pos += _HDR.size + n
            good = pos
        if good != len(data) and not read_only:
            with io_errors("truncate", path), open(path, "r+b") as fh:
                fh.truncate(good)
                fsync_fd(fh.fileno())
        if vids:
            self.vids = np.asarray(vids, np.int64)
            self.vecs = np.vstack(vecs).astype(np.float32)
            self._hwm = int(self.vids.max())

    def _record(self, vid: int, vec: np.ndarray) -> bytes:
        body = self._codec.seal(_VID.pack(vid) + vec.astype(np.float32).tobytes(), self._aad)
        return _HDR.pack(len(body), crc32c.crc32c(body)) + body

    def _append(self, vids: list[int], vecs: np.ndarray) -> None:
        self.vids = np.concatenate([self.vids, np.asarray(vids, np.int64)])
        self.vecs = np.vstack([self.vecs, vecs]) if len(self.vecs) else vecs.copy()
        if self.dir is None:
            return
        path = self.dir / "vectors.bin"
        with io_errors("write", path), open(path, "ab") as fh:
            fh.write(b"".join(self._record(v, vecs[i]) for i, v in enumerate(vids)))
            fh.flush()
            fsync_fd(fh.fileno())

    # ------------------------------------------------------------------ sync / purge
    def sync(self, engine: Engine) -> int:
        """Embed the versions of this modality committed since the last sync; returns how many."""
        from .payloads import blobs_of

        with self._lock:
            t = engine.table
            n = engine.snapshot.n
            if not n:
                return 0
            start = int(np.searchsorted(t.version_id[:n], self._hwm, side="right"))
            if start >= n:
                return 0
            rows = np.arange(start, n, dtype=np.int64)
            txt = t.text_columns(rows)
            todo: list[tuple[int, str]] = []
            for r, mod, meta in zip(rows.tolist(), txt["modality"], txt["content_meta"], strict=True):
                if mod != self.modality or PAYLOAD_KEY not in meta or t.dead[r]:
                    continue
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    todo.append((int(t.version_id[r]), json.loads(meta)[PAYLOAD_KEY]["sha256"]))
            hwm = int(t.version_id[n - 1])
            if todo:
                digests = sorted({d for _, d in todo})
                blobs = blobs_of(engine)
                vec_of: dict[str, np.ndarray] = {}
                for i in range(0, len(digests), 64):
                    part = digests[i:i + 64]
                    out = _unit(self.embedder.embed([blobs.read(d) for d in part]), len(part), self.dim,
                                f"embedder of space {self.modality!r}")
                    vec_of.update(zip(part, out, strict=True))
                vecs = np.vstack([vec_of[d] for _, d in todo])
                if engine.read_only:  # a reader embeds into memory only
                    self.vids = np.concatenate([self.vids, np.asarray([v for v, _ in todo], np.int64)])
                    self.vecs = np.vstack([self.vecs, vecs]) if len(self.vecs) else vecs
                else:
                    self._append([v for v, _ in todo], vecs)
            self._hwm = hwm
            return len(todo)

    def purge(self, engine: Engine) -> int:
        """Drop the vectors of versions no longer in the table (erased, compacted away); rewrite the file."""
        with self._lock:
            t = engine.table
            n = engine.snapshot.n
            if not len(self.vids):
                return 0
            pos = np.searchsorted(t.version_id[:n], self.vids)
            inside = pos < n
            ok = np.zeros(len(self.vids), np.bool_)
            ok[inside] = t.version_id[:n][pos[inside]] == self.vids[inside]
            ok[ok] &= ~t.dead[:n][pos[ok]]
            dropped = int((~ok).sum())
            if not dropped:
                return 0
            self.vids, self.vecs = self.vids[ok], self.vecs[ok]
            if self.dir is not None and not engine.read_only:
                path = self.dir / "vectors.bin"
                tmp = path.with_name("vectors.bin.tmp")
                with io_errors("write", tmp), open(tmp, "wb") as fh:
                    fh.write(b"".join(self._record(int(v), self.vecs[i]) for i, v in enumerate(self.vids)))
                    fh.flush()
                    fsync_fd(fh.fileno())
                replace(tmp, path)
                fsync_dir(self.dir)
            return dropped

    # ------------------------------------------------------------------ search
    def query_vector(self, query: Any) -> np.ndarray:
        """A unit query vector: payload bytes (embedded) or a vector of dimension ``dim``."""
        if isinstance(query, bytes | bytearray | memoryview):
            return _unit(self.embedder.embed([bytes(query)]), 1, self.dim, f"embedder of space {self.modality!r}")[0]
        if isinstance(query, str | os.PathLike):
            from .payloads import payload_chunks

            chunks, _ = payload_chunks(query)
            return self.query_vector(b"".join(chunks))
        return _unit(np.asarray(query, np.float32).reshape(1, -1) if np.ndim(query) == 1 else query, 1, self.dim,
                     f"query of space {self.modality!r}")[0]

    def topk(
        self, engine: Engine, q: np.ndarray, k: int, visible: np.ndarray, *, dedupe: bool
    ) -> list[tuple[int, float]]:
        """``(row, score)`` of the ``k`` best visible versions (one per atom when ``dedupe``)."""
        t = engine.table
        n = len(visible)
        if not len(self.vids) or not n:
            return []
        pos = np.searchsorted(t.version_id[:n], self.vids)
        inside = pos < n
        ok = np.zeros(len(self.vids), np.bool_)
        ok[inside] = t.version_id[:n][pos[inside]] == self.vids[inside]
        ok[ok] &= visible[pos[ok]]
        rows = pos[ok]
        if not len(rows):
            return []
        scores = self.vecs[ok] @ q
        order = np.argsort(-scores, kind="stable")
        out: list[tuple[int, float]] = []
        seen: set[int] = set()
        codes = t.atom_code
        for i in order.tolist():
            r = int(rows[i])
            if dedupe:
                c = int(codes[r])
                if c in seen:
                    continue
                seen.add(c)
            out.append((r, float(scores[i])))
            if len(out) >= k:
                break
        return out


def register(engine: Engine, embedders: Mapping[str, PayloadEmbedder] | None) -> None:
    """Attach a space per ``modality -> embedder`` to the engine (``aether.open(embedders=...)``)."""
    if not embedders:
        return
    if not isinstance(embedders, Mapping):
        raise ConfigError("embedders must be a dict of modality -> payload embedder")
    spaces: dict[str, Space] = {}
    for modality, emb in embedders.items():
        try:
            mod = MemoryModality(modality).value
        except ValueError:
            raise ConfigError(f"embedders: unknown modality {modality!r}") from None
        if mod in ("text", "structured"):
            raise ConfigError(f"embedders: {mod!r} atoms are embedded by the store's text model")
        for attr in ("identity", "dim", "embed"):
            if not hasattr(emb, attr):
                raise ConfigError(f"embedders[{mod!r}] has no {attr!r} (see aether.spaces.PayloadEmbedder)")
        if isinstance(emb.dim, bool) or not isinstance(emb.dim, int) or emb.dim < 1:
            raise ConfigError(f"embedders[{mod!r}].dim must be a positive int")
        spaces[mod] = Space(engine, mod, emb)
    _REGISTRY[engine] = spaces
    for s in spaces.values():
        s.sync(engine)


def space_of(engine: Engine, modality: str) -> Space:
    spaces = _REGISTRY.get(engine) or {}
    try:
        return spaces[MemoryModality(modality).value]
    except (ValueError, KeyError):
        raise InvalidInputError(
            f"no embedder for modality {modality!r} (open the store with embedders={{{modality!r}: ...}})"
        ) from None


def sync(engine: Engine) -> None:
    """Bring every space of the engine up to date (after a write)."""
    for s in (_REGISTRY.get(engine) or {}).values():
        s.sync(engine)


def purge(engine: Engine) -> int:
    """Drop the vectors of erased or compacted-away versions from every space; returns how many."""
    return sum(s.purge(engine) for s in (_REGISTRY.get(engine) or {}).values())


def identities(engine: Engine) -> dict[str, str]:
    """``modality -> model identity`` of the engine's spaces."""
    return {m: s.identity for m, s in (_REGISTRY.get(engine) or {}).items()}

