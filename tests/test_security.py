"""Encryption at rest, keys, rotation, tamper detection and ``aether verify`` (issue 5), on real files."""

from __future__ import annotations

import itertools
import json
import os
import stat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import aether
from aether.cli import app
from aether.errors import AetherError, CorruptionError, KeyRequiredError, TamperedError, WrongKeyError
from aether.security.keys import encode_key, generate_key, read_key_file, write_key_file
from aether.security.rotate import rotate_key
from tests._security_util import copy_store, find_secret, flip_byte, snapshot_files

DIM = 32
CANARY = "zebra-canary-7f3a"
TAG_CANARY = "tagcanary91"
META_CANARY = "metacanary42"
SUBJ_CANARY = "subjcanary55"
ATOM_CANARY = "atomcanary66"


def _known_vector(seed: int = 7) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _open(path: Path, key: bytes | None = None, **kw: object) -> aether.Memory:
    return aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), key=key, **kw)  # type: ignore[arg-type]


def _fill(mem: aether.Memory, vec: np.ndarray) -> list[str]:
    a = mem.add(
        f"{CANARY} lives at 12 Secret Street",
        subject=SUBJ_CANARY,
        tags={"who": TAG_CANARY},
        metadata={"note": META_CANARY},
        vector=vec,
        atom_id=ATOM_CANARY,
    )
    ids = mem.add_many(
        [{"content": f"bob note {i}", "subject": "bob", "tags": {"n": i}} for i in range(20)],
    )
    return [a.atom_id, *ids]


def _needles(vec: np.ndarray) -> list[bytes]:
    return [s.encode() for s in (CANARY, TAG_CANARY, META_CANARY, SUBJ_CANARY, ATOM_CANARY)] + [
        vec.astype(np.float32).tobytes(),
        vec.astype(np.float32)[:4].tobytes(),  # even a 16-byte slice of the vector
    ]


def test_encrypted_store_holds_no_plaintext(tmp_path: Path) -> None:
    key = generate_key()
    vec = _known_vector()
    root = tmp_path / "enc"
    mem = _open(root, key)
    ids = _fill(mem, vec)
    assert find_secret(root, _needles(vec)) == []  # WAL only
    mem.checkpoint()
    mem.correct(ids[0], f"{CANARY} moved to 3 Hidden Lane", vector=vec)  # a closing of a sealed row
    mem.checkpoint()
    from aether.index.bucketed import find_index

    idx = find_index(mem._engine)
    if idx is not None:  # force FAISS index files onto disk, sealed by the store codec
        idx.seal()
        mem.add("after checkpoint " + CANARY, subject=SUBJ_CANARY, vector=vec)
    assert find_secret(root, _needles(vec)) == []
    mem.close()
    assert find_secret(root, _needles(vec)) == []
    manifest = json.loads((root / "MANIFEST.json").read_bytes())
    assert manifest["encryption"]["mode"] == "aes-256-gcm"
    # the files are really there, and the data really comes back with the key
    kinds = {p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()}
    assert {"wal", "segments", "closings", "keys", "log", "MANIFEST.json"} <= kinds
    if idx is not None:
        assert "index" in kinds
    with _open(root, key) as mem2:
        got = mem2.get(ids[0])
        assert got is not None and "Hidden Lane" in got.content.inline
        assert got.tags == {"who": TAG_CANARY} and got.metadata == {"note": META_CANARY}
        assert got.subject == SUBJ_CANARY
        hit = mem2.search(vec, k=1)[0]
        assert hit.atom.atom_id in (ids[0],) or CANARY in hit.atom.content.inline
        assert len(mem2.history(ids[0])) >= 2


def test_unencrypted_control_shows_the_canary(tmp_path: Path) -> None:
    """The scanner finds what an unencrypted store holds (so the test above means something)."""
    vec = _known_vector()
    root = tmp_path / "plain"
    with _open(root) as mem:
        _fill(mem, vec)
        assert find_secret(root, [CANARY.encode()])  # in the WAL
    hits = find_secret(root, _needles(vec))
    assert any(CANARY[:10] in h or "segments" in h for h in hits)
    assert json.loads((root / "MANIFEST.json").read_bytes())["encryption"]["mode"] == "none"


