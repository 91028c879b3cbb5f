"""The core API: writes, time travel, views, durability, validation, model identity."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import aether

from .conftest import DIM, FakeClock

T = [datetime(2024, m, 1, tzinfo=UTC) for m in range(1, 13)]


def test_add_get_search_roundtrip(mem: aether.Memory) -> None:
    atom = mem.add("Alice lives in Paris", tags={"user": "alice"}, metadata={"src": "chat"}, valid_from=T[0])
    assert isinstance(atom, aether.MemoryAtom)
    assert atom.content.inline == "Alice lives in Paris"
    assert atom.valid_from == T[0] and atom.valid_to is None and atom.tx_to is None
    got = mem.get(atom.atom_id)
    assert got is not None and got.metadata == {"src": "chat"} and got.tags == {"user": "alice"}
    hits = mem.search("where does alice live", k=5)
    assert hits[0].atom.atom_id == atom.atom_id
    assert isinstance(hits[0], aether.Hit) and -1.0 <= hits[0].score <= 1.0001


def test_valid_time_and_transaction_time(mem: aether.Memory) -> None:
    a = mem.add("Alice lives in Paris", valid_from=T[0])
    before_correction = mem.last_commit
    mem.correct(a.atom_id, "Alice lives in Lyon", valid_from=T[5])
    # valid time: what was true when
    assert mem.get(a.atom_id, valid_at=T[2]).content.inline == "Alice lives in Paris"  # type: ignore[union-attr]
    assert mem.get(a.atom_id, valid_at=T[7]).content.inline == "Alice lives in Lyon"  # type: ignore[union-attr]
    # transaction time: what the store believed before the correction
    old = mem.get(a.atom_id, valid_at=T[7], as_of=before_correction)
    assert old is not None and old.content.inline == "Alice lives in Paris"
    assert mem.get(a.atom_id, valid_at=T[0] - timedelta(days=1)) is None
    hist = mem.history(a.atom_id)
    assert [h.tx_from for h in hist] == sorted(h.tx_from for h in hist)
    assert len(hist) == 3


def test_retract_and_delete(mem: aether.Memory) -> None:
    a = mem.add("Bob works at Initech", valid_from=T[0])
    mem.retract(a.atom_id, at=T[3])
    assert mem.get(a.atom_id, valid_at=T[2]) is not None
    assert mem.get(a.atom_id, valid_at=T[4]) is None
    before_delete = mem.last_commit
    mem.delete(a.atom_id)
    assert mem.get(a.atom_id, valid_at=T[2]) is None
    assert mem.get(a.atom_id, valid_at=T[2], as_of=before_delete) is not None
    assert mem.search("Initech", k=3, valid_at=T[2]) == []
    assert len(mem.search("Initech", k=3, valid_at=T[2], as_of=before_delete)) == 1


def test_add_many_is_one_transaction(mem: aether.Memory) -> None:
    ids = mem.add_many([{"content": f"fact {i}", "tags": {"batch": 1}} for i in range(20)])
    assert len(ids) == 20 and len(set(ids)) == 20
    assert mem.stats().transactions == 1
    with pytest.raises(aether.InvalidInputError):
        mem.add_many([{"content": "ok"}, {"content": ""}])
    assert mem.stats().versions == 20  # nothing of the failed batch was written


def test_valid_during_and_tags(mem: aether.Memory) -> None:
    a = mem.add("meeting notes about budget", tags={"team": "x"}, valid_from=T[0], valid_to=T[2])
    b = mem.add("meeting notes about budget review", tags={"team": "y"}, valid_from=T[5], valid_to=T[6])
    got = {h.atom_id for h in mem.search("budget", k=5, valid_during=(T[1], T[3]))}
    assert got == {a.atom_id}
    got = {h.atom_id for h in mem.search("budget", k=5, valid_during=(T[0], None))}
    assert got == {a.atom_id, b.atom_id}
    assert {h.atom_id for h in mem.search("budget", k=5, valid_during=(None, None), tags={"team": "y"})} == {
        b.atom_id
    }
    assert mem.search("budget", k=5, valid_during=(T[0], None), tags={"team": "z"}) == []


def test_views_are_read_only_and_pinned(mem: aether.Memory) -> None:
    a = mem.add("the sky is green", valid_from=T[0])
    v = mem.view(valid_at=T[1])
    mem.correct(a.atom_id, "the sky is blue", valid_from=T[0])
    assert v.get(a.atom_id).content.inline == "the sky is green"  # type: ignore[union-attr]
    assert v.search("sky", k=1)[0].atom.content.inline == "the sky is green"
    assert len(v.history(a.atom_id)) == 1
    for write in (lambda: v.add("x"), lambda: v.delete(a.atom_id), lambda: v.correct(a.atom_id, "y"),
                  lambda: v.retract(a.atom_id), lambda: v.add_many(["z"])):
        with pytest.raises(aether.ReadOnlyError):
            write()
    assert mem.get(a.atom_id).content.inline == "the sky is blue"  # type: ignore[union-attr]


def test_precomputed_vectors_write_and_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    with aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(8, "mine")) as mem:
        ids = mem.add_many([f"doc {i}" for i in range(50)], vectors=vecs)
        one = mem.add("single", vector=vecs[0] * 3)
        hits = mem.search(vecs[7], k=1)
        assert hits[0].atom_id == ids[7] and hits[0].score == pytest.approx(1.0, abs=1e-5)
        with pytest.raises(aether.InvalidInputError):
            mem.search("text needs a model", k=1)
        assert mem.get(one.atom_id) is not None
    # exact search reference
    with aether.open(tmp_path / "s") as mem:
        q = rng.normal(size=8).astype(np.float32)
        unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        ref = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:5]
        got = [h.atom_id for h in mem.search(q, k=6) if h.atom.content.inline != "single"][:5]
        assert got == [ids[i] for i in ref]


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.add("x", valid_from=datetime(2024, 1, 1)),  # naive
        lambda m: m.add("x", valid_from=T[2], valid_to=T[1]),  # inverted
        lambda m: m.add("x", valid_from=T[2], valid_to=T[2]),  # empty
        lambda m: m.add(""),
        lambda m: m.add("   "),
        lambda m: m.add("x", vector=np.ones(DIM + 1)),
        lambda m: m.add("x", vector=np.full(DIM, np.nan)),
        lambda m: m.add("x", vector=np.zeros(DIM)),
        lambda m: m.add("x", tags={"k": [1, 2]}),
        lambda m: m.add("x", tags={"k": float("inf")}),
        lambda m: m.add("x", metadata={"k": float("nan")}),
        lambda m: m.add("x", quality_score=2.0),
        lambda m: m.add("x", modality="smell"),
        lambda m: m.add("x", valid_from="yesterday"),
        lambda m: m.add("x", valid_from="2024-01-01T00:00:00"),  # naive ISO string
        lambda m: m.correct("nope", "y"),
        lambda m: m.retract("nope"),
        lambda m: m.delete("nope"),
        lambda m: m.search("x", k=0),
        lambda m: m.search(np.ones(DIM + 2)),
        lambda m: m.search("x", valid_at=datetime(2024, 1, 1)),
        lambda m: m.add("é" * 600_000),  # over the 1 MiB default limit
    ],
)
def test_bad_input_is_typed_and_changes_nothing(mem: aether.Memory, call) -> None:
    mem.add("existing", valid_from=T[0])
    before = mem.stats()
    with pytest.raises(aether.AetherError):
        call(mem)
    after = mem.stats()
    assert (after.versions, after.transactions) == (before.versions, before.transactions)


def test_naive_datetime_is_a_value_error(mem: aether.Memory) -> None:
    with pytest.raises(ValueError):
        mem.add("x", valid_from=datetime(2024, 1, 1))
    with pytest.raises(aether.NaiveDatetimeError):
        mem.get("x", valid_at=datetime(2024, 1, 1))


def test_iso_strings_accepted(mem: aether.Memory) -> None:
    a = mem.add("x marks the spot", valid_from="2024-01-01T00:00:00Z", valid_to="2024-06-01T00:00:00+02:00")
    assert a.valid_from == T[0]
    assert mem.get(a.atom_id, valid_at="2024-03-01T00:00:00+00:00") is not None


def test_reopen_returns_what_was_acknowledged(store_path: Path, embedder) -> None:
    with aether.open(store_path, embedder=embedder) as mem:
        a = mem.add("first", valid_from=T[0], tags={"n": 1})
        mem.add_many([{"content": f"bulk {i}", "tags": {"n": i}} for i in range(10)])
        mem.correct(a.atom_id, "first, corrected", valid_from=T[3])
        hist = [h.model_dump() for h in mem.history(a.atom_id)]
        stats = mem.stats()
    with aether.open(store_path) as mem:  # embedder rebuilt from the manifest
        assert [h.model_dump() for h in mem.history(a.atom_id)] == hist
        s2 = mem.stats()
        assert (s2.versions, s2.transactions, s2.atoms_current) == (stats.versions, stats.transactions,
                                                                   stats.atoms_current)
        assert mem.search("bulk", k=3, tags={"n": 4})[0].atom.content.inline == "bulk 4"
        mem.add("after reopen")
    with aether.open(store_path) as mem:
        assert mem.stats().versions == stats.versions + 1


def test_reopen_without_close_replays_wal(store_path: Path, embedder) -> None:
    mem = aether.open(store_path, embedder=embedder)
    ids = mem.add_many([f"item {i}" for i in range(5)])
    # abandon without close (as a crash would): release the OS resources only
    mem._engine._wal.close()  # type: ignore[union-attr]
    mem._engine._lock.release()  # type: ignore[union-attr]
    with aether.open(store_path, embedder=embedder) as again:
        assert all(again.get(i) is not None for i in ids)


def test_checkpoint_during_writes(store_path: Path, embedder) -> None:
    with aether.open(store_path, embedder=embedder, checkpoint_bytes=2_000) as mem:
        ids = [mem.add(f"note {i}", tags={"i": i}).atom_id for i in range(40)]
        for i in ids[:10]:
            mem.delete(i)
        assert len(list((store_path / "segments").glob("*.parquet"))) > 1
    with aether.open(store_path) as mem:
        assert sum(mem.get(i) is not None for i in ids) == 30
        assert len(mem.history(ids[0])) == 1 and mem.history(ids[0])[0].tx_to is not None


def test_model_mismatch(store_path: Path) -> None:
    aether.open(store_path, embedder=aether.HashingEmbedder(dim=16)).close()
    with pytest.raises(aether.ModelMismatchError):
        aether.open(store_path, embedder=aether.HashingEmbedder(dim=24))


def test_second_writer_is_locked_out(store_path: Path, embedder) -> None:
    with aether.open(store_path, embedder=embedder):
        with pytest.raises(aether.StoreLockedError):
            aether.open(store_path, embedder=embedder)
        ro = aether.open(store_path, read_only=True)
        with pytest.raises(aether.ReadOnlyError):
            ro.add("nope")
        ro.close()


def test_read_only_refresh(store_path: Path, embedder) -> None:
    with aether.open(store_path, embedder=embedder) as mem:
        mem.add("one")
        ro = aether.open(store_path, read_only=True)
        assert ro.stats().versions == 1
        mem.add("two")
        ro.refresh()
        assert ro.stats().versions == 2
        mem.checkpoint()
        mem.add("three")
        ro.refresh()
        assert ro.stats().versions == 3
        ro.close()


def test_closed_store_raises(store_path: Path, embedder) -> None:
    mem = aether.open(store_path, embedder=embedder)
    mem.close()
    mem.close()  # idempotent
    with pytest.raises(aether.StoreClosedError):
        mem.add("x")
    with pytest.raises(aether.StoreClosedError):
        mem.search("x")


def test_manifest_records_model_and_format(store_path: Path, embedder) -> None:
    aether.open(store_path, embedder=embedder).close()
    doc = json.loads((store_path / "MANIFEST.json").read_text())
    assert doc["format_version"] == 1
    assert doc["model"]["identity"] == embedder.identity
    assert doc["aether_version"] == aether.__version__


def test_not_a_store(tmp_path: Path, embedder) -> None:
    (tmp_path / "junk.txt").write_text("hello")
    with pytest.raises(aether.StoreError):
        aether.open(tmp_path, embedder=embedder)
    with pytest.raises(aether.StoreNotFoundError):
        aether.open(tmp_path / "missing", create=False)


def test_fake_clock_orders_transactions(tmp_path: Path, embedder) -> None:
    clock = FakeClock()
    with aether.open(tmp_path / "s", embedder=embedder, clock=clock) as mem:
        a = mem.add("x")
        b = mem.add("y")
        assert a.tx_from is not None and b.tx_from is not None and b.tx_from > a.tx_from


def test_hashing_embedder_is_deterministic() -> None:
    e1, e2 = aether.HashingEmbedder(dim=64), aether.HashingEmbedder(dim=64)
    v1, v2 = e1.embed(["hello world", "!!!"]), e2.embed(["hello world", "!!!"])
    assert v1.dtype == np.float32 and v1.shape == (2, 64)
    assert np.array_equal(v1, v2)
    assert np.allclose(np.linalg.norm(v1, axis=1), 1.0)


def test_large_batch_spanning_sealed_chunks_roundtrips(tmp_path: Path) -> None:
    """More rows than the in-memory tail holds, so checkpoints read sealed Arrow chunks too."""
    emb = aether.PrecomputedEmbedder(4, "t")
    rng = np.random.default_rng(1)
    n = 9_000
    vecs = rng.normal(size=(n, 4)).astype(np.float32)
    items = [{"content": f"row {i}", "tags": {"mod": i % 7}, "metadata": {"i": i}} for i in range(n)]
    with aether.open(tmp_path / "s", embedder=emb) as mem:
        ids = mem.add_many(items[:5000], vectors=vecs[:5000])
        ids += mem.add_many(items[5000:], vectors=vecs[5000:])
        mem.delete(ids[10])
    with aether.open(tmp_path / "s", embedder=emb) as mem:
        assert mem.stats().versions == n
        got = mem.get(ids[8_500])
        assert got is not None and got.metadata == {"i": 8_500} and got.tags == {"mod": 8_500 % 7}
        assert mem.get(ids[10]) is None
        hits = mem.search(vecs[6_001], k=1, tags={"mod": 6_001 % 7})
        assert hits[0].atom_id == ids[6_001]
