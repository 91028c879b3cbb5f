"""Reliability where processes and background work meet (issue 19).

Each race is widened deterministically with a hook or a barrier at the point where the
interleaving used to go wrong, so these tests fail on the old code every time, not by luck.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aether
from aether.engine import store as store_mod
from aether.errors import InvalidInputError

DIM = 16


def _emb() -> aether.HashingEmbedder:
    return aether.HashingEmbedder(dim=DIM)


@pytest.fixture
def hooks() -> Iterator[dict[str, object]]:
    yield store_mod.TEST_HOOKS  # type: ignore[misc]
    store_mod.TEST_HOOKS.clear()


# ------------------------------------------------------------------ 1. concurrent creation
def test_concurrent_creation_keeps_the_other_writers_store(tmp_path: Path, hooks: dict[str, object]) -> None:
    """A creator stalled just before taking the writer lock must not re-create a store another
    creator made (and committed 100 writes to) meanwhile: it opens that store instead."""
    path = tmp_path / "s"
    reached, go = threading.Event(), threading.Event()
    stalled: dict[str, object] = {}

    def stall() -> None:
        if threading.current_thread().name == "late-creator":
            reached.set()
            assert go.wait(30)

    store_mod.TEST_HOOKS["before_lock"] = stall

    def late() -> None:
        try:
            m = aether.open(path, embedder=_emb())
            stalled["count"] = m.stats().versions
            m.close()
        except BaseException as exc:  # reported below
            stalled["error"] = exc

    t = threading.Thread(target=late, name="late-creator")
    t.start()
    assert reached.wait(30)
    with aether.open(path, embedder=_emb()) as first:  # the other creator wins the race
        first.add_many([{"content": f"fact {i}"} for i in range(100)])
    go.set()
    t.join(60)
    assert "error" not in stalled, stalled.get("error")
    assert stalled["count"] == 100
    with aether.open(path, embedder=_emb()) as again:
        assert again.stats().versions == 100


# ------------------------------------------------------------------ 6. options that must be rejected
@pytest.mark.parametrize("bad", [-1, 0, 1.5, True, "10"])
def test_open_rejects_a_bad_content_limit(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidInputError, match="max_content_bytes"):
        aether.open(tmp_path / "s", embedder=_emb(), max_content_bytes=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "s" / "MANIFEST.json").exists()


@pytest.mark.parametrize("bad", [-5, -1, 1.5, True])
def test_compact_rejects_a_bad_merge_below(tmp_path: Path, bad: object) -> None:
    with aether.open(tmp_path / "s", embedder=_emb()) as mem:
        mem.add("x")
        with pytest.raises(InvalidInputError, match="merge_below"):
            mem.compact(merge_below=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("in_memory", [False, True])
def test_compact_rejects_retention_past_the_latest_commit(tmp_path: Path, in_memory: bool) -> None:
    mem = aether.open(None if in_memory else tmp_path / "s", embedder=_emb())
    a = mem.add("first belief")
    before = datetime.now(UTC)
    mem.correct(a.atom_id, "second belief")
    for future in (datetime.now(UTC) + timedelta(days=1), timedelta(days=-1)):
        with pytest.raises(InvalidInputError, match="retain"):
            mem.compact(retain=future)
    # Nothing was purged: the past belief is still visible as of before the correction.
    got = mem.get(a.atom_id, as_of=before)
    assert got is not None and got.content.inline == "first belief"
    mem.compact(retain=timedelta(0))  # up to now: allowed (drops the superseded version)
    assert mem.get(a.atom_id, as_of=before) is None
    mem.close()


# ------------------------------------------------------------------ 4. the index catalog race
def _small_recipe() -> object:
    from aether.index import load_recipe

    return load_recipe().with_overrides(
        partition_rows=64, tail_rows=24, background=False,
        tiers=[{"name": "flat", "max_rows": None, "factory": "Flat"}], planner={"exact_rows": 8},
    )


def _listed_files_exist(path: Path) -> list[str]:
    from aether.index import catalog as cat

    body = cat.load_catalog(path, 0)
    assert body is not None
    return [e["file"] for e in body["partitions"] if not (path / e["file"]).exists()]


def test_two_index_publications_never_list_a_removed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Publication A (an older state) has written its files and stalls before its catalog;
    publication B of a newer state runs meanwhile. A must not end up listing a file that B
    removed (the old code: ``listed in the index catalog but unreadable``)."""
    from aether.index import catalog as cat
    from aether.index import find_index, use_recipe

    path = tmp_path / "s"
    mem = aether.open(path, embedder=_emb())
    eng = mem._engine
    idx = use_recipe(eng, _small_recipe())  # type: ignore[arg-type]
    mem.add_many([{"content": f"first {i}"} for i in range(40)])
    idx.seal()
    assert find_index(eng) is idx and idx.state.covered == 40
    reached, go = threading.Event(), threading.Event()
    real_save = cat.save_catalog

    def stalled_save(root: Path, generation: int, body: dict[str, object]) -> None:
        if threading.current_thread().name == "publish-a":
            reached.set()
            assert go.wait(30)
        real_save(root, generation, body)

    monkeypatch.setattr(cat, "save_catalog", stalled_save)
    errors: list[BaseException] = []

    def run(fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=run, args=(lambda: idx._persist(eng, list(range(len(idx.state.partitions)))),),
                         name="publish-a")
    a.start()
    assert reached.wait(30)

    def newer() -> None:
        mem.add_many([{"content": f"second {i}"} for i in range(40)])
        idx.seal()

    b = threading.Thread(target=run, args=(newer,), name="publish-b")
    b.start()
    b.join(3)  # the old code finishes B here; the fixed one waits for A's publication
    go.set()
    a.join(60)
    b.join(60)
    assert not errors, errors[0]
    assert _listed_files_exist(path) == []
    report = aether.verify(path)
    assert report.ok, [str(p) for p in report.problems]
    mem.close()
    with aether.open(path, embedder=_emb()) as again:
        assert use_recipe(again._engine, _small_recipe()).notes == []  # type: ignore[arg-type]