def test_missing_and_wrong_key_write_nothing(tmp_path: Path) -> None:
    key = generate_key()
    root = tmp_path / "s"
    with _open(root, key) as mem:
        mem.add("hello", subject="a")
    before = snapshot_files(root)
    with pytest.raises(KeyRequiredError):
        _open(root)
    with pytest.raises(WrongKeyError):
        _open(root, generate_key())
    with pytest.raises(WrongKeyError):
        _open(root, generate_key(), read_only=True)
    assert snapshot_files(root) == before
    with pytest.raises(aether.InvalidInputError):
        _open(root, b"short")
    # an explicit key for a plain store is a mistake; AETHER_KEY set for other stores is not
    plain = tmp_path / "plain"
    _open(plain).close()
    with pytest.raises(aether.SecurityError):
        _open(plain, key)


def test_env_key_and_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    plain = tmp_path / "plain"
    _open(plain).close()
    monkeypatch.setenv("AETHER_KEY", encode_key(key))
    root = tmp_path / "s"
    with _open(root) as mem:  # created encrypted from the environment
        a = mem.add("from env", subject="x")
    with _open(plain) as mem:  # a plain store still opens plain
        assert not mem.stats().encrypted
    monkeypatch.delenv("AETHER_KEY")
    kf = tmp_path / "k.key"
    write_key_file(kf, key)
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    assert read_key_file(kf) == key
    with aether.open(root, embedder=aether.HashingEmbedder(dim=DIM), key_file=kf) as mem:
        assert mem.get(a.atom_id) is not None and mem.stats().encrypted
    monkeypatch.setenv("AETHER_KEY_FILE", str(kf))
    with _open(root) as mem:
        assert mem.get(a.atom_id) is not None


def _busy_encrypted_store(root: Path, key: bytes) -> list[str]:
    """Segments, closings, WAL records after the checkpoint, and log entries in two files."""
    mem = _open(root, key)
    ids = _fill(mem, _known_vector())
    mem.checkpoint()
    mem.correct(ids[1], "bob corrected")
    mem.checkpoint()
    from aether.index.bucketed import find_index

    idx = find_index(mem._engine)
    if idx is not None:  # FAISS index files on disk
        idx.seal()
        mem.checkpoint()
    for i in range(3):
        mem.add(f"tail {i}", subject="carol")
    mem._engine._wal.close()  # leave WAL records behind, as after a crash
    mem._engine._lock.release()
    return ids


@pytest.mark.parametrize(
    "kind", ["MANIFEST.json", "keys", "segments", "closings", "wal", "wal-last", "log", "index"]
)
def test_flipped_byte_in_each_kind_of_file(tmp_path: Path, kind: str) -> None:
    key = generate_key()
    src = tmp_path / "src"
    _busy_encrypted_store(src, key)
    root = copy_store(src, tmp_path / "copy")
    if kind == "MANIFEST.json":
        target = root / kind
        flip_byte(target)
    elif kind in ("wal", "wal-last"):
        target = sorted((root / "wal").glob("*.wal"))[-1]
        from aether.storage.wal import scan_frames

        frames, _ = scan_frames(target, target.read_bytes())
        assert len(frames) == 3
        off = frames[0][0] if kind == "wal" else frames[-1][0]
        flip_byte(target, off + 20)
    elif kind == "index":
        files = sorted((root / "index").rglob("*.faiss"))
        if not files:
            pytest.skip("no index files were written")
        flip_byte(files[0])
        # Index files are derived data: the store rebuilds them (never a wrong answer); verify reports it.
        report = aether.verify(root, key=key)
        assert any(p.file.startswith("index/") for p in report.problems), report.problems
        with _open(root, key) as mem:
            assert mem.stats().versions > 0
        return
    else:
        target = sorted((root / kind).iterdir())[-1]
        flip_byte(target)
    before = {k: v for k, v in snapshot_files(root).items() if k != "LOCK"}
    with pytest.raises(AetherError) as ei:
        _open(root, key)
    assert isinstance(ei.value, (CorruptionError, TamperedError)), ei.value
    assert {k: v for k, v in snapshot_files(root).items() if k != "LOCK"} == before  # nothing was cut
    report = aether.verify(root, key=key)
    assert not report.ok
    shown = [p.file for p in report.problems]
    expect = "wal" if kind == "wal-last" else kind
    assert any(f.startswith(expect) for f in shown) or (kind == "wal-last" and report.problems), (
        report.problems
    )
    if kind == "wal":
        assert any(p.offset is not None for p in report.problems)
    # the undamaged original verifies clean
    assert aether.verify(src, key=key).ok


