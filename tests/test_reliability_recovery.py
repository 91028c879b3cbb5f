"""Recovery after a kill amid maintenance (issue 19, the concurrency soak's findings).

Each test puts the store into a state that a SIGKILL leaves behind (an interrupted re-index's
staged parts, a compaction stopped between two of its durable steps) deterministically, by an
exception at the same point or by building the intermediate files, then checks that nothing
acknowledged is lost, nothing erased comes back and the store opens and verifies clean.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import aether
from aether.security.keys import generate_key

DIM = 16


def _emb() -> aether.HashingEmbedder:
    return aether.HashingEmbedder(dim=DIM)


class _Interrupt(Exception):
    """Stands in for a kill: raised from the re-index's progress callback after its first part."""


def _interrupted_reindex(mem: aether.Memory) -> None:
    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 2:  # the first part is staged and recorded in reindex/<g>/state.json
            raise _Interrupt

    with pytest.raises(_Interrupt):
        mem.reindex(embedder=_emb(), progress=progress)
    assert list((mem._engine.path / "reindex").rglob("*.parquet"))  # type: ignore[operator]


@pytest.mark.parametrize("rewrite", ["compact", "merge", "erase_subject"])
def test_resumed_reindex_after_a_compaction_keeps_every_row(tmp_path: Path, rewrite: str) -> None:
    """A re-index killed after staging parts, then a compaction, then the re-index again.

    The compacted segment starts at the same version id as the old first segment; the staged
    part of that old segment was reused for it, so the swap installed old rows: later rows
    were lost, erased rows came back, and closings named versions no segment held
    (``CorruptionError: closing names an unknown version`` at the next open).
    """
    key = generate_key() if rewrite == "erase_subject" else None
    mem = aether.open(tmp_path / "s", embedder=_emb(), key=key)
    first = [mem.add(f"first {i}", subject="keep") for i in range(5)]
    early = mem.add("erase me early", subject="gone")  # both segments hold rows of the erased subject
    mem.checkpoint()
    second = [mem.add(f"second {i}", subject="keep") for i in range(5)]
    gone = mem.add("erase me", subject="gone")
    mem.correct(first[1].atom_id, "first 1, corrected")  # a closing of a row of the first segment
    mem.checkpoint()
    versions = len(mem.history(first[1].atom_id))
    _interrupted_reindex(mem)
    if rewrite == "erase_subject":  # an encrypted subject erasure purges (rewrites) at once
        mem.erase(subject="gone")
    else:
        mem.erase(atom_id=gone.atom_id)
        mem.compact() if rewrite == "compact" else mem.compact(merge_below=1_000)
    # A closing of a row the rewritten segment took over from the second one, checkpointed.
    mem.correct(second[0].atom_id, "second 0, corrected")
    mem.checkpoint()
    mem.reindex(embedder=_emb())
    mem.close()
    with aether.open(tmp_path / "s", embedder=_emb(), key=key) as mem:
        for a in first + second:
            assert mem.get(a.atom_id) is not None, a.content.inline
        assert mem.get(first[1].atom_id).content.inline == "first 1, corrected"  # type: ignore[union-attr]
        assert mem.get(second[0].atom_id).content.inline == "second 0, corrected"  # type: ignore[union-attr]
        assert mem.get(gone.atom_id) is None
        assert (mem.get(early.atom_id) is None) == (rewrite == "erase_subject")
        assert len(mem.history(first[1].atom_id)) == versions
    report = aether.verify(tmp_path / "s", key=key)
    assert report.ok, report.problems


def _staged_subjects(root: Path, keyring_copy: bytes, key: bytes) -> set[str]:
    """Subjects whose rows decrypt from staged re-index parts with an old keyring copy."""
    import json

    from aether.security.codec import ERASED, AeadCodec
    from aether.storage.rows import open_rows
    from aether.storage.segments import read_table

    body = json.loads((root / "MANIFEST.json").read_bytes())
    ring = root / "keys" / "keyring.json"
    current = ring.read_bytes()
    ring.write_bytes(keyring_copy)
    try:
        codec = AeadCodec(key)
        codec.bind(root, body, read_only=True)
        found: set[str] = set()
        for state in (root / "reindex").glob("*/state.json"):
            for entry in json.loads(state.read_text())["done"].values():
                table = open_rows(read_table(state.parent, entry, codec, body["store_id"]), codec)
                found |= set(table.column("subject").to_pylist())
    finally:
        ring.write_bytes(current)
    return found - {ERASED}


