"""The blob area: payload bytes (images, audio, video...) stored content-addressed, in chunks.

A version row never holds payload bytes; it names a blob by the SHA-256 of its plaintext (the
*digest*). Blobs live under ``<store>/blobs/``:

* ``blobs/SALT``: 32 random bytes, sealed with the store's codec (AES-GCM under the store key
  for an encrypted store). A blob's file name is ``sha256(salt || digest)`` in hex, split
  ``ab/cdef...``, so without the key nobody can tell from file names whether a known file is
  stored (the digest itself is kept only inside the version rows, which are sealed too).
* ``blobs/ab/<62 hex>``: one blob, a sequence of frames::

      file   = MAGIC frame*                         MAGIC = b"AEBLOB\\x00\\x01"
      frame  = u32 len | u32 crc32c(body) | body     body  = codec.seal(plain, aad)
      plain  = b"D" | method u8 | u32 raw_len | data (method 0 raw, 1 zstd), at most CHUNK raw bytes
             | b"F" | JSON {"size", "sha256", "chunks"}   (the footer: always the last frame)
      aad    = b"blob|" + store_id + b"|" + frame index (decimal)

  The frame index in the associated data makes reordered, dropped or foreign frames fail
  authentication (encrypted) and the footer's size and digest catch the rest (plain). A file
  without its footer is truncated and reads as corrupt.
* ``blobs/tmp/``: blobs being written. A write streams frames into a temp file (so a 1 GB video
  needs one chunk of memory), hashes the plaintext as it goes, fsyncs, and only then renames the
  file to its name and fsyncs the folder. The caller commits the version row that names the
  digest after :meth:`BlobStore.put` returned, so no row ever names a half-written blob; a crash
  leaves at most a temp file (removed at the next open) or an unreferenced blob (removed by the
  next garbage collection, :meth:`BlobStore.collect`).

Compression: each chunk is zstd-compressed and kept compressed only when that saves at least 3%;
after a first chunk that does not compress (a JPEG, an MP4), the rest are not tried.
Identical payloads are stored once; :meth:`BlobStore.collect` removes the blobs no live version
names. No pickle: frames are bytes and JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import struct
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import crc32c
import pyarrow as pa

from ..errors import CorruptionError, InvalidInputError, InvalidPayloadError
from ._fs import fsync_dir, fsync_fd, io_errors, replace, write_all
from .codec import Codec, PlainCodec

MAGIC = b"AEBLOB\x00\x01"
#: Raw bytes per data frame.
CHUNK = 1 << 20
_HDR = struct.Struct("<II")
_RAW = struct.Struct("<I")
_MAX_FRAME = CHUNK + (1 << 16)  # a sealed chunk plus codec overhead; anything larger is damage
_ZSTD = pa.Codec("zstd", compression_level=3)
_SALT = "SALT"


def _is_digest(digest: object) -> bool:
    return isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


class BlobStore:
    """Content-addressed, chunked, checksummed payload blobs under ``root`` (see the module docstring).

    Parameters
    ----------
    root
        The blob folder (``<store>/blobs``); created on the first write.
    codec
        The store's codec: blobs and the name salt are sealed with it.
    store_id
        Bound into every frame's associated data.
    read_only
        Never create files (a read-only store).
    """

    def __init__(self, root: Path, codec: Codec | None, store_id: str, *, read_only: bool = False) -> None:
        self.root = Path(root)
        self.codec: Codec = codec or PlainCodec()
        self.store_id = store_id
        self.read_only = read_only
        self._salt: bytes | None = None
        self._lock = threading.Lock()
        #: digests written by ``put`` whose version rows are not committed yet (``collect`` keeps them)
        self._pending: dict[str, int] = {}

    # ------------------------------------------------------------------ names
    def _aad(self, index: int) -> bytes:
        return b"blob|" + self.store_id.encode() + b"|" + str(index).encode()

    def _salt_bytes(self, *, create: bool) -> bytes | None:
        if self._salt is not None:
            return self._salt
        p = self.root / _SALT
        aad = b"blobsalt|" + self.store_id.encode()
        if p.exists():
            with io_errors("read", p):
                raw = p.read_bytes()
            salt = self.codec.open(raw, aad)
            if len(salt) != 32:
                raise CorruptionError(f"{p}: blob name salt has {len(salt)} bytes, not 32")
            self._salt = salt
            return salt
        if not create:
            return None
        salt = secrets.token_bytes(32)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(_SALT + ".tmp")
        with io_errors("write", tmp), open(tmp, "wb") as fh:
            write_all(fh, self.codec.seal(salt, aad))
            fsync_fd(fh.fileno())
        replace(tmp, p)
        fsync_dir(self.root)
        self._salt = salt
        return salt

    def path_of(self, digest: str) -> Path | None:
        """The file a blob with this digest has (or would have); ``None`` before any blob exists."""
        if not _is_digest(digest):
            raise InvalidInputError(f"not a payload digest: {digest!r}")
        salt = self._salt_bytes(create=False)
        if salt is None:
            return None
        name = hashlib.sha256(salt + bytes.fromhex(digest)).hexdigest()
        return self.root / name[:2] / name[2:]

    def exists(self, digest: str) -> bool:
        p = self.path_of(digest)
        return p is not None and p.exists()

    # ------------------------------------------------------------------ write
    def put(self, chunks: Iterable[bytes], *, max_bytes: int | None = None) -> tuple[str, int]:
        """Store the bytes ``chunks`` yields; returns ``(digest, size)``.

        The blob is durable when this returns and is kept from :meth:`collect` until
        :meth:`release` (call it after the version row naming it is committed, or not).

        Raises
        ------
        InvalidPayloadError
            The bytes exceed ``max_bytes`` (nothing is kept).
        StorageIOError
            A write, fsync or rename failed (nothing is kept).
        """
        if self.read_only:
            raise InvalidInputError("the store is read-only")
        self._salt_bytes(create=True)
        tmpdir = self.root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        tmp = tmpdir / f"{secrets.token_hex(8)}.tmp"
        h = hashlib.sha256()
        size = 0
        index = 0
        try_zstd = True
        buf = bytearray()
        pending: str | None = None
        try:
            with io_errors("write", tmp), open(tmp, "wb") as fh:
                fh.write(MAGIC)

                def frame(plain: bytes) -> None:
                    nonlocal index
                    body = self.codec.seal(plain, self._aad(index))
                    fh.write(_HDR.pack(len(body), crc32c.crc32c(body)))
                    fh.write(body)
                    index += 1

                def data(raw: bytes) -> None:
                    nonlocal try_zstd
                    method, out = 0, raw
                    if try_zstd and raw:
                        packed = _ZSTD.compress(raw, asbytes=True)
                        if len(packed) <= len(raw) * 0.97:
                            method, out = 1, packed
                        elif index == 0:
                            try_zstd = False  # already-compressed media: do not spend CPU on the rest
                    frame(b"D" + bytes((method,)) + _RAW.pack(len(raw)) + out)

                for piece in chunks:
                    if not isinstance(piece, bytes | bytearray | memoryview):
                        raise InvalidPayloadError(f"payload chunks must be bytes, got {type(piece).__name__}")
                    size += len(piece)
                    if max_bytes is not None and size > max_bytes:
                        raise InvalidPayloadError(f"payload exceeds max_payload_bytes ({max_bytes} bytes)")
                    h.update(piece)
                    if not buf and len(piece) == CHUNK:  # a file read a chunk at a time: no copy
                        data(bytes(piece))
                        continue
                    buf += piece
                    while len(buf) >= CHUNK:
                        data(bytes(buf[:CHUNK]))
                        del buf[:CHUNK]
                if buf or index == 0:
                    data(bytes(buf))
                digest = h.hexdigest()
                footer = {"size": size, "sha256": digest, "chunks": index}
                frame(b"F" + json.dumps(footer, sort_keys=True).encode())
                fh.flush()
                fsync_fd(fh.fileno())
            with self._lock:
                self._pending[digest] = self._pending.get(digest, 0) + 1
            pending = digest
            dst = self.path_of(digest)
            assert dst is not None
            if dst.exists():
                tmp.unlink()  # the same bytes are stored already (content addressing)
            else:
                dst.parent.mkdir(exist_ok=True)
                replace(tmp, dst)
                fsync_dir(dst.parent)
            return digest, size
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if pending is not None:
                self.release(pending)
            raise

    def release(self, digest: str) -> None:
        """The version row naming ``digest`` was committed (or the write was abandoned)."""
        with self._lock:
            n = self._pending.get(digest, 0) - 1
            if n > 0:
                self._pending[digest] = n
            else:
                self._pending.pop(digest, None)

    # ------------------------------------------------------------------ read
    def _frames(self, fh: BinaryIO, where: Path) -> Iterator[tuple[int, bytes]]:
        if fh.read(len(MAGIC)) != MAGIC:
            raise CorruptionError(f"{where}: not a blob file (bad magic)")
        index = 0
        while True:
            hdr = fh.read(_HDR.size)
            if not hdr:
                raise CorruptionError(f"{where}: truncated blob (no footer)")
            if len(hdr) != _HDR.size:
                raise CorruptionError(f"{where}: truncated frame header at frame {index}")
            n, crc = _HDR.unpack(hdr)
            if n > _MAX_FRAME:
                raise CorruptionError(f"{where}: frame {index} claims {n} bytes")
            body = fh.read(n)
            if len(body) != n or crc32c.crc32c(body) != crc:
                raise CorruptionError(f"{where}: frame {index} fails its checksum")
            yield index, self.codec.open(body, self._aad(index))
            index += 1

    def chunks(self, digest: str) -> Iterator[bytes]:
        """The plaintext of blob ``digest``, chunk by chunk; checks every frame, the size and digest.

        Raises
        ------
        CorruptionError
            The blob is missing, damaged, truncated or does not hash to ``digest`` (raised
            when the damage is reached; a consumer that streams must not trust earlier chunks
            until the iterator is exhausted).
        """
        p = self.path_of(digest)
        if p is None or not p.exists():
            raise CorruptionError(f"payload blob {digest[:12]}... is missing from {self.root}")
        return self._stream(p, digest)

    def _stream(self, p: Path, digest: str | None, out: list[str] | None = None) -> Iterator[bytes]:
        """The chunks of blob file ``p``, checked against ``digest`` (``None``: against its own footer,
        whose digest is then appended to ``out``)."""
        h = hashlib.sha256()
        size = 0
        with io_errors("read", p), open(p, "rb") as fh:
            for index, plain in self._frames(fh, p):
                kind = plain[:1]
                if kind == b"D" and len(plain) >= 2 + _RAW.size:
                    method = plain[1]
                    (raw_len,) = _RAW.unpack_from(plain, 2)
                    body = plain[2 + _RAW.size:]
                    try:
                        raw = _ZSTD.decompress(body, raw_len, asbytes=True) if method == 1 else bytes(body)
                    except (pa.ArrowException, ValueError) as exc:
                        raise CorruptionError(f"{p}: frame {index} does not decompress: {exc}") from exc
                    if len(raw) != raw_len or method not in (0, 1):
                        raise CorruptionError(f"{p}: frame {index} has a bad length or method")
                    h.update(raw)
                    size += raw_len
                    yield raw
                elif kind == b"F":
                    try:
                        footer = json.loads(plain[1:])
                    except ValueError as exc:
                        raise CorruptionError(f"{p}: unreadable footer") from exc
                    want = digest if digest is not None else footer.get("sha256")
                    if (
                        footer.get("sha256") != want or h.hexdigest() != want
                        or footer.get("size") != size or footer.get("chunks") != index
                    ):
                        raise CorruptionError(f"{p}: blob does not match its digest")
                    if fh.read(1):
                        raise CorruptionError(f"{p}: bytes after the footer")
                    if out is not None:
                        out.append(want)
                    return
                else:
                    raise CorruptionError(f"{p}: frame {index} has unknown kind {kind!r}")

    def check_file(self, p: Path) -> str:
        """Read blob file ``p`` through and return its digest; it must also be the file's name.

        Raises
        ------
        CorruptionError
            The file is damaged, or holds the blob of another digest.
        """
        got: list[str] = []
        for _ in self._stream(p, None, got):
            pass
        if self.path_of(got[0]) != p:
            raise CorruptionError(f"{p}: holds the blob of another digest (misplaced or swapped)")
        return got[0]

    def read(self, digest: str) -> bytes:
        """The whole plaintext of blob ``digest`` (checked)."""
        return b"".join(self.chunks(digest))

    def open(self, digest: str) -> BlobReader:
        """A binary file object streaming blob ``digest`` (checked as it is read)."""
        return BlobReader(self.chunks(digest))

    def verify(self, digest: str) -> None:
        """Read blob ``digest`` through; raises ``CorruptionError`` if it is damaged."""
        for _ in self.chunks(digest):
            pass

    # ------------------------------------------------------------------ maintenance
    def files(self) -> dict[Path, None]:
        """Every blob file (not the salt, not temp files)."""
        out: dict[Path, None] = {}
        if not self.root.is_dir():
            return out
        for sub in self.root.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                for p in sub.iterdir():
                    if p.is_file():
                        out[p] = None
        return out

    def remove_temps(self) -> int:
        """Delete temp files a crashed write left (call only with the writer lock held)."""
        d = self.root / "tmp"
        n = 0
        if d.is_dir():
            for p in d.iterdir():
                with contextlib.suppress(OSError):
                    p.unlink()
                    n += 1
        return n

    def collect(self, live: Iterable[str]) -> int:
        """Delete every blob whose digest is not in ``live`` (nor pending); returns how many.

        Call with the store's writer lock held, so that no commit naming a blob races it.
        """
        if self._salt_bytes(create=False) is None:
            return 0
        with self._lock:
            keep = {p for d in set(live) | set(self._pending) if _is_digest(d) and (p := self.path_of(d)) is not None}
        removed = 0
        dirs: set[Path] = set()
        for p in self.files():
            if p not in keep:
                with io_errors("delete", p):
                    p.unlink(missing_ok=True)
                removed += 1
                dirs.add(p.parent)
        for d in dirs:
            fsync_dir(d)
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
        return removed


class BlobReader(io.RawIOBase):
    """A read-only binary stream over a blob's chunks (from :meth:`BlobStore.open`).

    Raises ``CorruptionError`` from ``read`` when it reaches damage; the last ``read`` (the one
    that returns ``b""``) is the one that has checked the whole digest.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._it: Iterator[bytes] | None = chunks
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._pos >= len(self._buf):
            if self._it is None:
                return 0
            try:
                self._buf, self._pos = next(self._it), 0
            except StopIteration:
                self._it = None
                return 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()
        super().close()


def iter_file(fh: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes of a binary file object, ``chunk`` at a time."""
    while True:
        piece = fh.read(chunk)
        if not piece:
            return
        if not isinstance(piece, bytes | bytearray):
            raise InvalidPayloadError(f"payload file object must be opened in binary mode, read {type(piece).__name__}")
        yield bytes(piece)