def test_swapped_rows_fail_authentication(tmp_path: Path) -> None:
    """Swap two rows' ciphertexts inside a validly re-sealed segment: each row is bound to its place."""
    key = generate_key()
    root = tmp_path / "s"
    with _open(root, key) as mem:
        a = mem.add("alice secret", subject="alice")
        b = mem.add("bob secret", subject="alice")
        mem.checkpoint()
        codec = mem._engine.codec
        store_id = mem._engine.store_id
        manifest = json.loads((root / "MANIFEST.json").read_bytes())
    entry = manifest["segments"][0]
    rel = entry["file"]
    seg = root / rel
    plain = codec.open(seg.read_bytes(), f"file|{store_id}|{rel}".encode())
    table = pq.read_table(pa.BufferReader(plain))
    sealed = table.column("sealed").to_pylist()
    table = table.set_column(
        table.schema.get_field_index("sealed"), "sealed", pa.array(sealed[::-1], pa.binary())
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = codec.seal(sink.getvalue().to_pybytes(), f"file|{store_id}|{rel}".encode())
    seg.write_bytes(data)
    import crc32c

    from aether.storage import manifest as mf

    body = {k: v for k, v in manifest.items() if k != "checksum"}
    body["segments"][0].update(bytes=len(data), crc32c=crc32c.crc32c(data))
    mf.save(root, body)
    with pytest.raises(TamperedError):
        _open(root, key)
    report = aether.verify(root, key=key)
    assert {p.offset for p in report.problems if p.file == rel} == {0, 1}
    assert a.atom_id != b.atom_id


def test_key_rotation(tmp_path: Path) -> None:
    k1, k2 = generate_key(), generate_key()
    root = tmp_path / "s"
    with _open(root, k1) as mem:
        ids = _fill(mem, _known_vector())
        mem.checkpoint()
        ids.append(mem.add("in the WAL only", subject="dave").atom_id)
        mem._engine._wal.close()
        mem._engine._lock.release()
    data_files = {k: v for k, v in snapshot_files(root).items() if not k.startswith(("keys", "LOCK"))}
    assert rotate_key(root, k1, k2) >= 3
    assert {k: v for k, v in snapshot_files(root).items() if not k.startswith(("keys", "LOCK"))} == data_files
    with pytest.raises(WrongKeyError):
        _open(root, k1)
    with _open(root, k2) as mem:
        for atom_id in ids:
            assert mem.get(atom_id) is not None
    with pytest.raises(WrongKeyError):
        rotate_key(root, k1, generate_key())
    # and through the CLI, with key files
    f2, f3 = tmp_path / "k2", tmp_path / "k3"
    write_key_file(f2, k2)
    runner = CliRunner()
    res = runner.invoke(app, ["keygen", str(f3)])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(f3.stat().st_mode) == 0o600
    assert runner.invoke(app, ["keygen", str(f3)]).exit_code != 0  # never overwrites a key
    res = runner.invoke(app, ["rotate-key", str(root), "--old-key-file", str(f2), "--new-key-file", str(f3)])
    assert res.exit_code == 0, res.output
    with _open(root, read_key_file(f3)) as mem:
        assert all(mem.get(i) is not None for i in ids)
    with pytest.raises(WrongKeyError):
        _open(root, k2)


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    key = generate_key()
    kf = tmp_path / "k"
    write_key_file(kf, key)
    root = tmp_path / "s"
    _busy_encrypted_store(root, key)
    runner = CliRunner()
    res = runner.invoke(app, ["verify", str(root), "--key-file", str(kf)])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and "log head" in res.output
    res = runner.invoke(app, ["verify", str(root)])  # no key: structure and CRCs only, with a warning
    assert res.exit_code == 0 and "not authenticated" in res.output
    wal = sorted((root / "wal").glob("*.wal"))[-1]
    at = flip_byte(wal, 30)
    res = runner.invoke(app, ["verify", str(root), "--key-file", str(kf), "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert any(
        p["file"].startswith("wal/") and p["offset"] is not None and p["offset"] <= at
        for p in doc["problems"]
    )


def test_log_chain_records_every_transaction(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with _open(root) as mem:
        for i in range(5):
            mem.add(f"x{i}")
            if i == 2:
                mem.checkpoint()
    lines = [json.loads(x) for p in sorted((root / "log").glob("*.log")) for x in p.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5]
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(lines))
    assert len(list((root / "log").glob("*.log"))) == 2
    # an edited entry is caught on verify and on open
    p = sorted((root / "log").glob("*.log"))[-1]
    p.write_text(p.read_text().replace('"tx":', '"tx":1', 1))
    assert not aether.verify(root).ok
    with pytest.raises(TamperedError):
        _open(root)


def test_lost_log_entries_are_rebuilt_from_the_wal(tmp_path: Path) -> None:
    root = tmp_path / "s"
    mem = _open(root)
    mem.add("one")
    mem.add("two")
    mem._engine._wal.close()
    mem._engine._lock.release()
    for p in (root / "log").glob("*.log"):
        p.unlink()  # a power cut before the log reached the disk
    with _open(root) as mem:
        mem.add("three")
    assert aether.verify(root).ok
    lines = [json.loads(x) for p in sorted((root / "log").glob("*.log")) for x in p.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3]


def test_reader_sees_subjects_created_after_it_opened(tmp_path: Path) -> None:
    key = generate_key()
    root = tmp_path / "s"
    with _open(root, key) as mem:
        mem.add("first", subject="a")
        reader = _open(root, key, read_only=True)
        b = mem.add("second", subject="brand-new-subject")
        reader.refresh()
        got = reader.get(b.atom_id)
        assert got is not None and got.content.inline == "second"
        reader.close()


def test_keygen_prints_a_key_without_a_file() -> None:
    res = CliRunner().invoke(app, ["keygen"])
    assert res.exit_code == 0
    assert len(read_key_bytes(res.output.strip())) == 32


def read_key_bytes(text: str) -> bytes:
    from aether.security.keys import parse_key

    return parse_key(text)


def test_state_snapshots_use_the_store_codec(tmp_path: Path) -> None:
    key = generate_key()
    root = tmp_path / "s"
    with _open(root, key) as mem:
        mgr = aether.StatePersistenceManager(mem)
        if not mgr.encrypted:
            pytest.skip("state manager does not take the store's codec")
        state = aether.ConsciousnessState(agent_id="agent-1", current_context={"secret": CANARY})
        assert mgr.persist(state).success
    assert find_secret(root, [CANARY.encode()]) == []


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AETHER_KEY", raising=False)
    monkeypatch.delenv("AETHER_KEY_FILE", raising=False)


def test_in_memory_store_ignores_files(tmp_path: Path) -> None:
    with aether.open(embedder=aether.HashingEmbedder(dim=DIM), key=generate_key()) as mem:
        a = mem.add("x", subject="s")
        assert mem.get(a.atom_id) is not None
    assert not os.listdir(tmp_path)


def test_encrypted_log_is_keyed(tmp_path: Path) -> None:
    """Without the key, a consistent-looking forged log entry (unkeyed hash recomputed) is caught."""
    import hashlib

    key = generate_key()
    root = tmp_path / "s"
    with _open(root, key) as mem:
        mem.add("a", subject="x")
        mem.add("b", subject="x")
    p = sorted((root / "log").glob("*.log"))[-1]
    lines = [json.loads(x) for x in p.read_text().splitlines()]
    forged = dict(lines[-1], tx=lines[-1]["tx"] + 1)
    body = {k: v for k, v in forged.items() if k != "hash"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    forged["hash"] = hashlib.blake2b(canon, digest_size=32, person=b"aether-log-v1").hexdigest()
    text = "".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in [*lines[:-1], forged])
    p.write_text(text)
    assert not aether.verify(root, key=key).ok
    # without the key the MAC cannot be checked, but the head recorded in the manifest still differs
    assert any("head" in pr.message for pr in aether.verify(root).problems)
    with pytest.raises(TamperedError):
        _open(root, key)


def test_a_really_torn_tail_is_still_recovered(tmp_path: Path) -> None:
    """A crash mid-append (no log entry yet) leaves a torn frame that recovery cuts off as before."""
    root = tmp_path / "s"
    mem = _open(root)
    a = mem.add("kept")
    mem._engine._wal.close()
    mem._engine._lock.release()
    wal = sorted((root / "wal").glob("*.wal"))[-1]
    with open(wal, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x01\x02\x03\x04partial")
    with _open(root) as mem:
        assert mem.get(a.atom_id) is not None
    assert aether.verify(root).ok
