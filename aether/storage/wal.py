"""The write-ahead log: framed, checksummed transaction records, fsynced before a write returns.

File layout (``wal/<first-seq>.wal``)::

    b"AETHWAL1"                       8-byte file magic
    frame*                            one frame per committed transaction
    frame := u32 length | u32 crc32c(payload) | payload      (little-endian)
    payload (after the codec) := u32 header length | header JSON | Arrow IPC stream of inserted rows

A bad frame (a length that runs past the end of the file, or a checksum mismatch) with no
valid frame anywhere after it is a torn write from a crash and is cut off on recovery. A bad
frame followed by any valid frame is corruption in the middle of the log and raises
``CorruptionError`` naming the file and offset: acknowledged records after it are never
silently dropped. (A damaged or truncated *last* record cannot be told from a torn write;
like SQLite's WAL, it is discarded.)
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import pyarrow as pa

from ..errors import CorruptionError, TamperedError
from . import _fs
from ._fs import fsync_dir, io_errors
from .codec import Codec, PlainCodec
from .rows import RowBatch, open_rows, seal_rows

MAGIC = b"AETHWAL1"
_FRAME = struct.Struct("<II")
#: Larger declared lengths are treated as garbage rather than allocated.
MAX_RECORD = 1 << 31
#: The smallest payload a writer produces (the u32 header length); shorter frames are garbage.
MIN_RECORD = 4


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
    out = _encode_buffer(header, rows, codec)
    return out if isinstance(out, bytes) else out.to_pybytes()


def _encode_buffer(header: dict[str, Any], rows: RowBatch | None, codec: Codec | None) -> Any:
    """:func:`encode_payload` as bytes or an Arrow buffer (bulk records: written once, never copied)."""
    hdr = json.dumps(header, separators=(",", ":")).encode()
    if rows is None or not len(rows):
        return struct.pack("<I", len(hdr)) + hdr
    plain = rows.to_arrow()
    rows.extra["arrow"] = plain  # the in-memory table keeps it as the rows' text chunk (no second encoding)
    table = seal_rows(plain, codec)
    sink = pa.BufferOutputStream()
    sink.write(struct.pack("<I", len(hdr)) + hdr)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def decode_payload(
    payload: bytes, path: Path, offset: int, codec: Codec | None = None
) -> tuple[dict[str, Any], RowBatch | None]:
    """Inverse of :func:`encode_payload`; any malformation is a ``CorruptionError``."""
    try:
        (hlen,) = struct.unpack_from("<I", payload, 0)
        if hlen > len(payload) - 4:
            raise ValueError("header length past end of record")
        header = json.loads(payload[4 : 4 + hlen])
        _check_header(header)
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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_header(header: Any) -> None:
    """A checksummed header must still have the shape the engine applies (else: corruption)."""
    if not isinstance(header, dict) or not _is_int(header.get("seq")) or header["seq"] < 1:
        raise ValueError("record header is not a transaction header")
    if not _is_int(header.get("tx")):
        raise ValueError("record header has no transaction time")
    close = header.get("close", [])
    if not isinstance(close, list) or not all(
        isinstance(c, list) and len(c) == 2 and _is_int(c[0]) and _is_int(c[1]) for c in close
    ):
        raise ValueError("record header has malformed closings")


def _frame_ok(data: bytes, pos: int) -> bool:
    """A complete frame with a matching checksum starts at ``pos``."""
    if pos + _FRAME.size + MIN_RECORD > len(data):
        return False
    length, crc = _FRAME.unpack_from(data, pos)
    stop = pos + _FRAME.size + length
    return length >= MIN_RECORD and stop <= len(data) and crc32c.crc32c(data[pos + _FRAME.size : stop]) == crc


def _chains_to_end(buf: Any, end: int, q: np.ndarray) -> np.ndarray:
    """Candidates whose chain of declared frame lengths ends exactly at the end of the file.

    The frames after a damaged one do; random bytes (or a payload's own integers) almost never
    do, so only a handful of candidates are left to checksum.
    """
    keep = np.zeros(len(q), bool)
    alive = np.ones(len(q), bool)
    cur = q.copy()
    while alive.any():
        idx = np.flatnonzero(alive)
        c = cur[idx]
        room = c + _FRAME.size + MIN_RECORD <= end
        lengths = np.zeros(len(c), np.int64)
        cc = c[room]
        lengths[room] = buf[cc] | (buf[cc + 1] << 8) | (buf[cc + 2] << 16) | (buf[cc + 3] << 24)
        nxt = c + _FRAME.size + lengths
        ok = room & (lengths >= MIN_RECORD) & (nxt <= end)
        finished = ok & (nxt == end)
        keep[idx[finished]] = True
        alive[idx[~ok | finished]] = False
        cur[idx] = nxt
    return keep


def _valid_frame_after(data: bytes, start: int, *, chunk: int = 1 << 20) -> int | None:
    """Offset of the first complete, checksum-valid frame starting after ``start``, if any.

    A torn write leaves a prefix of one frame at the end of the file, so nothing valid can
    follow a torn frame; a valid frame after a bad one means the log was damaged in the middle.
    Scanned in chunks, checksumming only candidates whose frame chain ends the file exactly
    (bounded time and memory on a large log). Limit: a damaged length in the middle *and* a
    torn write at the end (two faults) is taken for a torn tail.
    """
    end = len(data)
    last = end - _FRAME.size - MIN_RECORD  # the last offset a frame could start at
    u8 = np.frombuffer(data, np.uint8)
    # Chain walks index bytes as int64: one copy of a small log, on-demand widening of a large one.
    wide: Any = u8.astype(np.int64) if end <= chunk * 4 else _Wide(data)
    for lo in range(start + 1, last + 1, chunk):
        hi = min(lo + chunk, last + 1)  # candidate offsets q in [lo, hi)
        b = u8[lo : hi + 3].astype(np.int64)
        n = hi - lo
        lengths = b[:n] | (b[1 : n + 1] << 8) | (b[2 : n + 2] << 16) | (b[3 : n + 3] << 24)
        q = np.arange(lo, hi, dtype=np.int64)
        ok = (lengths >= MIN_RECORD) & (q + _FRAME.size + lengths <= end)
        cand = q[ok]
        if len(cand):
            cand = cand[_chains_to_end(wide, end, cand)]
        for pos in cand:
            if _frame_ok(data, int(pos)):
                return int(pos)
    return None


class _Wide:
    """Index bytes of a large buffer as int64 on demand (no full int64 copy of a big log)."""

    def __init__(self, data: bytes) -> None:
        self._u8 = np.frombuffer(data, np.uint8)

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        return self._u8[idx].astype(np.int64)


def scan_frames(path: Path, data: bytes) -> tuple[list[tuple[int, bytes]], int | None]:
    """Split a WAL file into ``(offset, payload)`` frames.

    Returns the frames and, if the file ends in a torn frame, the offset to truncate at.

    Raises
    ------
    CorruptionError
        Bad magic, or a bad frame followed by a valid one (damage in the middle of the log).
    """
    if len(data) < len(MAGIC):
        if MAGIC.startswith(data):
            return [], (0 if data else None)  # a crash while the file was being started
        raise CorruptionError("not a WAL file (bad magic)", path=str(path), offset=0)
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptionError("not a WAL file (bad magic)", path=str(path), offset=0)
    frames: list[tuple[int, bytes]] = []
    pos = len(MAGIC)
    end = len(data)
    while pos < end:
        bad = ""
        if end - pos < _FRAME.size:
            bad = "truncated frame header"
        else:
            length, crc = _FRAME.unpack_from(data, pos)
            stop = pos + _FRAME.size + length
            if length < MIN_RECORD or length > MAX_RECORD:
                bad = f"implausible record length {length}"
            elif stop > end:
                bad = "record runs past the end of the file"
            elif crc32c.crc32c(data[pos + _FRAME.size : stop]) != crc:
                bad = "WAL record checksum mismatch"
        if bad:
            if not data[pos:].strip(b"\0"):
                return frames, pos  # zeros after the last record: a file extended but never written
            if bad.startswith("WAL record checksum") and stop < end:
                # A whole frame with more bytes after it: its write had returned (a later
                # write started only after its fsync), so this is damage, not a torn write.
                raise CorruptionError(f"{bad}, followed by more data at offset {stop}", path=str(path), offset=pos)
            if bad.startswith(("implausible", "record runs past")):
                later = _valid_frame_after(data, pos)
                if later is not None:
                    raise CorruptionError(
                        f"{bad}, followed by a valid record at offset {later}", path=str(path), offset=pos
                    )
            return frames, pos  # a torn tail from a crash: nothing acknowledged follows it
        frames.append((pos, data[pos + _FRAME.size : stop]))
        pos = stop
    return frames, None


#: Payloads at least this large run the observer on a helper thread, overlapping the write and fsync.
_OBSERVE_ASIDE = 1 << 20
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _observer_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="aether-wal")
        return _pool


def _pool_after_fork() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # the parent's worker thread does not exist here


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool_after_fork)


class WriteAheadLog:
    """Appends transaction records to the current WAL file and replays them on open."""

    def __init__(self, directory: Path, codec: Codec | None = None, *, store_id: str = "") -> None:
        self.dir = directory
        self.codec = codec or PlainCodec()
        self.store_id = store_id
        self._fh: Any = None
        self.path: Path | None = None
        #: End of the last acknowledged frame of ``path``; bytes past it are never acknowledged.
        self._end = 0
        self.last_payload = b""
        #: Run on each record's payload while it is written and fsynced (the hash chain's digest:
        #: hashing and the disk both release the GIL); its result is ``last_observed``.
        self.observer: Callable[[bytes], Any] | None = None
        self.last_observed: Any = None
        #: First sequence numbers (file names) of the files the last :meth:`read` listed.
        self.listed: list[int] = []

    def files(self) -> list[Path]:
        """WAL files in replay order."""
        if not self.dir.exists():
            return []
        return sorted((p for p in self.dir.glob("*.wal") if p.stem.isdigit()), key=lambda p: int(p.stem))

    def _aad(self, path: Path, offset: int) -> bytes:
        return f"wal|{self.store_id}|{path.name}|{offset}".encode()

    def read(self, *, repair: bool) -> Iterator[WalRecord]:
        """Yield every record of every WAL file; cut a torn tail when ``repair`` is set.

        The files are listed once, first (``listed``): a file named ``N`` starts at sequence
        number ``N``, so a caller can tell records that were never written from records whose
        file a checkpoint deleted after the caller read an older manifest.
        """
        files = self.files()
        self.listed = [int(p.stem) for p in files]
        for path in files:
            with io_errors("read", path):
                data = path.read_bytes()
            frames, torn_at = scan_frames(path, data)
            if torn_at is not None:
                if path != self.files()[-1]:
                    raise CorruptionError(
                        "truncated WAL file before the last one", path=str(path), offset=torn_at
                    )
                if repair:
                    with io_errors("truncate", path), open(path, "r+b") as fh:
                        fh.truncate(max(torn_at, len(MAGIC)) if torn_at >= len(MAGIC) else 0)
                        if torn_at < len(MAGIC):
                            fh.write(MAGIC)
                        fh.flush()
                        _fs.fsync_fd(fh.fileno())
            for offset, payload in frames:
                try:
                    plain = self.codec.open(payload, self._aad(path, offset))
                except TamperedError as exc:
                    raise CorruptionError(
                        f"WAL record fails authentication: {exc}", path=str(path), offset=offset
                    ) from None
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
        with io_errors("open", path):
            new = not path.exists() or path.stat().st_size == 0
            fh = open(path, "ab")
        try:
            with io_errors("open", path):
                if new:
                    _fs.write_all(fh, MAGIC)
                    _fs.fsync_fd(fh.fileno())
                end = fh.tell()
            if new:
                fsync_dir(self.dir)
        except BaseException:
            fh.close()
            raise
        self._fh = fh
        self.path = path
        self._end = end

    def append(self, header: dict[str, Any], rows: RowBatch | None) -> int:
        """Write one record and fsync it; returns the file offset it was written at."""
        self.ensure_open()
        assert self._fh is not None and self.path is not None, "WAL not open for append"
        offset = self._end
        raw = _encode_buffer(header, rows, self.codec)
        if self.codec.encrypted and not isinstance(raw, bytes):
            raw = raw.to_pybytes()
        payload = self.codec.seal(raw, self._aad(self.path, offset))
        self.last_payload = payload  # the security layer's hash chain records its digest
        frame = _FRAME.pack(len(payload), crc32c.crc32c(payload)) + payload
        obs = self.observer
        self.last_observed = None
        side = None
        if obs is not None and len(payload) >= _OBSERVE_ASIDE:
            with contextlib.suppress(RuntimeError):  # no thread (interpreter shutting down): run it after
                side = _observer_pool().submit(obs, payload)
        try:
            with io_errors("WAL append", self.path):
                _fs.write_all(self._fh, frame)
                _fs.fsync_fd(self._fh.fileno())
        except BaseException:
            # Leave no partial frame behind: the record was not acknowledged.
            self._rollback(offset)
            if side is not None:
                side.cancel()
            raise
        self._end = offset + len(frame)  # durable: nothing below may move the end back
        if obs is not None:
            # A failed observer leaves ``last_observed`` None: its user then computes the value itself.
            with contextlib.suppress(Exception):
                self.last_observed = side.result() if side is not None else obs(payload)
        return offset

    def _rollback(self, offset: int) -> None:
        """Cut the file back to ``offset`` after a failed append.

        If even that fails, the handle stays closed and :meth:`ensure_open` retries the cut
        before the next append, so a later record is never written after a partial frame
        (which recovery would have to treat as corruption or, worse, as a torn tail).
        """
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError, ValueError):
                fh.close()  # may flush the rest of the frame: it is cut off just below
        try:
            self._truncate_to(offset)
            self._fh = open(self.path, "ab")  # type: ignore[arg-type]
        except OSError:
            self._fh = None

    def _truncate_to(self, offset: int) -> None:
        assert self.path is not None
        with open(self.path, "r+b") as fh:
            fh.truncate(offset)
            fh.flush()
            _fs.fsync_fd(fh.fileno())

    def ensure_open(self) -> None:
        """Reopen after a failed append, first cutting anything past the last acknowledged frame."""
        if self._fh is None and self.path is not None:
            with io_errors("WAL reopen", self.path):
                if self.path.exists() and self.path.stat().st_size > self._end:
                    self._truncate_to(self._end)
            end = self._end
            self._open(self.path)
            if self._end != end and end:
                raise CorruptionError(
                    "WAL file changed size under the writer", path=str(self.path), offset=end
                )

    def rotate(self, next_seq: int) -> list[Path]:
        """Start a fresh WAL file; returns the older files (deletable once checkpointed)."""
        old = self.files()
        new = self.dir / f"{next_seq:020d}.wal"
        prev, prev_end = self.path, self._end
        try:
            self._open(new)
        except BaseException:
            # Keep appending to the old file; a half-started new file must not stay behind,
            # or a later rotation would leave it as a torn file before the last one.
            with contextlib.suppress(OSError):
                new.unlink(missing_ok=True)
            self.path, self._end = prev, prev_end
            raise
        return [p for p in old if p != self.path]

    def size(self) -> int:
        """Bytes of the WAL files; a file removed meanwhile (a writer's checkpoint, seen by a reader) counts 0."""
        total = 0
        for p in self.files():
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            finally:
                self._fh = None
