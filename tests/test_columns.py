"""``Memory.add_columns``: the column-wise bulk path stores exactly what ``add_many`` stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aether
from aether.errors import (
    InvalidContentError,
    InvalidInputError,
    InvalidIntervalError,
    InvalidTagError,
    InvalidVectorError,
    NaiveDatetimeError,
    ReadOnlyError,
)

from .conftest import DIM, FakeClock

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def _fields(a: aether.MemoryAtom) -> tuple[Any, ...]:
    return (a.atom_id, a.content.inline, a.tags, a.metadata, a.content.metadata, a.modality, a.subject,
            a.quality_score, a.valid_from, a.valid_to, a.tx_from, a.tx_to)


def _dump(mem: aether.Memory, ids: list[str]) -> list[list[tuple[Any, ...]]]:
    return [[_fields(a) for a in mem.history(i)] for i in ids]


def _rows_to_items(n: int, cols: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``add_many`` items equivalent to a column batch (scalars broadcast)."""
    items: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, val in cols.items():
        for i in range(n):
            if isinstance(val, (list, tuple)):
                v = val[i]
            elif isinstance(val, np.ndarray):
                v = val[i].item() if val.dtype.kind != "M" else (
                    None if np.isnat(val[i]) else T0.replace(year=1970, month=1, day=1)
                    + timedelta(microseconds=int(val[i].astype("datetime64[us]").astype(np.int64)))
                )
            else:
                v = val
            if key == "quality_score" and v is None:
                continue
            items[i][key] = v
    return items


