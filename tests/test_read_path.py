"""Hits built in bulk (one columnar read per result set, no re-validation) equal the validated models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

import aether
from aether._time import to_us
from aether.engine.search import atoms_at, hits_for
from aether.models import Hit, MemoryAtom, MemoryContent

DIM = 16
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def vecs(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def validated(eng: object, row: int) -> MemoryAtom:
    """The reference: the engine's one-row, fully validated construction."""
    return eng.atom_at(row)  # type: ignore[attr-defined, no-any-return]


def same(a: MemoryAtom, b: MemoryAtom) -> None:
    assert a == b
    assert a.model_fields_set == b.model_fields_set
    assert a.content.model_fields_set == b.content.model_fields_set
    assert a.to_dict() == b.to_dict()
    assert a.model_dump_json() == b.model_dump_json()
    assert list(a.model_dump()) == list(b.model_dump())  # field order too
    assert type(a.modality) is type(b.modality) and a.content.size_bytes == b.content.size_bytes


def fill(mem: aether.Memory) -> list[str]:
    """Rows in every text-chunk form: a bulk commit (an Arrow chunk), small commits (the list tail),
    varied tags, metadata, modalities, closed and bounded versions."""
    x = vecs(700, 1)
    bulk = [
        {"content": f"bulk {i} é", "tags": {"kind": f"k{i % 3}", "n": i, "ok": i % 2 == 0, "w": i / 7},
         "metadata": {"i": i, "nested": {"a": [1, 2]}} if i % 2 else None, "valid_from": T0 + timedelta(hours=i),
         "valid_to": T0 + timedelta(days=40) if i % 5 == 0 else None, "quality_score": 0.5 + (i % 5) / 10,
         "modality": "image" if i % 7 == 0 else "text", "content_metadata": {"caption": True} if i % 7 == 0 else None}
        for i in range(600)
    ]
    ids = mem.add_many(bulk, vectors=x[:600])
    # enough rows that an in-memory table folds its list tail into an Arrow chunk too
    ids += mem.add_columns([f"column row {i}" for i in range(9000)], vectors=vecs(9000, 2), valid_from=T0)
    for i in range(600, 700):  # small commits: the list tail (rows 9600 on)
        a = mem.add(f"small {i}", vector=x[i], tags={"kind": "small"}, metadata={"i": i},
                    valid_from=T0 + timedelta(hours=i), subject="alice" if i % 2 else "default")
        ids.append(a.atom_id)
    for i in (3, 9650):  # corrections: closed versions with tx_to set, in both chunk kinds
        mem.correct(ids[i], f"corrected {i}", valid_from=T0 + timedelta(hours=i), vector=x[i % 700])
    return ids


@pytest.fixture(params=["memory", "reopened"])
def mem(request: pytest.FixtureRequest, tmp_path: Path) -> aether.Memory:
    if request.param == "memory":
        m = aether.open(None, embedder=aether.PrecomputedEmbedder(DIM))
        fill(m)
        return m
    m = aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(DIM))
    fill(m)
    m.close()
    return aether.open(tmp_path / "s", embedder=aether.PrecomputedEmbedder(DIM))  # rows now from segments


def test_every_row_builds_the_validated_atom(mem: aether.Memory) -> None:
    eng = mem._engine
    n = eng.snapshot.n
    kinds = {type(c).__name__ for c in eng.table._chunks}
    assert "Table" in kinds and (eng.path is not None or "_Tail" in kinds)  # both chunk kinds are read
    rows = [*range(0, n, 7), n - 1, 0, 5, *range(9590, n)]  # repeats, any order, across chunks
    for row, atom in zip(rows, atoms_at(eng, rows), strict=True):
        same(atom, validated(eng, row))
    assert atoms_at(eng, []) == []


