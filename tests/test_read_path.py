"""Hits built in bulk (one columnar read per result set, no re-validation) equal the validated models."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    return eng.atom_at(row)  # type: ignore[attr-defined]


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
        got_row = eng.get_row(h.atom_id, to_us(h.atom.valid_from), None)
        assert got is not None and got_row is not None
        same(got, validated(eng, got_row))
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


def test_chunk_reader_constant_columns_match_arrow() -> None:
    """Columns holding one value in every row (read without per-row work) and near-constant ones
    (a different value off the sampled rows, a value in one row group only) read as Arrow has them."""
    import json

    import pyarrow as pa

    from aether.engine.table import _TEXT, _ChunkReader

    def part(lo: int, hi: int, odd: int | None, group_value: str) -> pa.Table:
        n = hi - lo
        return pa.table({
            "atom_id": pa.array([f"a{i}" for i in range(lo, hi)], pa.string()),
            "subject": pa.array(["" for _ in range(lo, hi)], pa.string()),  # constant empty strings
            "modality": pa.array(["text"] * n, pa.string()),  # constant everywhere
            # constant except one row that is neither the first, middle nor last of the group
            "content": pa.array(["same ü" if i != odd else "samé ü" for i in range(lo, hi)], pa.string()),
            "content_meta": pa.array([group_value] * n, pa.large_string()),  # constant per group only
            "tags": pa.array([[] for _ in range(n)], pa.map_(pa.string(), pa.string())),  # all empty
            "metadata": pa.array([None] * n, pa.string()),  # all null: not read as a constant string
        })

    nulls = pa.array([None] * 7, pa.map_(pa.string(), pa.string()))
    groups = [part(0, 40, 7, "{}"), part(40, 100, None, "{}").slice(5, 40), part(100, 100, None, "{}"),
              part(100, 130, None, json.dumps({"a": 1}))]
    table = pa.concat_tables(groups)
    reader = _ChunkReader(table)
    assert {"subject", "modality", "tags"} <= set(reader.consts)
    assert "content" not in reader.consts and "content_meta" not in reader.consts  # differ somewhere
    rows = [0, 7, 8, 39, 40, 60, 79, 80, 109, 7, 0]
    want = {name: [table.slice(r, 1).column(name).to_pylist()[0] for r in rows] for name in _TEXT}
    got = reader.rows(rows)
    assert got == want
    got["tags"][0].append(("x", "1"))  # each row's empty map is its own list
    assert got["tags"][1] == []
    # one row group: constant maps of nulls, and a mix of null and empty maps (not a constant)
    one = part(0, 7, None, "{}").set_column(5, "tags", nulls)
    r1 = _ChunkReader(one)
    assert r1.consts["tags"] == (None,)
    assert r1.rows([0, 6]) == {name: [one.slice(r, 1).column(name).to_pylist()[0] for r in (0, 6)] for name in _TEXT}
    some_null = pa.array([None, [], None], pa.map_(pa.string(), pa.string())).take([0, 1, 2, 0, 1, 2, 0])
    mixed = one.set_column(5, "tags", some_null)
    r2 = _ChunkReader(mixed)
    assert "tags" not in r2.consts
    assert r2.rows([0, 1, 4]) == {name: [mixed.slice(r, 1).column(name).to_pylist()[0] for r in (0, 1, 4)]
                                  for name in _TEXT}


def test_text_columns_within_one_chunk_and_across_chunks(mem: aether.Memory) -> None:
    """The one-chunk read (the common case: a result set within one segment or the tail) and the
    grouped read across chunks give what the per-row decode gives."""
    t = mem._engine.table
    starts = list(t._chunk_starts)
    n = mem._engine.snapshot.n
    ends = [*starts[1:], n]
    sets = [[s, e - 1, s, (s + e) // 2] for s, e in zip(starts, ends, strict=True) if e > s]
    sets.append([n - 1, 0, starts[-1], 3])  # across chunks
    for rows in sets:
        got = t.text_columns(np.array(rows))
        for j, r in enumerate(rows):
            one = t.text(r)
            for k, col in got.items():
                v = col[j]
                assert (json.loads(v) if k in ("content_meta", "metadata") else v) == one[k], (k, r)
        got["tags"][0]["new"] = 1
        assert "new" not in t.text(rows[0])["tags"]  # the caller's dicts, not the table's


def test_hybrid_vector_query_is_the_dense_search_with_the_keyword_modules_plan() -> None:
    """A vector query in hybrid mode (the default) skips the keyword module's setup: the same hits,
    scores, plan and option errors as going through ``aether.retrieval.hybrid.run``."""
    from aether.errors import InvalidInputError
    from aether.keyword.index import available
    from aether.retrieval.hybrid import run

    if not available():
        pytest.skip("tantivy not installed: the default mode is dense")
    mem = aether.open(None, embedder=aether.PrecomputedEmbedder(DIM))
    fill(mem)
    eng = mem._engine
    from aether.index import find_index

    idx = find_index(eng)
    if idx is not None:
        idx.wait()  # no background seal changes the plan between the two searches compared
    q = vecs(2, 11)
    options: list[dict[str, Any]] = [
        {}, {"mode": "hybrid"}, {"mode": "hybrid", "fusion": "weighted", "dense_weight": 0.3, "rrf_k": 5}]
    for kw in options:
        hits = mem.search(q[0], k=7, valid_during=(None, None), **kw)
        dense = mem.search(q[0], k=7, valid_during=(None, None), mode="dense")
        assert [(h.atom.version_id, h.score) for h in hits] == [(h.atom.version_id, h.score) for h in dense]
        plan = mem.explain(q[0], k=7, valid_during=(None, None), **kw)
        snap = eng.snapshot
        f = mem._filters(None, None, (None, None), None)
        res, buckets, selected, extra = run(eng, snap, [q[0]], 7, f, mode="hybrid",
                                            fusion=kw.get("fusion", "adaptive" if not kw else "rrf"),
                                            rrf_k=kw.get("rrf_k", 60), dense_weight=kw.get("dense_weight"))
        assert [[(int(eng.table.version_id[r]), s) for r, s in rs] for rs in res] == [
            [(h.atom.version_id, h.score) for h in hits]]
        assert plan.mode == "hybrid" and plan.notes == extra["notes"] and plan.keyword is None and plan.fusion is None
        assert plan.selected_rows == selected and plan.buckets == buckets
        many = mem.search_many(q, k=3, valid_during=(None, None), **kw)
        assert [[h.score for h in hs] for hs in many] == [
            [h.score for h in mem.search(v, k=3, valid_during=(None, None), mode="dense")] for v in q]
    for bad in ({"rrf_k": 0}, {"dense_weight": 2.0}, {"fusion": "nope"}):
        with pytest.raises(InvalidInputError):
            mem.search(q[0], k=3, mode="hybrid", **bad)
    # a text query or a re-ranking option still goes through the keyword module
    assert mem.explain("bulk 3", k=3, mode="keyword").keyword is not None
    assert any("re-ranked" in n for n in mem.explain(q[0], k=3, recency=0.5).notes)
    mem.close()


def test_single_query_vector_fast_path_equals_the_engines_checks() -> None:
    """One float vector is normalised in the API without the general path: bit for bit the same
    array, and every bad vector still raises the engine's error."""
    from aether.api import _query_vectors
    from aether.errors import InvalidVectorError

    mem = aether.open(None, embedder=aether.PrecomputedEmbedder(DIM))
    eng = mem._engine
    rng = np.random.default_rng(3)
    cases: list[Any] = [rng.normal(size=DIM), rng.normal(size=DIM).astype(np.float32) * 1e-3,
                        rng.normal(size=DIM).astype(np.float16), np.full(DIM, 1e-17), np.full(DIM, 3e19),
                        rng.normal(size=DIM)[::2].repeat(2), [0.5] * DIM, rng.normal(size=(1, DIM))]
    for q in cases:
        got, want = _query_vectors(eng, [q]), eng.query_vectors([q])
        assert got.dtype == np.float32 and got.shape == (1, DIM) and got.flags.c_contiguous
        assert np.array_equal(got, want)
    bad: list[Any] = [np.zeros(DIM), np.full(DIM, np.nan), np.r_[np.inf, np.ones(DIM - 1)], np.ones(DIM + 1),
                      np.ones(DIM, np.int64) * 0]
    for q in bad:
        with pytest.raises(InvalidVectorError):
            _query_vectors(eng, [q])
    mem.close()


def test_constant_string_check_reads_every_block() -> None:
    """The one-value check runs in blocks: a different value, or a different length, past the first
    block (and off the sampled rows) is found; a sliced array is checked over its own rows only."""
    import pyarrow as pa

    from aether.engine.table import _Strings

    n = 600_000  # more than one block of 2-byte values
    same = ["ab"] * n
    assert _Strings(pa.array(same)).constant() == "ab"
    for odd in ("ac", "a", "abc"):
        vals = list(same)
        vals[n - 5] = odd
        assert _Strings(pa.array(vals)).constant() is None
        assert _Strings(pa.array(vals).slice(0, n - 10)).constant() == "ab"
    assert _Strings(pa.array(["é"] * 3 + [""])).constant() is None
    assert _Strings(pa.array([""] * 4)).constant() == ""
