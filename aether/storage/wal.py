"""The write-ahead log: framed, checksummed transaction records, fsynced before a write returns.

File layout (``wal/<first-seq>.wal``)::

    b"AETHWAL1"                       8-byte file magic
    frame*                            one frame per committed transaction
    frame := u32 length | u32 crc32c(payload) | payload      (little-endian)
    payload (after the codec) := u32 header length | header JSON | Arrow IPC stream of inserted rows

A frame that runs past the end of the file, or a bad checksum on the file's last frame,
is a torn write from a crash and is cut off on recovery. A bad frame followed by more data
is corruption and raises ``CorruptionError`` naming the file and offset.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import pyarrow as pa

from ..errors import CorruptionError, TamperedError
from ._fs import fsync_dir, fsync_fd, io_errors
from .codec import Codec, PlainCodec
from .rows import RowBatch, open_rows, seal_rows

MAGIC = b"AETHWAL1"
_FRAME = struct.Struct("<II")
#: Larger declared lengths are treated as garbage rather than allocated.
MAX_RECORD = 1 << 31


@dataclass
class WalRecord:
    """One decoded transaction record."""

    header: dict[str, Any]
    rows: RowBatch | None
    path: Path
    offset: int

    @property
    def seq(self) -> int:
        return int(self.header["seq"])


def encode_payload(header: dict[str, Any], rows: RowBatch | None, codec: Codec | None = None) -> bytes:
    """Header JSON plus the inserted rows as an Arrow IPC stream."""
    hdr = json.dumps(header, separators=(",", ":")).encode()
    body = b""
    if rows is not None and len(rows):
        table = seal_rows(rows.to_arrow(), codec)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        body = sink.getvalue().to_pybytes()
    return struct.pack("<I", len(hdr)) + hdr + body


def decode_payload(
    payload: bytes, path: Path, offset: int, codec: Codec | None = None
) -> tuple[dict[str, Any], RowBatch | None]:
    """Inverse of :func:`encode_payload`; any malformation is a ``CorruptionError``."""
    try:
        (hlen,) = struct.unpack_from("<I", payload, 0)
        if hlen > len(payload) - 4:
            raise ValueError("header length past end of record")
        header = json.loads(payload[4 : 4 + hlen])
        if not isinstance(header, dict) or not isinstance(header.get("seq"), int):
            raise ValueError("record header is not a transaction header")
        body = payload[4 + hlen :]
        rows = None
        if body:
            with pa.ipc.open_stream(pa.py_buffer(body)) as reader:
                rows = RowBatch.from_arrow(open_rows(reader.read_all(), codec))
        return header, rows
    except CorruptionError:
        raise
    except Exception as exc:  # a checksummed record that does not parse is still corruption
        raise CorruptionError(f"undecodable WAL record: {exc}", path=str(path), offset=offset) from None


def scan_frames(path: Path, data: bytes) -> tuple[list[tuple[int, bytes]], int | None]:
    """Split a WAL file into ``(offset, payload)`` frames.

    Returns the frames and, if the file ends in a torn frame, the offset to truncate at.
    """
    if len(data) < len(MAGIC):
        return [], 0 if data and not MAGIC.startswith(data) else (0 if data else None)
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptionError("not a WAL file (bad magic)", path=str(path), offset=0)
    frames: list[tuple[int, bytes]] = []
    pos = len(MAGIC)
    end = len(data)
    while pos < end:
        if end - pos < _FRAME.size:
            return frames, pos
        length, crc = _FRAME.unpack_from(data, pos)
        stop = pos + _FRAME.size + length
        if length > MAX_RECORD or stop > end:
            # Runs past the end: the write was torn by a crash. (A garbage length in the middle
            # of a file also lands here only when nothing valid could follow it.)
            return frames, pos
        payload = data[pos + _FRAME.size : stop]
        if crc32c.crc32c(payload) != crc:
            if stop == end:
                return frames, pos  # a torn last record
            raise CorruptionError("WAL record checksum mismatch", path=str(path), offset=pos)
        frames.append((pos, payload))
        pos = stop
    return frames, None


class WriteAheadLog:
    """Appends transaction records to the current WAL file and replays them on open."""

    def __init__(self, directory: Path, codec: Codec | None = None, *, store_id: str = "") -> None:
        self.dir = directory
        self.codec = codec or PlainCodec()
        self.store_id = store_id
        self._fh: Any = None
        self.path: Path | None = None
        self.last_payload = b""

    def files(self) -> list[Path]:
        """WAL files in replay order."""
        if not self.dir.exists():
            return []
        return sorted(self.dir.glob("*.wal"), key=lambda p: int(p.stem))

    def _aad(self, path: Path, offset: int) -> bytes:
        return f"wal|{self.store_id}|{path.name}|{offset}".encode()

    def read(self, *, repair: bool) -> Iterator[WalRecord]:
        """Yield every record of every WAL file; cut a torn tail when ``repair`` is set."""
        for path in self.files():
            with io_errors("read", path):
                data = path.read_bytes()
            frames, torn_at = scan_frames(path, data)
            if torn_at is not None:
                if path != self.files()[-1]:
                    raise CorruptionError("truncated WAL file before the last one", path=str(path), offset=torn_at)
                if repair:
                    with io_errors("truncate", path), open(path, "r+b") as fh:
                        fh.truncate(max(torn_at, len(MAGIC)) if torn_at >= len(MAGIC) else 0)
                        if torn_at < len(MAGIC):
                            fh.write(MAGIC)
                        fh.flush()
                        fsync_fd(fh.fileno())
            for offset, payload in frames:
                try:
                    plain = self.codec.open(payload, self._aad(path, offset))
                except TamperedError as exc:
                    raise CorruptionError(f"WAL record fails authentication: {exc}", path=str(path), offset=offset) from None
                header, rows = decode_payload(plain, path, offset, self.codec)
                yield WalRecord(header, rows, path, offset)

    def open_for_append(self, first_seq: int) -> None:
        """Continue the newest WAL file, or start ``<first_seq>.wal`` if there is none."""
        with io_errors("create", self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
        files = self.files()
        path = files[-1] if files else self.dir / f"{first_seq:020d}.wal"
        self._open(path)

    def _open(self, path: Path) -> None:
        self.close()
        new = not path.exists() or path.stat().st_size == 0
        with io_errors("open", path):
            self._fh = open(path, "ab")
            if new:
                self._fh.write(MAGIC)
                self._fh.flush()
                fsync_fd(self._fh.fileno())
        if new:
            fsync_dir(self.dir)
        self.path = path

    def append(self, header: dict[str, Any], rows: RowBatch | None) -> int:
        """Write one record and fsync it; returns the file offset it was written at."""
        assert self._fh is not None and self.path is not None, "WAL not open for append"
        offset = self._fh.tell()
        payload = self.codec.seal(encode_payload(header, rows, self.codec), self._aad(self.path, offset))
        self.last_payload = payload  # the security layer's hash chain records its digest
        frame = _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload
        try:
            with io_errors("WAL append", self.path):
                self._fh.write(frame)
                self._fh.flush()
                fsync_fd(self._fh.fileno())
        except Exception:
            # Leave no partial frame behind: the record was not acknowledged.
            self._rollback(offset)
            raise
        return offset

    def _rollback(self, offset: int) -> None:
        try:
            self._fh.close()
        except OSError:
            pass
        self._fh = None
        assert self.path is not None
        try:
            with open(self.path, "r+b") as fh:
                fh.truncate(offset)
                fh.flush()
                os.fsync(fh.fileno())
            self._fh = open(self.path, "ab")
        except OSError:
            self._fh = None  # reopened lazily by the engine's next write

    def ensure_open(self) -> None:
        if self._fh is None and self.path is not None:
            self._open(self.path)

    def rotate(self, next_seq: int) -> list[Path]:
        """Start a fresh WAL file; returns the older files (deletable once checkpointed)."""
        old = self.files()
        self._open(self.dir / f"{next_seq:020d}.wal")
        return [p for p in old if p != self.path]

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            finally:
                self._fh = None
