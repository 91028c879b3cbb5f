"""``aether verify``: check every file of a store without opening it for writing.

Checks the manifest checksum; each segment and closings file named by the manifest (size,
CRC32C, with a key: AES-GCM authentication of the file and of every row, Parquet structure,
row counts, version ranges); every WAL frame (CRC32C, with a key: authentication, decoding,
sequence continuity); the hash-chained log (entry hashes, links, sequence, the manifest's recorded
head, and the WAL payload digests of records still in the WAL); the keyring (checksum, with a
key: the key verifier and every wrapped key); and every index catalog and index file named by it.
Each problem names its file and, where it applies, the byte offset (or the row).

On a live store (a writer committing, checkpointing or compacting meanwhile) the files are not
read at one instant, so a check can see, say, a log entry whose WAL record it read before the
writer appended it. A check that finds problems is therefore repeated while the store's files
change under it; findings are reported only from a check during which nothing changed. If the
store never holds still, the report says it is *busy* (``busy``, ``ok`` false, no problems) rather
than calling a healthy store damaged.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c
import numpy as np

from ..errors import AetherError, CorruptionError, TamperedError, WrongKeyError
from ..storage import manifest as mf
from ..storage.codec import Codec, PlainCodec
from ..storage.segments import read_table
from ..storage.wal import decode_payload, scan_frames
from .chain import check_links, payload_digest, read_entries
from .codec import AeadCodec
from .keyring import parse as parse_keyring
from .keys import resolve_key


@dataclass
class Problem:
    """One finding: the file (relative to the store), the byte offset or row where it applies, what."""

    file: str
    offset: int | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f" @ {self.offset}" if self.offset is not None else "")
        return f"{where}: {self.message}"


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`; ``ok`` is true when there is no problem (warnings allowed)."""

    path: str
    encrypted: bool = False
    #: ciphertexts were authenticated (an encrypted store checked with its key)
    authenticated: bool = False
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    #: the last entry of the hash-chained log: ``{"seq": ..., "hash": ...}``
    log_head: dict[str, Any] | None = None
    #: the store changed during every check (a writer is active): findings could not be confirmed
    busy: bool = False
    #: how many times the store was checked (more than one: it changed during a check that found problems)
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return not self.problems and not self.busy

    def _count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n


class _V:
    def __init__(self, root: Path, report: VerifyReport) -> None:
        self.root = root
        self.r = report

    def rel(self, p: Path | str) -> str:
        try:
            return str(Path(p).relative_to(self.root))
        except ValueError:
            return str(p)

    def bad(self, file: Path | str, offset: int | None, msg: str) -> None:
        self.r.problems.append(Problem(self.rel(file), offset, msg))

    def warn(self, file: Path | str, offset: int | None, msg: str) -> None:
        self.r.warnings.append(Problem(self.rel(file), offset, msg))


def _crc_ok(v: _V, entry: dict[str, Any], owner: str = "the manifest") -> bool:
    p = v.root / entry["file"]
    try:
        data = p.read_bytes()
    except OSError as exc:
        v.bad(p, None, f"listed in {owner} but unreadable: {exc.strerror or exc}")
        return False
    if len(data) != entry.get("bytes") or crc32c.crc32c(data) != entry.get("crc32c"):
        v.bad(p, None, f"size or CRC32C differs from {owner}")
        return False
    return True


def verify(path: str | os.PathLike[str], *, key: Any = None, key_file: Any = None) -> VerifyReport:
    """Check a store's files; see the module docstring.

    Parameters
    ----------
    path
        The store directory.
    key, key_file
        The master key (else ``AETHER_KEY``); without it an encrypted store's CRCs, structure and
        log are checked but ciphertexts are not authenticated (a warning says so).

    Returns
    -------
    VerifyReport
        ``ok`` when nothing is wrong; ``busy`` when a writer kept changing the store during every
        check that found something (the findings are then warnings, never problems).
    """
    root = Path(path)
    master = resolve_key(key, key_file)
    deadline = time.monotonic() + _LIVE_SECONDS
    attempt = 0
    while True:
        attempt += 1
        before = _fingerprint(root)
        try:
            report = _verify_once(root, master)
        except OSError as exc:  # a file listed a moment ago is gone (a writer removed it)
            report = VerifyReport(path=str(root), problems=[Problem(".", None, f"unreadable: {exc}")])
        report.attempts = attempt
        if not report.problems or _fingerprint(root) == before:
            return report  # clean, or the files held still during the whole check: the findings are real
        if attempt >= _LIVE_ATTEMPTS or time.monotonic() > deadline:
            report.busy = True
            report.warnings += [
                Problem(p.file, p.offset, f"unconfirmed (the store changed during the check): {p.message}")
                for p in report.problems
            ]
            report.problems = []
            return report
        time.sleep(min(0.2, 0.01 * attempt))