def test_columns_store_what_add_many_stores(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    n = 150
    vf = np.array([T0 + timedelta(hours=i) for i in range(n)], dtype=object)
    cols: dict[str, Any] = {
        "content": [f"fact number {i}" for i in range(n)],
        "atom_id": [f"id-{i}" for i in range(n)],
        "valid_from": list(vf),
        "valid_to": [None if i % 3 else T0 + timedelta(hours=i, minutes=30) for i in range(n)],
        "tags": [{"topic": i % 4} if i % 5 else None for i in range(n)],
        "metadata": {"source": "bulk"},
        "content_metadata": [{"page": i} for i in range(n)],
        "modality": ["text" if i % 2 else "structured" for i in range(n)],
        "subject": "alice",
        "quality_score": [0.5 + (i % 2) / 4 for i in range(n)],
    }
    vecs = _vecs(n)
    with aether.open(tmp_path / "a", embedder=embedder, clock=FakeClock()) as a, \
            aether.open(tmp_path / "b", embedder=embedder, clock=FakeClock()) as b:
        ids_a = a.add_columns(vectors=vecs, **cols)
        ids_b = b.add_many(_rows_to_items(n, cols), vectors=vecs)
        assert ids_a == ids_b == cols["atom_id"]
        assert _dump(a, ids_a) == _dump(b, ids_b)
        q = vecs[7]
        for kw in ({}, {"valid_at": T0 + timedelta(hours=20, minutes=10)}, {"tags": {"topic": 1}}):
            ha = [(h.atom.atom_id, round(h.score, 5)) for h in a.search(q, k=10, **kw)]  # type: ignore[arg-type]
            hb = [(h.atom.atom_id, round(h.score, 5)) for h in b.search(q, k=10, **kw)]  # type: ignore[arg-type]
            assert ha == hb and ha
    with aether.open(tmp_path / "a", embedder=embedder) as a:  # durable: replayed / read back on reopen
        assert [len(h) for h in _dump(a, ids_a)] == [1] * n
        assert a.get("id-4").tags == {"topic": 0}  # type: ignore[union-attr]


def test_array_inputs(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    n = 100
    base = np.datetime64("2024-03-01T00:00:00", "us")
    vf = base + np.arange(n).astype("timedelta64[h]")
    vt = vf + np.timedelta64(2, "h")
    vt[::10] = np.datetime64("NaT")
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        ids = mem.add_columns(pa.array([f"row {i}" for i in range(n)]), vectors=_vecs(n), valid_from=vf,
                              valid_to=vt, quality_score=np.linspace(0, 1, n))
        assert len(set(ids)) == n
        a0 = mem.get(ids[0])
        a1 = mem.get(ids[1], valid_at=datetime(2024, 3, 1, 1, 30, tzinfo=UTC))
        assert a0 is not None and a0.valid_to is None and a0.valid_from == datetime(2024, 3, 1, tzinfo=UTC)
        assert a1 is not None and a1.valid_to == datetime(2024, 3, 1, 3, tzinfo=UTC)
        assert mem.history(ids[-1])[0].quality_score == 1.0
        tz = pa.array([datetime(2024, 5, 1, tzinfo=UTC) + timedelta(days=i) for i in range(70)] + [None],
                      pa.timestamp("ms", "Europe/Paris"))
        ids2 = mem.add_columns([f"arrow {i}" for i in range(71)], vectors=_vecs(71, 1), valid_from=tz,
                               tags={"batch": 2})
        assert mem.get(ids2[3]).valid_from == datetime(2024, 5, 4, tzinfo=UTC)  # type: ignore[union-attr]
        last = mem.history(ids2[-1])[0]
        assert last.valid_from == last.tx_from  # a null valid_from means "now": the commit time
        assert len(mem.search(_vecs(1, 1)[0], k=100, tags={"batch": 2})) == 71


def test_existing_and_repeated_ids_write_new_versions(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    with aether.open(tmp_path / "a", embedder=embedder, clock=FakeClock()) as a, \
            aether.open(tmp_path / "b", embedder=embedder, clock=FakeClock()) as b:
        first = {"content": [f"v1 {i}" for i in range(80)], "atom_id": [f"x{i}" for i in range(80)],
                 "valid_from": T0}
        a.add_columns(vectors=_vecs(80), **first)
        b.add_many(_rows_to_items(80, first), vectors=_vecs(80))
        # x0..x9 exist already; "dup" appears twice in the batch
        second = {"content": [f"v2 {i}" for i in range(12)], "atom_id": [f"x{i}" for i in range(10)] + ["dup"] * 2,
                  "valid_from": T0 + timedelta(days=1)}
        a.add_columns(vectors=_vecs(12, 2), **second)
        b.add_many(_rows_to_items(12, second), vectors=_vecs(12, 2))
        ids = [f"x{i}" for i in range(80)] + ["dup"]
        assert _dump(a, ids) == _dump(b, ids)
        assert len(a.history("x3")) == 3  # v1 cut at the new valid_from, and v2
        a.correct("x50", "corrected", valid_from=T0 + timedelta(days=2))  # a row from a bulk run, then more
        assert [v.content.inline for v in a.history("x50") if v.tx_to is None] == ["v1 50", "corrected"]
    with aether.open(tmp_path / "a", embedder=embedder) as a:
        assert [v.content.inline for v in a.history("x50") if v.tx_to is None] == ["v1 50", "corrected"]
        assert a.get("dup").content.inline == "v2 11"  # type: ignore[union-attr]


def test_without_vectors_the_store_embeds(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        ids = mem.add_columns(["red kite", "grey heron", "barn owl"])
        assert [h.atom.atom_id for h in mem.search("grey heron", k=1)] == [ids[1]]


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"content": ["ok", 3, "ok"]}, InvalidContentError, "row 1"),
    ({"content": ["ok", "ok", "   "]}, InvalidContentError, "row 2"),
    ({"content": ["ok", "x" * 2000]}, InvalidContentError, "row 1"),
    ({"content": ["ok", "bad \ud800"]}, InvalidContentError, "row 1"),
    ({"content": "just a string"}, InvalidInputError, "sequence"),
    ({"content": ["a", "b"], "atom_id": ["x", ""]}, InvalidInputError, "row 1"),
    ({"content": ["a", "b"], "atom_id": ["x"]}, InvalidInputError, "1 values for 2 rows"),
    ({"content": ["a", "b"], "valid_from": [T0, "yesterday"]}, InvalidInputError, "row 1"),
    ({"content": ["a", "b"], "valid_from": [T0, datetime(2024, 1, 1)]}, NaiveDatetimeError, "row 1"),
    ({"content": ["a"], "valid_from": pa.array([datetime(2024, 1, 1)], pa.timestamp("us"))}, NaiveDatetimeError,
     "timezone"),
    ({"content": ["a", "b"], "valid_from": T0, "valid_to": [None, T0]}, InvalidIntervalError, "row 1"),
    ({"content": ["a", "b"], "quality_score": [0.5, 1.5]}, InvalidInputError, "row 1"),
    ({"content": ["a", "b"], "quality_score": [0.5, True]}, InvalidInputError, "row 1"),
    ({"content": ["a", "b"], "modality": ["text", "smell"]}, InvalidInputError, "row 1"),
    ({"content": ["a", "b"], "subject": ["s", ""]}, InvalidInputError, "row 1"),
    ({"content": ["a", "b"], "tags": [{}, {"k": [1]}]}, InvalidTagError, "row 1"),
    ({"content": ["a", "b"], "tags": {"k": float("nan")}}, InvalidTagError, "finite"),
    ({"content": ["a", "b"], "metadata": [{}, {"k": float("nan")}]}, InvalidInputError, "row 1"),
    ({"content": ["a", "b"], "vectors": np.ones((3, DIM))}, InvalidInputError, "3 vectors"),
    ({"content": ["a", "b"], "vectors": np.full((2, DIM), np.nan)}, InvalidVectorError, "NaN"),
    ({"content": ["a", "b"], "vectors": np.zeros((2, DIM))}, InvalidVectorError, "zero"),
]


@pytest.mark.parametrize(("kwargs", "err", "text"), BAD)
def test_bad_columns_are_rejected_and_nothing_is_written(
    tmp_path: Path, embedder: aether.HashingEmbedder, kwargs: dict[str, Any], err: type[Exception], text: str
) -> None:
    with aether.open(tmp_path / "s", embedder=embedder, max_content_bytes=1000) as mem:
        mem.add("already here", atom_id="keep")
        before = mem.stats().versions
        with pytest.raises(err, match=text):
            mem.add_columns(**kwargs)
        assert mem.stats().versions == before
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        assert mem.stats().versions == before and mem.get("keep") is not None


def test_views_and_read_only_stores_refuse(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        mem.add("one")
    with aether.open(tmp_path / "s", embedder=embedder, read_only=True) as ro, pytest.raises(ReadOnlyError):
        ro.add_columns(["two"])
    with aether.open(tmp_path / "s", embedder=embedder) as mem, pytest.raises(ReadOnlyError):
        mem.view(valid_at=T0).add_columns(["three"])


def test_empty_batch_writes_nothing(mem: aether.Memory) -> None:
    assert mem.add_columns([]) == []
    assert mem.stats().versions == 0


_times = st.one_of(st.none(), st.integers(0, 50).map(lambda h: T0 + timedelta(hours=h)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 90),
    known=st.integers(0, 5),
    broadcast=st.booleans(),
    vf=_times,
    span=st.one_of(st.none(), st.integers(1, 10)),
    repeat=st.booleans(),
)
def test_columns_equal_add_many_property(
    tmp_path_factory: pytest.TempPathFactory, embedder: aether.HashingEmbedder,
    n: int, known: int, broadcast: bool, vf: datetime | None, span: int | None, repeat: bool,
) -> None:
    """Random column batches (broadcast or per-row values, existing ids, repeats, open or closed
    intervals) leave the same store as the equivalent ``add_many``."""
    d = tmp_path_factory.mktemp("prop")
    ids = [f"k{i % max(1, n // 2)}" if repeat else f"k{i}" for i in range(n)]
    vt = None if span is None or vf is None else vf + timedelta(hours=span)
    cols: dict[str, Any] = {
        "content": [f"text {i}" for i in range(n)],
        "atom_id": ids,
        "valid_from": vf if broadcast else [vf] * n,
        "valid_to": vt if broadcast else [vt] * n,
        "tags": {"b": True} if broadcast else [{"i": i % 3} for i in range(n)],
        "subject": "s" if broadcast else [f"s{i % 2}" for i in range(n)],
    }
    vecs = _vecs(n, n)
    with aether.open(d / "a", embedder=embedder, clock=FakeClock()) as a, \
            aether.open(d / "b", embedder=embedder, clock=FakeClock()) as b:
        for m in (a, b):
            m.add_many([{"content": f"old {i}", "atom_id": f"k{i}", "valid_from": T0} for i in range(known)])
        a.add_columns(vectors=vecs, **cols)
        b.add_many(_rows_to_items(n, cols), vectors=vecs)
        every = sorted(set(ids) | {f"k{i}" for i in range(known)})
        assert _dump(a, every) == _dump(b, every)


def test_time_columns_in_any_unit_nulls_and_range(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    with aether.open(tmp_path / "s", embedder=embedder) as mem:
        ends = pa.array([datetime(2024, 2, 1, tzinfo=UTC), None, datetime(2024, 3, 1, tzinfo=UTC)],
                        pa.timestamp("us", "UTC"))
        ids = mem.add_columns(["a", "b", "c"], valid_from=T0, valid_to=ends)
        assert [mem.history(i)[0].valid_to for i in ids] == [datetime(2024, 2, 1, tzinfo=UTC), None,
                                                            datetime(2024, 3, 1, tzinfo=UTC)]
        days = np.array(["2024-01-02", "2024-01-03"], "datetime64[D]")
        years = np.array(["2023", "2024"], "datetime64[Y]")
        nanos = np.array(["2024-01-02T00:00:00.000001999"], "datetime64[ns]")
        ids = mem.add_columns(["d", "e"], valid_from=years, valid_to=days)
        assert mem.history(ids[1])[0].valid_from == datetime(2024, 1, 1, tzinfo=UTC)
        (nid,) = mem.add_columns(["f"], valid_from=nanos)  # stored in microseconds: the rest is dropped
        assert mem.history(nid)[0].valid_from == datetime(2024, 1, 2, 0, 0, 0, 1, tzinfo=UTC)
        before = mem.stats().versions
        for far in (np.array([0, 2**40], "datetime64[D]"), np.array([0, 20000], "datetime64[Y]"),
                    pa.array([0, 2**62], pa.timestamp("s", "UTC"))):
            with pytest.raises(InvalidIntervalError, match="row 1"):
                mem.add_columns(["g", "h"], valid_from=far)
        assert mem.stats().versions == before


def test_numpy_strings_and_missing_ids(mem: aether.Memory) -> None:
    ids = mem.add_columns(np.array(["alpha", "beta", "gamma"]), atom_id=["given", None, None])
    assert ids[0] == "given" and len(set(ids)) == 3 and None not in ids
    assert mem.get(ids[2]).content.inline == "gamma"  # type: ignore[union-attr]