def test_compaction_removes_index_files_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash in the middle of deleting the index files must not leave a catalog naming deleted
    files: the folder is renamed away first. The kill is simulated by failing the deletion after
    the first file (the old code deleted files one by one inside ``index/``)."""
    import shutil

    from aether.index import use_recipe

    path = tmp_path / "s"
    mem = aether.open(path, embedder=_emb())
    use_recipe(mem._engine, _small_recipe())  # type: ignore[arg-type]
    mem.add_many([{"content": f"row {i}", "subject": "u1" if i % 2 else "u2"} for i in range(120)])
    mem.checkpoint()
    assert (path / "index" / "0" / "CATALOG.json").exists()
    mem.erase(subject="u1")
    real_rmtree = shutil.rmtree

    class Killed(Exception):
        pass

    def dies_midway(p: object, ignore_errors: bool = False, **kw: object) -> None:
        files = sorted(q for q in Path(str(p)).rglob("*.faiss"))
        files[0].unlink()  # one file gone, then the "kill"
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", dies_midway)
    with pytest.raises(Killed):
        mem.compact()
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    report = aether.verify(path)
    assert report.ok, [str(p) for p in report.problems]
    mem._engine._lock.release()  # type: ignore[union-attr]  # the "killed" process's lock
    with aether.open(path, embedder=_emb()) as again:
        assert not any(p.name.startswith("index.removed-") for p in path.iterdir())
        assert again.stats().versions == 60


# ------------------------------------------------------------------ 2. a read-only reader beside a writer
@pytest.mark.parametrize("action", ["checkpoint", "compact"])
def test_reader_gets_no_untyped_error_when_the_writer_removes_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """Between the reader listing the WAL files (or the store's files) and reading or sizing them,
    the writer checkpoints or compacts and deletes them. The reader's ``refresh``, ``search`` and
    ``stats`` must still succeed (the old code: a raw ``FileNotFoundError`` from ``stats``)."""
    from aether.storage.wal import WriteAheadLog

    path = tmp_path / "s"
    w = aether.open(path, embedder=_emb(), checkpoint_bytes=1 << 30)
    w.add_many([{"content": f"seed {i}", "tags": {"g": "x"}} for i in range(5)])
    ro = aether.open(path, embedder=_emb(), read_only=True)
    real_files = WriteAheadLog.files
    armed = {"n": 0}

    def files_then_writer_acts(self: WriteAheadLog) -> list[Path]:
        out = real_files(self)
        if self is ro._engine._wal and armed["n"] and out:
            armed["n"] -= 1
            w.add(f"written while the reader lists {armed['n']}", tags={"g": "x"})
            w.compact() if action == "compact" else w.checkpoint()
            assert not all(p.exists() for p in out)  # the reader now holds names of deleted files
        return out

    monkeypatch.setattr(WriteAheadLog, "files", files_then_writer_acts)
    q = np.ones(DIM, np.float32)
    for round_ in range(3):
        w.add_many([{"content": f"round {round_} {i}", "tags": {"g": "x"}} for i in range(5)])
        armed["n"] = 1
        st = ro.stats()  # sizes the WAL files the writer has just deleted
        assert st.versions >= 5
        armed["n"] = 2
        ro.refresh()
        got = len(ro.search(q, k=1000, tags={"g": "x"}))
        assert got == len(w.search(q, k=1000, tags={"g": "x"}))  # the reader caught up with the writer
    ro.close()
    w.close()


def test_disk_bytes_of_a_tree_tolerate_files_vanishing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``stats().disk_bytes`` walks the store while a writer renames ``*.tmp`` files into place."""
    import os

    from aether.storage import _fs

    (tmp_path / "segments").mkdir()
    keep = tmp_path / "segments" / "a.parquet"
    keep.write_bytes(b"x" * 10)
    gone = tmp_path / "segments" / "b.parquet.tmp"
    gone.write_bytes(b"y" * 5)
    real_walk = os.walk

    def walk_then_rename(top: str, *a: Any, **kw: Any) -> Iterator[tuple[str, list[str], list[str]]]:
        for item in real_walk(top, *a, **kw):
            if item[0].endswith("segments") and gone.exists():
                gone.rename(tmp_path / "segments" / "b.parquet")  # the writer's rename, after the listing
            yield item

    monkeypatch.setattr(os, "walk", walk_then_rename)
    assert _fs.tree_bytes(tmp_path) == 10  # b.parquet appeared after its folder was listed


# ------------------------------------------------------------------ 3. verify on a live store
@pytest.mark.parametrize("commits", [1, 1000])
def test_verify_on_a_live_store_never_reports_false_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commits: int
) -> None:
    """The writer commits right after verify has read the WAL and before it reads the log (the old
    code: "log records transaction N, but the store ends at N-1 (records lost)"). Once: the repeated
    check is clean. Every time: the report is busy, never damaged."""
    from aether.security import verify as vmod

    path = tmp_path / "s"
    w = aether.open(path, embedder=_emb())
    w.add("first")
    real_scan = vmod.scan_frames
    left = {"n": commits}

    def scan_then_commit(p: Path, data: bytes) -> object:
        out = real_scan(p, data)
        if left["n"] > 0:
            left["n"] -= 1
            w.add(f"committed during verify {left['n']}")
        return out

    monkeypatch.setattr(vmod, "scan_frames", scan_then_commit)
    monkeypatch.setattr(vmod, "_LIVE_SECONDS", 2.0, raising=False)
    report = aether.verify(path)
    assert report.problems == [], [str(p) for p in report.problems]
    if commits == 1:
        assert report.ok and report.attempts == 2
    else:
        assert report.busy and not report.ok
        assert any("unconfirmed" in str(p) for p in report.warnings)
    w.close()
    monkeypatch.setattr(vmod, "scan_frames", real_scan)
    assert aether.verify(path).ok