def test_erasure_purge_drops_staged_reindex_parts(tmp_path: Path) -> None:
    """An interrupted re-index's staged parts hold copies of rows: a subject's erasure must not
    leave them behind for a keyring copy taken before the erasure to open."""
    key = generate_key()
    root = tmp_path / "s"
    mem = aether.open(root, embedder=_emb(), key=key)
    mem.add_many([{"content": f"secret {i}", "subject": "gone"} for i in range(4)])
    mem.add_many([{"content": f"note {i}", "subject": "keep"} for i in range(4)])
    mem.checkpoint()
    _interrupted_reindex(mem)
    old_ring = (root / "keys" / "keyring.json").read_bytes()
    assert "gone" in _staged_subjects(root, old_ring, key)
    mem.erase(subject="gone")
    assert "gone" not in _staged_subjects(root, old_ring, key)
    mem.reindex(embedder=_emb())  # and a re-index afterwards still works (from scratch)
    assert {h.atom.subject for h in mem.search("note", k=20)} == {"keep"}
    mem.close()


@pytest.mark.parametrize("read_only", [True, False])
def test_wal_record_closing_an_unknown_version_is_a_typed_error(tmp_path: Path, read_only: bool) -> None:
    """Replaying a record that closes a version no segment holds raised a bare ``KeyError`` (an
    untyped error for a reader's ``refresh()``, a traceback for the CLI)."""
    from aether.storage.wal import WriteAheadLog

    root = tmp_path / "s"
    with aether.open(root, embedder=_emb()) as mem:
        mem.add("one fact")
        seq, tx = mem._engine.snapshot.last_seq, mem._engine.snapshot.last_tx
        store_id = mem._engine.store_id
    wal = WriteAheadLog(root / "wal", store_id=store_id)
    wal.open_for_append(seq + 1)
    wal.append({"seq": seq + 1, "tx": tx + 1, "close": [[12345, tx + 1]]}, None)
    wal.close()
    with pytest.raises(aether.errors.CorruptionError, match="closes a version"):
        aether.open(root, embedder=_emb(), read_only=read_only)


# ------------------------------------------------------------------ a kill at every storage call
def _template(root: Path, key: bytes | None) -> dict[str, object]:
    """A store with segments, closings, an erased atom and WAL-only records (left unclosed: the
    WAL stays as it is), and what every copy must still show after any kill."""
    mem = aether.open(root, embedder=_emb(), key=key)
    keep = mem.add_many([{"content": f"keep {i}", "subject": "keep"} for i in range(6)])
    gone = mem.add_many([{"content": f"gone {i}", "subject": "gone"} for i in range(3)])
    mem.checkpoint()
    keep += mem.add_many([{"content": f"keep more {i}", "subject": "keep"} for i in range(4)])
    gone += mem.add_many([{"content": f"gone more {i}", "subject": "gone"} for i in range(2)])
    mem.correct(keep[0], "keep 0, corrected")
    erased = keep.pop(5)
    mem.erase(atom_id=erased)
    mem.checkpoint()
    keep += mem.add_many([{"content": f"keep in the WAL {i}", "subject": "keep"} for i in range(3)])
    gone.append(mem.add("gone in the WAL", subject="gone").atom_id)
    mem.correct(keep[1], "keep 1, corrected in the WAL")
    expected = {a: mem.get(a).content.inline for a in keep}  # type: ignore[union-attr]
    mem._engine._shutdown()  # like an exit without close: no checkpoint, the WAL keeps its records
    return {"keep": expected, "gone": gone, "erased": erased}