#: A check that found problems while the store changed is repeated up to this many times ...
_LIVE_ATTEMPTS = 20
#: ... or for about this long.
_LIVE_SECONDS = 10.0


def _fingerprint(root: Path) -> list[tuple[Any, ...]]:
    """What changes whenever a writer commits, checkpoints, compacts, re-indexes or rotates keys."""
    out: list[tuple[Any, ...]] = []
    for top, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            try:
                st = os.stat(os.path.join(top, name), follow_symlinks=False)
            except OSError:
                out.append((top, name, None))
                continue
            out.append((top, name, st.st_ino, st.st_size, st.st_mtime_ns))
    return out


def _verify_once(root: Path, master: bytes | None) -> VerifyReport:
    report = VerifyReport(path=str(root))
    v = _V(root, report)
    try:
        body = mf.load(root)
        report._count("manifest")
    except AetherError as exc:
        v.bad(root / mf.NAME, None, str(exc))
        _check_log(v, None, {}, check_hashes=False)
        return report
    enc = (body.get("encryption") or {}).get("mode", "none")
    report.encrypted = enc != "none"
    codec: Codec | None = PlainCodec()
    if report.encrypted:
        codec = _check_keyring(v, body, master)
    elif (root / "keys").exists() and any((root / "keys").iterdir()):
        v.warn(root / "keys", None, "unencrypted store has a keys/ folder")
    report.authenticated = report.encrypted and codec is not None

    vids = _check_segments(v, body, codec)
    _check_closings(v, body, codec, vids)
    wal = _check_wal(v, body, codec)
    keyed = isinstance(codec, AeadCodec)
    _check_log(
        v,
        body,
        wal,
        mac_key=codec.log_key() if isinstance(codec, AeadCodec) else None,
        check_hashes=keyed or not report.encrypted,
    )
    _check_indexes(v, body, codec)
    _check_orphans(v, body)
    _check_blobs(v, body, codec)
    return report


def _numbered(d: Path, pattern: str) -> list[Path]:
    """Files named ``<number>.<ext>`` in numeric order."""
    if not d.is_dir():
        return []
    return sorted(d.glob(pattern), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)


def _check_keyring(v: _V, body: dict[str, Any], master: bytes | None) -> Codec | None:
    p = v.root / "keys" / "keyring.json"
    try:
        parse_keyring(p.read_bytes(), v.rel(p))
        v.r._count("keyring")
    except OSError as exc:
        v.bad(p, None, f"encrypted store without a readable keyring: {exc.strerror or exc}")
        return None
    except CorruptionError as exc:
        v.bad(p, None, str(exc))
        return None
    if master is None:
        v.warn(v.root, None, "encrypted store checked without a key: ciphertexts were not authenticated")
        return None
    codec = AeadCodec(master)
    try:
        codec.bind(v.root, body, read_only=True)
    except WrongKeyError as exc:
        v.bad(p, None, str(exc))
        return None
    except (TamperedError, CorruptionError) as exc:
        v.bad(p, None, str(exc))
        return None
    return codec


def _tables(v: _V, body: dict[str, Any], kind: str, codec: Codec | None) -> Iterator[tuple[Any, dict[str, Any], Any]]:
    """Each ``segments`` / ``closings`` file whose CRC holds and which decodes: ``(path, entry, table)``.

    Files are counted; a failure is reported and the file skipped. Without a codec (no key given for
    an encrypted store) only the CRCs are checked.
    """
    for entry in body[kind]:
        p = v.root / entry["file"]
        if not _crc_ok(v, entry):
            continue
        v.r._count(kind)
        if codec is None:
            continue
        try:
            table = read_table(v.root, entry, codec, body["store_id"])
        except CorruptionError as exc:
            v.bad(p, None, str(exc))
            continue
        yield p, entry, table


def _check_segments(v: _V, body: dict[str, Any], codec: Codec | None) -> set[int]:
    vids: set[int] = set()
    last = -1
    for p, entry, table in _tables(v, body, "segments", codec):
        ids = np.asarray(table.column("version_id").to_numpy(), np.int64)
        if len(ids):
            if np.any(np.diff(ids) <= 0) or ids[0] <= last:
                v.bad(p, None, "version ids are not strictly increasing across segments")
            if entry.get("min_version", ids[0]) != ids[0] or entry.get("max_version", ids[-1]) != ids[-1]:
                v.bad(p, None, "version range differs from the manifest")
            last = int(ids[-1])
        vids.update(int(x) for x in ids)
        v.r._count("rows", len(ids))
        if v.r.encrypted and "sealed" not in table.schema.names and table.num_rows:
            v.bad(p, None, "segment of an encrypted store holds unsealed rows (not under any subject key)")
        if "sealed" in table.schema.names and isinstance(codec, AeadCodec):
            # Authenticate row by row so that each bad row is reported with its position.
            for i in range(table.num_rows):
                try:
                    codec.open_rows(table.slice(i, 1))
                except TamperedError as exc:
                    v.bad(p, i, f"row {i}: {exc}")
    return vids