def test_verify_still_reports_real_damage(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with aether.open(path, embedder=_emb()) as w:
        w.add_many([{"content": f"row {i}"} for i in range(20)])
    seg = next((path / "segments").glob("*.parquet"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    report = aether.verify(path)
    assert not report.ok and not report.busy and report.attempts == 1
    assert any("CRC32C" in str(p) for p in report.problems)


# ------------------------------------------------------------------ 5. clean exit
_EXIT_CHILD = """
import atexit, sys, threading, time
# Registered before aether's own handler, so it runs after it (atexit is last-in, first-out).
atexit.register(lambda: print("ALIVE", sorted(t.name for t in threading.enumerate() if t.name.startswith("aether")),
                              flush=True))
import aether
from aether.index import bucketed, load_recipe, use_recipe

real = bucketed.make_partition
def slow(**kw):
    time.sleep(1.5)  # the seal is certainly running when the script ends
    return real(**kw)
bucketed.make_partition = slow
mem = aether.open(sys.argv[1], embedder=aether.HashingEmbedder(dim=16))
use_recipe(mem._engine, load_recipe().with_overrides(
    partition_rows=64, tail_rows=24, background=True,
    tiers=[{"name": "flat", "max_rows": None, "factory": "Flat"}], planner={"exact_rows": 8}))
mem.add_many([{"content": f"fact {i}"} for i in range(40)])
try:
    mem.add("")
except aether.AetherError:
    pass
if sys.argv[2] == "close":
    mem.close()
print("EXITING", flush=True)
"""


@pytest.mark.parametrize("how", ["close", "no-close"])
def test_process_exits_cleanly_with_a_background_seal_running(tmp_path: Path, how: str) -> None:
    """The script ends while a background seal is running: the seal is joined (its files and
    catalog are complete), no aether thread is left at finalisation, and the exit status is 0."""
    import os
    import subprocess
    import sys

    path = tmp_path / "s"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", _EXIT_CHILD, str(path), how], capture_output=True, text=True,
                         timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "EXITING" in out.stdout
    alive = [ln for ln in out.stdout.splitlines() if ln.startswith("ALIVE")]
    assert alive == ["ALIVE []"], out.stdout
    assert (path / "index" / "0" / "CATALOG.json").exists()  # the seal ran to its end
    assert not list(path.rglob("*.tmp"))
    report = aether.verify(path)
    assert report.ok, [str(p) for p in report.problems]


def test_close_joins_the_background_vector_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``close()`` waits for the vector loader's current segment: no loader thread outlives it."""
    import time

    path = tmp_path / "s"
    with aether.open(path, embedder=_emb(), checkpoint_bytes=2_000) as w:
        for b in range(4):
            w.add_many([{"content": f"b{b} {i}"} for i in range(30)])
            w.checkpoint()
    real = store_mod.read_segment

    def slow_fetch(*a: object, **kw: object) -> object:
        tbl, fetch = real(*a, **kw)  # type: ignore[arg-type]
        if fetch is None:
            return tbl, fetch

        def later() -> object:
            time.sleep(0.5)
            return fetch()

        return tbl, later

    monkeypatch.setattr(store_mod, "read_segment", slow_fetch)
    mem = aether.open(path, embedder=_emb(), read_only=True)
    deadline = time.monotonic() + 10
    while not any(t.name == "aether-vectors" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    mem.close()
    assert not [t for t in threading.enumerate() if t.name == "aether-vectors" and t.is_alive()]


# ------------------------------------------------------------------ 7. erasure vs. old keyring copies
def _decryptable_subjects(root: Path, keyring_copy: bytes, key: bytes, tmp: Path) -> set[str]:
    """Subjects whose rows decrypt from the store's current data files when the attacker puts an
    old keyring copy in place and uses the master key of that copy (row level, no engine logic)."""
    import json
    import shutil

    from aether.security.codec import ERASED, AeadCodec
    from aether.storage.rows import open_rows
    from aether.storage.segments import read_table
    from aether.storage.wal import WriteAheadLog

    dst = tmp / f"attack-{len(list(tmp.iterdir()))}"
    shutil.copytree(root, dst)
    (dst / "keys" / "keyring.json").write_bytes(keyring_copy)
    body = json.loads((dst / "MANIFEST.json").read_bytes())
    codec = AeadCodec(key)
    codec.bind(dst, body, read_only=True)
    found: set[str] = set()
    for entry in body["segments"]:
        plain = open_rows(read_table(dst, entry, codec, body["store_id"]), codec)
        found |= set(plain.column("subject").to_pylist())
    for rec in WriteAheadLog(dst / "wal", codec, store_id=body["store_id"]).read(repair=False):
        if rec.rows is not None:
            found |= set(rec.rows.subject)
    return found - {ERASED}


def test_erasure_after_rotation_leaves_nothing_an_old_keyring_copy_decrypts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aether.security.keys import generate_key
    from aether.security.rotate import rotate_key

    monkeypatch.delenv("AETHER_KEY", raising=False)
    monkeypatch.delenv("AETHER_KEY_FILE", raising=False)
    k1, k2 = generate_key(), generate_key()
    root = tmp_path / "enc"
    work = tmp_path / "work"
    work.mkdir()
    with aether.open(root, embedder=_emb(), key=k1) as mem:
        mem.add_many([{"content": f"alice secret {i}", "subject": "alice"} for i in range(5)])
        mem.add_many([{"content": f"bob note {i}", "subject": "bob"} for i in range(5)])
    old_ring = (root / "keys" / "keyring.json").read_bytes()  # a backup of the keyring, under k1
    assert _decryptable_subjects(root, old_ring, k1, work) == {"alice", "bob"}
    rotate_key(root, k1, k2)
    with aether.open(root, embedder=_emb(), key=k2) as mem:
        mem.add_many([{"content": f"alice later {i}", "subject": "alice"} for i in range(3)])
        mem.checkpoint()
        mem.add("alice in the WAL only", subject="alice")
        mem.add("bob in the WAL only", subject="bob")
        # Written after the rotation: the old keyring copy with the old master opens none of it.
        res = mem.erase(subject="alice")
        assert res.versions == 9 and res.keys_destroyed == 2
        assert mem.stats().versions == 6
    # (bob's rows were re-sealed by the purge under his post-rotation key: the old copy opens none)
    assert "alice" not in _decryptable_subjects(root, old_ring, k1, work)
    new_ring = (root / "keys" / "keyring.json").read_bytes()
    assert _decryptable_subjects(root, new_ring, k2, work) == {"bob"}
    report = aether.verify(root, key=k2)
    assert report.ok, [str(p) for p in report.problems]
    with aether.open(root, embedder=_emb(), key=k2) as mem:
        assert {h.atom.subject for h in mem.search("note", k=20)} == {"bob"}


def test_core_cli_commands_take_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """init, add, search, get, history and stats open an encrypted store with ``--key-file``
    (before: only through the environment)."""
    import json

    from typer.testing import CliRunner

    from aether.cli import app

    monkeypatch.delenv("AETHER_KEY", raising=False)
    monkeypatch.delenv("AETHER_KEY_FILE", raising=False)
    runner = CliRunner()
    kf = tmp_path / "master.key"
    assert runner.invoke(app, ["keygen", str(kf)]).exit_code == 0
    root = str(tmp_path / "enc")
    k = ["--key-file", str(kf)]
    res = runner.invoke(app, ["init", root, "--model", f"hashing:{DIM}", *k])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["add", root, "the launch moved to friday", "--json", *k])
    assert res.exit_code == 0, res.output
    atom_id = json.loads(res.output)["atom_id"]
    for cmd in (["search", root, "launch"], ["get", root, atom_id], ["history", root, atom_id], ["stats", root]):
        res = runner.invoke(app, [*cmd, "--json", *k])
        assert res.exit_code == 0, (cmd, res.output)
        assert ("friday" in res.output) or cmd[0] == "stats"
        assert runner.invoke(app, [*cmd, "--json"]).exit_code != 0  # no key: a typed refusal
    assert json.loads(runner.invoke(app, ["stats", root, "--json", *k]).output)["encrypted"] is True


@pytest.mark.parametrize("merge", [False, True])
def test_compaction_does_not_deadlock_with_a_background_seal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, merge: bool
) -> None:
    """A background seal finishes its build while a compaction holds the write lock: the seal needs
    that lock to publish, so a compaction that waited for it there would never return."""
    from aether.index import bucketed, load_recipe, use_recipe

    mem = aether.open(tmp_path / "s", embedder=_emb())
    eng = mem._engine
    use_recipe(eng, load_recipe().with_overrides(
        partition_rows=96, tail_rows=32, background=True,
        tiers=[{"name": "flat", "max_rows": None, "factory": "Flat"}], planner={"exact_rows": 8},
    ))
    building, go = threading.Event(), threading.Event()
    real_make = bucketed.make_partition

    def held_build(**kw: Any) -> Any:
        if threading.current_thread().name == "aether-index-seal":
            building.set()
            go.wait(30)
        return real_make(**kw)

    monkeypatch.setattr(bucketed, "make_partition", held_build)
    mem.add_many([{"content": f"fact {i}", "subject": "a" if i % 2 else "b"} for i in range(40)])
    assert building.wait(30)
    mem.erase(atom_id=mem.search("fact 3", k=1)[0].atom.atom_id)
    real_ckpt = eng.checkpoint

    def ckpt_then_release() -> bool:
        out = real_ckpt()
        if threading.current_thread().name == "compactor":
            go.set()  # the seal finishes its build now, while the compaction holds the write lock
        return out

    monkeypatch.setattr(eng, "checkpoint", ckpt_then_release)
    done: list[object] = []
    c = threading.Thread(target=lambda: done.append(mem.compact(merge_below=64) if merge else mem.compact()),
                         name="compactor", daemon=True)
    c.start()
    c.join(30)
    assert done, "compaction deadlocked with the background seal"
    monkeypatch.setattr(eng, "checkpoint", real_ckpt)
    bucketed_index = bucketed.find_index(eng)
    assert bucketed_index is not None
    bucketed_index.wait()
    assert mem.stats().versions == 39
    mem.close()
    report = aether.verify(tmp_path / "s")
    assert report.ok, [str(p) for p in report.problems]


def test_opening_a_foreign_folder_leaves_no_lock_file(tmp_path: Path) -> None:
    from aether.errors import StoreError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        aether.open(tmp_path, embedder=_emb())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_verify_says_busy_with_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from aether.cli import app
    from aether.security import verify as vmod

    path = tmp_path / "s"
    w = aether.open(path, embedder=_emb())
    w.add("first")
    real_scan = vmod.scan_frames

    def scan_then_commit(p: Path, data: bytes) -> Any:
        out = real_scan(p, data)
        w.add("committed during verify")
        return out

    monkeypatch.setattr(vmod, "scan_frames", scan_then_commit)
    monkeypatch.setattr(vmod, "_LIVE_SECONDS", 1.0)
    res = CliRunner().invoke(app, ["verify", str(path), "--json"])
    assert res.exit_code == 3, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"): res.stdout.rindex("}") + 1])
    assert doc["busy"] is True and doc["ok"] is False and doc["problems"] == []
    w.close()