def _check_copy(path: Path, key: bytes | None, want: dict[str, object], op: str) -> None:
    keep = want["keep"]
    assert isinstance(keep, dict)
    for read_only in (True, False):  # first as found (no repair), then recovered by the writer
        with aether.open(path, embedder=_emb(), read_only=read_only, key=key) as mem:
            for aid, content in keep.items():
                got = mem.get(aid)
                assert got is not None and got.content.inline == content, (path.name, aid, content)
            assert mem.get(str(want["erased"])) is None, path.name
            present = [mem.get(a) is not None for a in want["gone"]]  # type: ignore[attr-defined]
            # An erasure cut off by the kill happened whole or not at all.
            assert all(present) or (op == "erase_subject" and not any(present)), (path.name, present)
    report = aether.verify(path, key=key)
    assert report.ok, (path.name, [str(p) for p in report.problems])


@pytest.mark.slow
@pytest.mark.parametrize("op", ["checkpoint", "compact", "merge", "erase_subject", "reindex"])
def test_a_kill_at_any_storage_call_of_maintenance_loses_nothing(tmp_path: Path, op: str) -> None:
    """SIGKILL at each storage call (write, fsync, rename) of a maintenance operation, cleanly and
    after a torn write: every copy opens (read-only as found, then as the writer), shows every
    acknowledged fact and no erased one, and verifies clean."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    key = generate_key() if op in ("erase_subject", "merge") else None
    want = _template(tmp_path / "template", key)
    out = tmp_path / "copies"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(repo), HF_HUB_OFFLINE="1")
    env.pop("AETHER_KEY", None)
    env.pop("AETHER_KEY_FILE", None)
    proc = subprocess.run(
        [sys.executable, str(repo / "tests" / "crash_child.py"), "--kill-points", str(tmp_path / "template"),
         str(out), op, key.hex() if key else "-"],
        capture_output=True, text=True, env=env, cwd=str(repo), timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["calls"] >= 3 and res["calls"] <= len(res["killed"]) < 2 * res["calls"], res
    for path in res["killed"]:
        _check_copy(Path(path), key, want, op)


# ------------------------------------------------------------------ a reader never goes back
def test_reader_reload_racing_a_checkpoint_never_goes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The soak's "refresh went back from seq 284 to 283".

    A reader reloads (after a failed attempt) from manifest M2, whose checkpoint is older than
    what it had replayed from the WAL; before it lists the WAL files, the writer checkpoints and
    deletes them. The reader found only the writer's new, empty WAL file, no gap, and returned
    M2's older snapshot from a successful ``refresh()``.
    """
    from aether.engine import store as store_mod
    from aether.errors import CorruptionError
    from aether.storage import manifest as mf

    root = tmp_path / "s"
    w = aether.open(root, embedder=_emb())
    w.add("a")
    w.checkpoint()
    w.add("b")
    ro = aether.open(root, embedder=_emb(), read_only=True)
    w.checkpoint()  # M2: checkpoint at 2
    w.add("c")  # 3, in the WAL only
    ro.refresh()
    assert ro.stats().transactions == 3

    real_load, real_wal = mf.load, store_mod.WriteAheadLog
    armed = {"fail": True, "race": True}

    def load(path: Path) -> dict[str, object]:
        if armed["fail"]:  # one failed attempt (any race): the reader then reloads in full
            armed["fail"] = False
            raise CorruptionError("simulated: a manifest read raced a replacement")
        return real_load(path)

    def wal(*args: object, **kw: object) -> object:
        if armed["race"]:  # the reader has read M2 and its segments; the writer moves on
            armed["race"] = False
            w.add("d")
            w.checkpoint()  # M3, and the WAL file holding 3 is deleted
        return real_wal(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mf, "load", load)
    monkeypatch.setattr(store_mod, "WriteAheadLog", wal)
    ro.refresh()
    assert not armed["race"]
    assert ro.stats().transactions == 4  # not 2: the retry read the newer manifest
    assert ro.get(ro.search("c", k=1)[0].atom.atom_id) is not None
    ro.close()
    w.close()