def test_search_hits_get_and_history_equal_the_validated_models(mem: aether.Memory) -> None:
    eng = mem._engine
    q = vecs(3, 9)
    hits = mem.search(q[0], k=25, valid_during=(None, None))
    assert len(hits) == 25
    for h in hits:
        row = int(eng.table.row_index(np.array([h.atom.version_id]))[0])
        same(h.atom, validated(eng, row))
        assert h == Hit(atom=validated(eng, row), score=h.score) and isinstance(h.score, float)
    for h in hits[:5]:
        got = mem.get(h.atom_id, valid_at=h.atom.valid_from)
        row = eng.get_row(h.atom_id, to_us(h.atom.valid_from), None)
        assert got is not None and row is not None
        same(got, validated(eng, row))
    corrected = next(h for h in mem.search(q[1], k=10000, valid_during=(None, None)) if "corrected" in h.atom.text)
    hist = mem.history(corrected.atom_id)
    assert len(hist) >= 2 and hist[0].tx_to is not None
    for a, r in zip(hist, eng.history_rows(corrected.atom_id), strict=True):
        same(a, validated(eng, r))


def test_batch_hits_are_independent_objects(mem: aether.Memory) -> None:
    q = vecs(1, 4)[0]
    a, b = mem.search_many(np.stack([q, q]), k=5, valid_during=(None, None))
    assert [h.atom for h in a] == [h.atom for h in b]
    a[0].atom.record_access()
    a[0].atom.tags["changed"] = 1
    assert b[0].atom.access_count == 0 and "changed" not in b[0].atom.tags
    again = mem.search(q, k=5, valid_during=(None, None))
    assert "changed" not in again[0].atom.tags  # a caller's change never reaches the store's rows


def test_access_counts_are_reported(mem: aether.Memory) -> None:
    eng = mem._engine
    hit = mem.search(vecs(1, 5)[0], k=1, valid_during=(None, None))[0]
    eng.record_access(hit.atom_id)
    eng.record_access(hit.atom_id)
    again = mem.search(vecs(1, 5)[0], k=1, valid_during=(None, None))[0]
    assert again.atom.access_count == 2 and again.atom.last_accessed is not None


def test_hits_for_keeps_query_order_and_scores() -> None:
    mem = aether.open(None, embedder=aether.PrecomputedEmbedder(DIM))
    fill(mem)
    eng = mem._engine
    results = [[(5, 0.9), (2, 0.5)], [], [(2, 0.4)]]
    out = hits_for(eng, results)
    assert [[(h.atom.version_id, h.score) for h in hs] for hs in out] == [
        [(int(eng.table.version_id[5]), 0.9), (int(eng.table.version_id[2]), 0.5)], [],
        [(int(eng.table.version_id[2]), 0.4)],
    ]
    assert out[0][1].atom is not out[2][0].atom
    mem.close()


def test_trusted_builder_falls_back_for_incomplete_values() -> None:
    from aether.models import trusted_builder

    build = trusted_builder(MemoryContent)
    c = build(frozenset({"inline"}), {"inline": "x"})  # not every field: model_construct fills defaults
    assert c.inline == "x" and c.content_type == "text/plain" and c.model_fields_set == {"inline"}


def test_chunk_reader_matches_arrow_on_row_groups_slices_and_nulls() -> None:
    import json

    import pyarrow as pa

    from aether.engine.table import _TEXT, _ChunkReader

    def part(lo: int, hi: int) -> pa.Table:
        n = hi - lo
        tags = [None if i % 4 == 0 else ([] if i % 4 == 1 else [("k", json.dumps(i)), ("é", json.dumps("v"))])
                for i in range(lo, hi)]
        return pa.table({
            "atom_id": pa.array([f"a{i}" for i in range(lo, hi)]),
            "subject": pa.array(["" if i % 3 else "s" for i in range(lo, hi)]),  # empty strings
            "modality": pa.array(["text"] * n),
            "content": pa.array([None if i == lo + 1 else f"c{i} ü" for i in range(lo, hi)]),  # a null
            "content_meta": pa.array(["{}"] * n, pa.large_string()),
            "tags": pa.array(tags, pa.map_(pa.string(), pa.string())),
            "metadata": pa.array([json.dumps({"i": i}) for i in range(lo, hi)]),
        })

    # three row groups, the middle one a slice of a bigger array (non-zero offsets)
    table = pa.concat_tables([part(0, 50), part(40, 140).slice(10, 60), part(110, 130)])
    reader = _ChunkReader(table)
    rows = [0, 1, 49, 50, 51, 75, 109, 110, 129, 5, 50]
    got = reader.rows(rows)
    want = {name: [table.slice(r, 1).column(name).to_pylist()[0] for r in rows] for name in _TEXT}
    assert got == want