def _check_closings(v: _V, body: dict[str, Any], codec: Codec | None, vids: set[int]) -> None:
    for p, _entry, table in _tables(v, body, "closings", codec):
        for i, vid in enumerate(table.column("version_id").to_pylist()):
            if vids and vid not in vids:
                v.bad(p, i, f"row {i}: closes version {vid}, which no segment holds")


def _check_wal(v: _V, body: dict[str, Any], codec: Codec | None) -> dict[int, tuple[str, int, str]]:
    """WAL records by seq: (file, offset, payload digest)."""
    out: dict[int, tuple[str, int, str]] = {}
    wal_dir = v.root / "wal"
    files = _numbered(wal_dir, "*.wal")
    expected = int(body["checkpoint"]["seq"]) + 1
    store_id = body["store_id"]
    for fi, path in enumerate(files):
        try:
            data = path.read_bytes()
            frames, torn = scan_frames(path, data)
        except OSError as exc:
            v.bad(path, None, f"unreadable: {exc}")
            continue
        except CorruptionError as exc:
            v.bad(path, exc.offset, str(exc).split(" [")[0])
            continue
        v.r._count("wal_files")
        if torn is not None:
            msg = "incomplete last record (a torn write; cut off when the store is next opened)"
            (v.warn if fi == len(files) - 1 else v.bad)(path, torn, msg)
        for offset, payload in frames:
            v.r._count("wal_records")
            if codec is None:
                continue
            aad = f"wal|{store_id}|{path.name}|{offset}".encode()
            try:
                header, _ = decode_payload(codec.open(payload, aad), path, offset, codec)
            except TamperedError as exc:
                v.bad(path, offset, f"WAL record fails authentication: {exc}")
                continue
            except CorruptionError as exc:
                v.bad(path, offset, str(exc).split(" [")[0])
                continue
            seq = int(header["seq"])
            if seq >= expected:
                if seq != expected:
                    v.bad(path, offset, f"WAL sequence gap: expected {expected}, found {seq}")
                expected = seq + 1
            out[seq] = (v.rel(path), offset, payload_digest(payload))
        if codec is None:  # without a key the seq is unreadable: match the log by payload digest
            for offset, payload in frames:
                out[-(len(out) + 1)] = (v.rel(path), offset, payload_digest(payload))
    return out


def _check_log(
    v: _V,
    body: dict[str, Any] | None,
    wal: dict[int, tuple[str, int, str]],
    *,
    mac_key: bytes | None = None,
    check_hashes: bool = True,
) -> None:
    log_dir = v.root / "log"
    files = _numbered(log_dir, "*.log")
    flat: list[tuple[str, int, dict[str, Any]]] = []
    for fi, path in enumerate(files):
        try:
            entries, problems, torn = read_entries(path, mac_key, check_hashes=check_hashes)
        except OSError as exc:
            v.bad(path, None, f"unreadable: {exc}")
            continue
        v.r._count("log_files")
        for pr in problems:
            v.bad(path, pr.offset, pr.message)
        if torn is not None:
            (v.warn if fi == len(files) - 1 else v.bad)(path, torn, "incomplete last log entry")
        flat += [(v.rel(path), off, e) for off, e in entries]
    v.r._count("log_entries", len(flat))
    head = body.get("log") if body else None
    for pr in check_links(flat, head):
        v.bad(pr.file, pr.offset, pr.message)
    if flat:
        v.r.log_head = {"seq": flat[-1][2]["seq"], "hash": flat[-1][2]["hash"]}
    if body is None:
        return
    ck = int(body["checkpoint"]["seq"])
    if any(s < 0 for s in wal):
        # No key: WAL headers are unreadable, so match log entries past the checkpoint by digest.
        digests = {d for _, _, d in wal.values()}
        for f, off, e in flat:
            if e["seq"] > ck and e["payload"] not in digests:
                v.bad(f, off, f"log entry {e['seq']} has no matching WAL record (record lost or changed)")
        return
    by_seq = {e["seq"]: (f, off, e) for f, off, e in flat}
    for seq, (wf, woff, digest) in sorted(wal.items()):
        if seq in by_seq:
            f, off, e = by_seq[seq]
            if e["payload"] != digest:
                v.bad(wf, woff, f"WAL record {seq} differs from its hash-chained log entry ({f} @ {off})")
        elif seq > ck:
            v.warn(wf, woff, f"WAL record {seq} has no log entry yet (added when the store is next opened)")
    top = max([ck, *wal])
    for f, off, e in flat:
        if e["seq"] > top:
            v.bad(f, off, f"log records transaction {e['seq']}, but the store ends at {top} (records lost)")
            break


