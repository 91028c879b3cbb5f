"""Payloads (images, audio, video bytes) and STRUCTURED atoms: storage, time travel, limits, erasure."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import timedelta
from pathlib import Path

import pytest

import aether
from aether.errors import (
    AtomNotFoundError,
    CorruptionError,
    InvalidInputError,
    InvalidPayloadError,
    NoPayloadError,
    PayloadFileError,
)
from aether.payloads import blobs_of, check_content_type, live_digests, render_structured
from aether.storage import blobs as B

from ._security_util import files_of, find_secret
from .conftest import DIM, T0, FakeClock


def _open(path: Path | None, **kw: object) -> aether.Memory:
    return aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), **kw)  # type: ignore[arg-type]


def _blob_files(root: Path) -> list[Path]:
    return [p for p in files_of(root / "blobs") if p.parent.name != "tmp" and p.name != "SALT"]


# ---------------------------------------------------------------------- the blob area itself
def test_blob_roundtrip_chunked_compressed_and_deduplicated(tmp_path: Path) -> None:
    bs = B.BlobStore(tmp_path / "blobs", None, "store1")
    text = b"the same line again and again\n" * 200_000  # ~6 MB, 6 chunks, compressible
    digest, size = bs.put(iter([text[:12345], text[12345:]]))
    assert digest == hashlib.sha256(text).hexdigest() and size == len(text)
    assert bs.read(digest) == text
    (path,) = bs.files()
    assert path.stat().st_size < len(text) // 10  # zstd helped
    assert b"".join(iter(bs.open(digest).read, b"")) == text
    rnd = os.urandom(3 * B.CHUNK + 7)  # incompressible: stored raw
    d2, _ = bs.put(iter([rnd]))
    assert bs.read(d2) == rnd and bs.path_of(d2) is not None
    assert bs.path_of(d2).stat().st_size > len(rnd)  # type: ignore[union-attr]
    d3, _ = bs.put(iter([rnd]))  # the same bytes again: one file
    assert d3 == d2 and len(bs.files()) == 2
    empty, n = bs.put(iter([]))
    assert n == 0 and bs.read(empty) == b""
    assert not (tmp_path / "blobs" / "tmp").exists() or not list((tmp_path / "blobs" / "tmp").iterdir())


def test_blob_file_names_do_not_reveal_the_digest(tmp_path: Path) -> None:
    bs = B.BlobStore(tmp_path / "blobs", None, "s")
    digest, _ = bs.put(iter([b"hello"]))
    (path,) = bs.files()
    assert digest not in str(path) and digest[2:] not in path.name


@pytest.mark.parametrize("damage", ["flip", "truncate", "drop-footer", "swap"])
def test_damaged_blobs_are_detected(tmp_path: Path, damage: str) -> None:
    bs = B.BlobStore(tmp_path / "blobs", None, "s")
    data = os.urandom(2 * B.CHUNK + 100)
    digest, _ = bs.put(iter([data]))
    path = bs.path_of(digest)
    assert path is not None
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "drop-footer":
        raw = raw[: len(B.MAGIC) + 3 * (8 + 6 + B.CHUNK) - B.CHUNK + 100]
    else:  # the blob of other bytes under this digest's name
        other, _ = bs.put(iter([b"other bytes"]))
        op = bs.path_of(other)
        assert op is not None
        raw = bytearray(op.read_bytes())
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError):
        bs.read(digest)
    with pytest.raises(CorruptionError):
        bs.verify(digest)


def test_max_bytes_keeps_nothing(tmp_path: Path) -> None:
    bs = B.BlobStore(tmp_path / "blobs", None, "s")
    with pytest.raises(InvalidPayloadError):
        bs.put(iter([b"x" * 1000, b"y" * 1000]), max_bytes=1500)
    assert bs.files() == {}
    assert not list((tmp_path / "blobs" / "tmp").iterdir())


def test_streaming_write_needs_one_chunk_of_memory(tmp_path: Path) -> None:
    """A 64 MB payload from a file object: the writer never holds more than ~a chunk of it."""
    import tracemalloc

    bs = B.BlobStore(tmp_path / "blobs", None, "s")
    src = tmp_path / "big.bin"
    with open(src, "wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(1 << 20))
    tracemalloc.start()
    with open(src, "rb") as fh:
        digest, size = bs.put(B.iter_file(fh))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size == 64 << 20
    assert peak < 8 * B.CHUNK, peak
    h = hashlib.sha256()
    tracemalloc.start()
    with bs.open(digest) as r:
        while piece := r.read(1 << 16):
            h.update(piece)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert h.hexdigest() == digest
    assert peak < 8 * B.CHUNK, peak


# ---------------------------------------------------------------------- the API
def test_add_payload_from_bytes_path_and_file(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(20_000)
    f = tmp_path / "photo.png"
    f.write_bytes(png)
    with _open(tmp_path / "s") as mem:
        a = mem.add("a red square on white", payload=png, content_type="image/png")
        b = mem.add(payload=f)  # caption defaults to the file name, type guessed from it
        with open(f, "rb") as fh:
            c = mem.add("from a file object", payload=fh, modality="image", content_type="IMAGE/PNG")
        t = mem.add("plain text")
        for x in (a, b, c):
            assert x.modality == aether.MemoryModality.IMAGE
            assert x.content_type == "image/png" and x.size_bytes == len(png)
            assert x.payload_digest == hashlib.sha256(png).hexdigest()
            assert mem.payload(x.atom_id) == png
            assert x.content.metadata == {}
        assert b.text == "photo.png"
        assert t.content_type is None and t.size_bytes is None and t.payload_digest is None
        with pytest.raises(NoPayloadError):
            mem.payload(t.atom_id)
        with pytest.raises(AtomNotFoundError):
            mem.payload("no-such-atom")
        assert len(_blob_files(tmp_path / "s")) == 1  # three atoms, one stored copy
        hits = mem.search("red square", k=1, mode="dense")
        assert hits[0].atom_id == a.atom_id and hits[0].atom.payload_digest == a.payload_digest
    with _open(tmp_path / "s") as mem:  # durable, and read back after reopen
        got = mem.get(a.atom_id)
        assert got is not None and got.content_type == "image/png" and mem.payload(a.atom_id) == png
        with mem.open_payload(a.atom_id) as r:
            assert r.read() == png
        d = got.to_dict()
        assert d["payload_digest"] == a.payload_digest and aether.MemoryAtom.from_dict(d).size_bytes == len(png)


def test_payload_in_memory_store() -> None:
    with _open(None) as mem:
        a = mem.add("voice note", payload=b"RIFF....WAVE", content_type="audio/wav")
        assert a.modality == aether.MemoryModality.AUDIO
        assert mem.payload(a.atom_id) == b"RIFF....WAVE"


def test_bad_payload_input_is_typed_and_writes_nothing(tmp_path: Path) -> None:
    with _open(tmp_path / "s", max_payload_bytes=1000) as mem:
        n0 = mem.stats().versions
        with pytest.raises(PayloadFileError):
            mem.add("x", payload=tmp_path / "missing.png")
        with pytest.raises(PayloadFileError):
            mem.add("x", payload=tmp_path)  # a folder
        for bad in ("png", "image/", "/png", "image/png/x", "ima ge/png", "", 7):
            with pytest.raises(InvalidPayloadError):
                mem.add("x", payload=b"abc", content_type=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidPayloadError):
            mem.add("x", payload=b"a" * 1001)
        with pytest.raises(InvalidPayloadError):
            mem.add("x", payload=12345)
        with pytest.raises(InvalidPayloadError):
            mem.add("x", payload=io.StringIO("text mode"))
        with pytest.raises(InvalidInputError):
            mem.add("x", content_type="image/png")  # no payload
        with pytest.raises(InvalidInputError):
            mem.add("x", payload=b"abc", content_metadata={"aether:payload": {"sha256": "0" * 64}})
        with pytest.raises(InvalidInputError):
            mem.add("", payload=b"abc")  # the row is checked before any byte is written
        assert mem.stats().versions == n0
        assert _blob_files(tmp_path / "s") == []
        assert mem.add("ok", payload=b"a" * 1000).size_bytes == 1000
    with pytest.raises(InvalidInputError):
        _open(tmp_path / "s", max_payload_bytes=0)
    assert check_content_type("Text/Plain; charset=utf-8") == "text/plain; charset=utf-8"


def test_unreadable_file_is_a_typed_error(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            raise OSError(5, "Input/output error")

    with _open(tmp_path / "s") as mem:
        with pytest.raises(PayloadFileError):
            mem.add("x", payload=Broken())
        assert mem.stats().versions == 0 and _blob_files(tmp_path / "s") == []
        assert not list((tmp_path / "s" / "blobs" / "tmp").iterdir())


def test_corrections_keep_or_replace_the_payload_and_history_shows_which(tmp_path: Path) -> None:
    clock = FakeClock()
    one, two = os.urandom(5000), os.urandom(7000)
    with _open(tmp_path / "s", clock=clock) as mem:
        a = mem.add("first caption", payload=one, content_type="image/jpeg", valid_from=T0,
                    content_metadata={"camera": "x100"})
        t1 = mem.last_commit
        kept = mem.correct(a.atom_id, "better caption")
        assert kept.payload_digest == a.payload_digest and kept.content.metadata == {"camera": "x100"}
        t2 = mem.last_commit
        new = mem.correct(a.atom_id, payload=two, content_type="image/webp")
        assert new.text == "better caption" and new.content_type == "image/webp" and new.size_bytes == 7000
        assert new.content.metadata == {"camera": "x100"}
        t3 = mem.last_commit
        gone = mem.correct(a.atom_id, payload=None)
        assert gone.payload_digest is None and gone.content_type is None
        with pytest.raises(NoPayloadError):
            mem.payload(a.atom_id)
        assert mem.payload(a.atom_id, as_of=t1) == one
        assert mem.payload(a.atom_id, as_of=t2) == one
        assert mem.payload(a.atom_id, as_of=t3) == two
        digests = [v.payload_digest for v in mem.history(a.atom_id) if v.tx_to is not None or v is not None]
        sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
        assert sha(one) in digests and sha(two) in digests and None in digests
        # a valid-time bounded correction: the old payload still holds before it
        b = mem.add("timeline", payload=one, valid_from=T0)
        mem.correct(b.atom_id, payload=two, valid_from=T0 + timedelta(days=10))
        assert mem.payload(b.atom_id, valid_at=T0 + timedelta(days=1)) == one
        assert mem.payload(b.atom_id, valid_at=T0 + timedelta(days=11)) == two
        with pytest.raises(PayloadFileError):
            mem.correct(b.atom_id, payload=tmp_path / "missing")
        with pytest.raises(AtomNotFoundError):
            mem.correct("nope", payload=b"x")


# ---------------------------------------------------------------------- structured atoms
def test_structured_atoms_roundtrip_render_and_filter(tmp_path: Path) -> None:
    ticket = {"status": "open", "priority": 2, "title": "disk full on node seven", "labels": ["ops"],
              "owner": {"name": "kim"}, "urgent": True}
    with _open(tmp_path / "s") as mem:
        a = mem.add(ticket)
        b = mem.add({"status": "closed", "priority": 2, "title": "printer jam"})
        mem.add("status open priority 2 as plain text")
        assert a.modality == aether.MemoryModality.STRUCTURED and a.data == ticket
        assert a.content_type == "application/json"
        assert a.text == render_structured(ticket)
        assert render_structured(dict(reversed(list(ticket.items())))) == a.text  # key order does not matter
        assert a.text.splitlines()[0] == 'labels: ["ops"]'
        got = mem.get(a.atom_id)
        assert got is not None and got.data == ticket
        hits = mem.search("status", k=10, where={"status": "open"}, mode="dense")
        assert [h.atom_id for h in hits] == [a.atom_id]
        hits = mem.search("anything", k=10, where={"priority": 2}, mode="dense")
        assert {h.atom_id for h in hits} == {a.atom_id, b.atom_id}
        assert mem.search("x", k=10, where={"urgent": True, "status": "closed"}, mode="dense") == []
        assert [h.atom_id for h in mem.search_many(["x"], k=5, where={"status": "closed"}, mode="dense")[0]] == [
            b.atom_id]
        assert mem.explain("x", where={"status": "open"}).tags == {"$.status": "open"}
        # corrections: a new object moves the field tags along; caller tags are kept
        mem.correct(b.atom_id, tags={"team": "it"})
        c = mem.correct(b.atom_id, {"status": "open", "priority": 1, "title": "printer jam"})
        assert c.data == {"status": "open", "priority": 1, "title": "printer jam"} and c.tags["team"] == "it"
        assert {h.atom_id for h in mem.search("x", k=10, where={"status": "open"}, mode="dense")} == {
            a.atom_id, b.atom_id}
        with pytest.raises(InvalidInputError):
            mem.correct(b.atom_id, "plain text for a structured atom")
        for bad in ({}, {"x": float("nan")}, {"x": object()}):
            with pytest.raises(InvalidInputError):
                mem.add(bad)
    with _open(tmp_path / "s") as mem:
        got = mem.get(a.atom_id)
        assert got is not None and got.data == ticket


def test_structured_keyword_search(tmp_path: Path) -> None:
    pytest.importorskip("tantivy")
    with _open(tmp_path / "s") as mem:
        a = mem.add({"error": "ECONNRESET", "service": "billing"})
        mem.add({"error": "timeout", "service": "search"})
        hits = mem.search("ECONNRESET", k=1, mode="keyword")
        assert hits and hits[0].atom_id == a.atom_id


# ---------------------------------------------------------------------- erasure and compaction
@pytest.mark.parametrize("encrypted", [False, True])
def test_erase_and_compact_remove_payload_bytes_from_disk(tmp_path: Path, encrypted: bool) -> None:
    key = os.urandom(32) if encrypted else None
    root = tmp_path / "s"
    secret = os.urandom(40_000)  # incompressible: a plain store keeps the bytes verbatim
    shared = os.urandom(30_000)
    needles = [secret[1000:1064], secret[-64:]]
    with aether.open(root, embedder=aether.HashingEmbedder(dim=DIM), key=key) as mem:
        a = mem.add("alice's photo", payload=secret, content_type="image/png", subject="alice")
        s1 = mem.add("shared one", payload=shared, subject="alice")
        s2 = mem.add("shared two", payload=shared, subject="bob")
        mem.checkpoint()
        if not encrypted:
            assert find_secret(root, needles)  # the scanner sees the payload before the erasure
        else:
            assert find_secret(root, needles) == []  # sealed with the store key
            assert mem.payload(a.atom_id) == secret
        assert len(_blob_files(root)) == 2
        res = mem.erase(subject="alice")
        assert res.versions == 2
        assert find_secret(root, needles) == [], "erased payload still on disk right after the erasure"
        assert len(_blob_files(root)) == 1  # the shared blob stays: bob's atom still names it
        assert mem.payload(s2.atom_id) == shared
        assert mem.get(s1.atom_id) is None
        mem.compact()
        assert find_secret(root, needles) == []
        assert mem.payload(s2.atom_id) == shared
        mem.erase(atom_id=s2.atom_id)
        mem.compact()
        assert _blob_files(root) == []
    with aether.open(root, embedder=aether.HashingEmbedder(dim=DIM), key=key) as mem:
        assert mem.get(a.atom_id) is None and live_digests(mem._engine) == set()


def test_a_corrected_away_payload_stays_for_history_until_retention(tmp_path: Path) -> None:
    clock = FakeClock()
    with _open(tmp_path / "s", clock=clock) as mem:
        old = os.urandom(4000)
        a = mem.add("pic", payload=old)
        t1 = mem.last_commit
        # the whole valid interval restated: only history (as-of t1) still names the old bytes
        mem.correct(a.atom_id, payload=os.urandom(4000), valid_from=a.valid_from)
        mem.compact()
        assert mem.payload(a.atom_id, as_of=t1) == old  # history needs it
        assert len(_blob_files(tmp_path / "s")) == 2
        clock.now += 10**9
        mem.compact(retain=timedelta(seconds=1))  # versions retired before the horizon go
        assert len(_blob_files(tmp_path / "s")) == 1


def test_compaction_removes_orphans_of_a_write_that_never_committed(tmp_path: Path) -> None:
    with _open(tmp_path / "s") as mem:
        mem.add("kept", payload=b"kept bytes")
        bs = blobs_of(mem._engine)
        digest, _ = bs.put(iter([b"orphan bytes"]))  # as if the process died before the commit
        mem.compact()
        assert bs.exists(digest)  # pinned: its commit could still be on its way
        bs.release(digest)
        mem.compact()
        assert not bs.exists(digest)
        assert len(_blob_files(tmp_path / "s")) == 1


def test_verify_checks_blob_digests(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with _open(root) as mem:
        a = mem.add("pic", payload=os.urandom(10_000), content_type="image/png")
        digest = a.payload_digest
    report = aether.verify(root)
    assert report.ok, report.problems
    assert report.checked.get("blobs") == 1
    (p,) = _blob_files(root)
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))
    report = aether.verify(root)
    assert not report.ok and any("blob" in str(x) for x in report.problems)
    p.unlink()
    report = aether.verify(root)
    assert not report.ok and any(digest is not None and "missing" in str(x) for x in report.problems)


def test_encrypted_store_verify_and_a_read_only_reader(tmp_path: Path) -> None:
    root = tmp_path / "s"
    key = os.urandom(32)
    data = os.urandom(50_000)
    with aether.open(root, embedder=aether.HashingEmbedder(dim=DIM), key=key) as mem:
        a = mem.add("sealed picture", payload=data, content_type="image/png", subject="carol")
        with aether.open(root, embedder=aether.HashingEmbedder(dim=DIM), key=key, read_only=True) as reader:
            assert reader.payload(a.atom_id) == data
            b = mem.add("written after the reader opened", payload=b"later")
            reader.refresh()
            assert reader.payload(b.atom_id) == b"later"
            with pytest.raises(aether.ReadOnlyError):
                reader.add("no", payload=b"x")
    report = aether.verify(root, key=key)
    assert report.ok, [str(p) for p in report.problems]
    assert report.checked.get("blobs") == 2
    assert find_secret(root, [data[:64], data[-64:]]) == []
    with aether.open(root, embedder=aether.HashingEmbedder(dim=DIM), key=key) as mem:
        mem.erase(subject="carol")
        assert mem.get(a.atom_id) is None
    report = aether.verify(root, key=key)
    assert report.ok and report.checked.get("blobs") == 1, [str(p) for p in report.problems]


def test_a_time_travel_view_reads_the_payload_it_pins(tmp_path: Path) -> None:
    with _open(tmp_path / "s", clock=FakeClock()) as mem:
        one, two = b"first bytes", b"second bytes"
        a = mem.add("pic", payload=one, valid_from=T0)
        v = mem.view(as_of=mem.last_commit)
        mem.correct(a.atom_id, payload=two, valid_from=T0)
        assert v.payload(a.atom_id) == one and mem.payload(a.atom_id) == two
        with v.open_payload(a.atom_id) as r:
            assert r.read() == one
        with pytest.raises(aether.ReadOnlyError):
            v.add("x", payload=b"y")