def _check_indexes(v: _V, body: dict[str, Any], codec: Codec | None) -> None:
    idx = v.root / "index"
    if not idx.is_dir():
        return
    for cat in sorted(idx.glob("*/CATALOG.json")):
        try:
            doc = json.loads(cat.read_bytes())
            sub = {k: x for k, x in doc.items() if k != "checksum"}
            canon = json.dumps(sub, sort_keys=True, separators=(",", ":")).encode()
            if crc32c.crc32c(canon) != doc.get("checksum"):
                v.bad(cat, None, "index catalog checksum mismatch")
                continue
        except (OSError, ValueError, AttributeError) as exc:
            v.bad(cat, None, f"unreadable index catalog: {exc}")
            continue
        v.r._count("index_catalogs")
        for entry in _file_entries(sub):
            p = v.root / entry["file"]
            if not _crc_ok(v, entry, owner=f"the index catalog {v.rel(cat)}"):
                continue
            v.r._count("index_files")
            if isinstance(codec, AeadCodec):
                try:
                    codec.open(p.read_bytes(), f"index|{body['store_id']}|{entry['file']}".encode())
                except TamperedError as exc:
                    v.bad(p, None, f"index file fails authentication: {exc}")


def _file_entries(obj: Any) -> list[dict[str, Any]]:
    """Every ``{"file", "bytes", "crc32c"}`` dict nested anywhere in a catalog."""
    out: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        if isinstance(obj.get("file"), str) and "crc32c" in obj and "bytes" in obj:
            out.append(obj)
        for x in obj.values():
            out += _file_entries(x)
    elif isinstance(obj, list):
        for x in obj:
            out += _file_entries(x)
    return out


def _check_blobs(v: _V, body: dict[str, Any], codec: Codec | None) -> None:
    """Payload blobs: every blob file reads through to its digest, every one a live row names exists."""
    from ..models import PAYLOAD_KEY
    from ..storage.blobs import BlobStore
    from ..storage.rows import open_rows

    root = v.root / "blobs"
    if codec is None or not root.is_dir():
        return  # no blobs, or an encrypted store checked without its key (files unreadable)
    bs = BlobStore(root, codec, body["store_id"], read_only=True)
    erased = {int(x) for x in body.get("erased", [])}
    named: dict[str, int] = {}  # digest -> a version id naming it

    def note(vids: Any, metas: list[str]) -> None:
        for vid, m in zip(vids, metas, strict=True):
            if m and PAYLOAD_KEY in m:
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    named.setdefault(json.loads(m)[PAYLOAD_KEY]["sha256"], int(vid))

    for entry in body["segments"]:
        try:
            table = open_rows(read_table(v.root, entry, codec, body["store_id"]), codec)
        except AetherError:
            continue  # reported by the segment check
        note(table.column("version_id").to_pylist(), table.column("content_meta").to_pylist())
    for path in _numbered(v.root / "wal", "*.wal"):
        try:
            frames, _torn = scan_frames(path, path.read_bytes())
        except (OSError, AetherError):
            continue  # reported by the WAL check
        for offset, payload in frames:
            try:
                aad = f"wal|{body['store_id']}|{path.name}|{offset}".encode()
                header, rows = decode_payload(codec.open(payload, aad), path, offset, codec)
            except AetherError:
                continue
            erased.update(int(x) for x in header.get("erase", []))
            if rows is not None:
                note(rows.version_id.tolist(), rows.content_meta)
    found: set[str] = set()
    try:
        files = bs.files()
    except OSError as exc:
        v.bad(root, None, f"blob folder unreadable: {exc}")
        return
    for p in files:
        try:
            found.add(bs.check_file(p))
            v.r._count("blobs")
        except AetherError as exc:
            v.bad(p, None, f"payload blob fails its check: {exc}")
    for digest, vid in sorted(named.items()):
        if vid not in erased and digest not in found and not (bs.path_of(digest) or root).exists():
            v.bad(root, None, f"payload blob {digest} named by version {vid} is missing")
    for digest in sorted(found - set(named)):
        v.warn(bs.path_of(digest) or root, None, "payload blob no version names (removed by the next compaction)")


def _check_orphans(v: _V, body: dict[str, Any]) -> None:
    live = {e["file"] for e in body["segments"] + body["closings"]}
    for sub in ("segments", "closings"):
        d = v.root / sub
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if f"{sub}/{p.name}" not in live:
                    v.warn(
                        p,
                        None,
                        "not named by the manifest (left by an interrupted checkpoint; removed on open)",
                    )
