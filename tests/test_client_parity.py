"""Parity: the same public-API checks against ``aether.open(...)`` and ``aether.connect(...)`` to a live server.

The ``mem`` fixture is parametrized: ``local`` is an in-process store, ``remote`` a fresh namespace of a
live ``aether serve`` (uvicorn subprocess on 127.0.0.1). Both use the 64-d hashing embedder.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aether
from aether.errors import (
    AtomNotFoundError,
    InvalidInputError,
    InvalidIntervalError,
    InvalidVectorError,
    NaiveDatetimeError,
    ReadOnlyError,
)

from ._server_util import LiveServer, clean_exit

DIM = 64
T2023 = datetime(2023, 1, 1, tzinfo=UTC)
T2024 = datetime(2024, 6, 1, tzinfo=UTC)
_ns = itertools.count()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("parity") / "root").start()
    try:
        yield srv
    finally:
        assert clean_exit(srv.stop()), srv.log()[-3000:]
    for ns in srv.root.iterdir():
        if ns.is_dir():
            rep = aether.verify(ns)
            assert rep.ok, (ns, rep.problems)


@pytest.fixture(params=["local", "remote"])
def mem(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "local":
        m: Any = aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM))
    else:
        srv: LiveServer = request.getfixturevalue("live")
        m = aether.connect(srv.url, namespace=f"p{next(_ns)}")
    with m:
        yield m


def _rng_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------ the checks


def test_add_get_and_both_time_axes(mem: Any) -> None:
    atom = mem.add("Alice lives in Paris", tags={"user": "alice"}, metadata={"src": "chat"}, valid_from=T2023)
    assert isinstance(atom, aether.MemoryAtom)
    assert atom.content.inline == "Alice lives in Paris" and atom.tags == {"user": "alice"}
    assert atom.valid_from == T2023 and atom.valid_to is None and atom.tx_to is None
    before = mem.last_commit
    assert isinstance(before, datetime) and before == atom.tx_from
    fixed = mem.correct(atom.atom_id, "Alice lives in Lyon", valid_from=T2024)
    assert fixed.tags == {"user": "alice"} and fixed.metadata == {"src": "chat"}  # kept from the old version
    assert mem.get(atom.atom_id).content.inline == "Alice lives in Lyon"
    assert mem.get(atom.atom_id, valid_at="2023-06-01T00:00:00Z").content.inline == "Alice lives in Paris"
    assert mem.get(atom.atom_id, as_of=before).content.inline == "Alice lives in Paris"
    assert mem.get(atom.atom_id, valid_at=datetime(2022, 1, 1, tzinfo=UTC)) is None
    assert mem.get("no-such-atom") is None
    hits = mem.search("where does alice live", k=5)
    assert [type(h) for h in hits] == [aether.Hit] and hits[0].atom.content.inline == "Alice lives in Lyon"
    old = mem.search("where does alice live", k=5, valid_at="2023-06-01T00:00:00Z", as_of=before)
    assert [h.atom.content.inline for h in old] == ["Alice lives in Paris"]
    versions = mem.history(atom.atom_id)
    assert [v.content.inline for v in versions][:1] == ["Alice lives in Paris"]
    assert all(isinstance(v, aether.MemoryAtom) for v in versions)
    assert [v.tx_from for v in versions] == sorted(v.tx_from for v in versions)
    assert mem.history("no-such-atom") == []


def test_retract_delete_erase(mem: Any) -> None:
    a = mem.add("the office is open", valid_from=T2023)
    b = mem.add("the lab is open", valid_from=T2023)
    c = mem.add("the shop is open", valid_from=T2023, subject="shopkeeper")
    assert mem.retract(a.atom_id, at=T2024) is None
    assert mem.get(a.atom_id) is None  # now is after the retraction
    assert mem.get(a.atom_id, valid_at="2024-01-01T00:00:00Z").valid_to == T2024
    assert mem.delete(b.atom_id) is None
    assert mem.get(b.atom_id) is None and len(mem.history(b.atom_id)) == 1
    res = mem.erase(subject="shopkeeper")
    assert res.versions == 1
    assert mem.get(c.atom_id) is None and mem.history(c.atom_id) == []
    with pytest.raises(AtomNotFoundError):
        mem.correct("no-such-atom", "x")
    with pytest.raises(AtomNotFoundError):
        mem.retract("no-such-atom")
    with pytest.raises(AtomNotFoundError):
        mem.delete("no-such-atom")


def test_bulk_writes_with_vectors_and_batched_search(mem: Any) -> None:
    vecs = _rng_vectors(30)
    ids = mem.add_many([{"content": f"item {i}", "tags": {"grp": i % 3}} for i in range(10)], vectors=vecs[:10])
    assert len(ids) == 10 and all(isinstance(i, str) for i in ids)
    when = [datetime(2024, 1 + i % 12, 1, tzinfo=UTC) for i in range(20)]
    ids2 = mem.add_columns([f"col {i}" for i in range(20)], vectors=vecs[10:], valid_from=when,
                           tags=[{"grp": i % 2} for i in range(20)])
    assert len(ids2) == 20 and not set(ids) & set(ids2)
    hits = mem.search(vecs[3], k=3)
    assert hits[0].atom_id == ids[3] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    many = mem.search_many(vecs[:4], k=2)
    assert [r[0].atom_id for r in many] == ids[:4]
    assert [len(r) for r in mem.search_many(["item 1", "col 2"], k=2)] == [2, 2]
    window = mem.search(vecs[12], k=50, valid_during=("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"))
    # open-ended versions from January to March overlap [March, April); the add_many items start now
    assert sorted(h.atom.valid_from.month for h in window) == [1, 1, 2, 2, 3, 3]
    tagged = mem.search(vecs[0], k=50, tags={"grp": 0})
    assert tagged and all(h.atom.tags["grp"] == 0 for h in tagged)
    plan = mem.explain(vecs[12], k=5, valid_during=("2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"))
    assert isinstance(plan, aether.SearchPlan) and plan.k == 5 and plan.total_rows == 30
    assert plan.selected_rows == len(window)
    s = mem.stats()
    assert isinstance(s, aether.StoreStats) and s.atoms_current == 30 and s.dim == DIM


def test_views_are_pinned_and_read_only(mem: Any) -> None:
    a = mem.add("version one", valid_from=T2023)
    before = mem.last_commit
    mem.correct(a.atom_id, "version two", valid_from=T2023)
    v = mem.view(as_of=before)
    assert v.as_of == before
    assert v.get(a.atom_id).content.inline == "version one"
    assert [h.atom.content.inline for h in v.search("version", k=5)] == ["version one"]
    assert [x.content.inline for x in v.history(a.atom_id)] == ["version one"]
    assert v.view(valid_at="2024-01-01T00:00:00Z").get(a.atom_id).content.inline == "version one"
    with pytest.raises(ReadOnlyError):
        v.add("nope")
    with pytest.raises(ReadOnlyError):
        v.delete(a.atom_id)
    assert mem.get(a.atom_id).content.inline == "version two"


def test_errors_are_the_same_classes(mem: Any) -> None:
    mem.add("something")
    with pytest.raises(NaiveDatetimeError):
        mem.add("x", valid_from=datetime(2024, 1, 1))
    with pytest.raises(InvalidIntervalError):
        mem.add("x", valid_from=T2024, valid_to=T2023)
    with pytest.raises(InvalidVectorError):
        mem.add("x", vector=np.ones(3, np.float32))
    with pytest.raises(InvalidVectorError):
        mem.search(np.full(DIM, np.nan, np.float32))
    with pytest.raises(InvalidVectorError):
        mem.search([float("nan")] + [1.0] * (DIM - 1))  # a plain list, NaN included, goes as JSON
    with pytest.raises(InvalidInputError):
        mem.search("x", k=0)
    with pytest.raises(InvalidInputError):
        mem.search("x", valid_at="not a time")
    with pytest.raises(InvalidInputError):
        mem.add_many([{"content": "ok"}, {"content": "x", "colour": "red"}])
    assert mem.stats().atoms_current == 1  # nothing written by the rejected calls


# ------------------------------------------------------------------------------------------ same answers


def test_local_and_remote_give_the_same_answers(live: LiveServer, tmp_path: Path) -> None:
    vecs = _rng_vectors(40, seed=7)
    items = [{"content": f"fact {i} about {'cats' if i % 2 else 'dogs'}", "tags": {"k": i % 4},
              "valid_from": datetime(2024, 1 + i % 6, 1, tzinfo=UTC), "atom_id": f"atom-{i}"} for i in range(40)]
    local = aether.open(tmp_path / "l", embedder=aether.HashingEmbedder(dim=DIM))
    remote = aether.connect(live.url, namespace=f"same{next(_ns)}")
    with local, remote:
        for m in (local, remote):
            m.add_many(items, vectors=vecs)
            m.correct("atom-3", "fact 3 corrected", valid_from="2024-02-01T00:00:00Z")
            m.retract("atom-5", at="2024-05-01T00:00:00Z")

        def answers(m: Any) -> Any:
            def key(hits: list[aether.Hit]) -> list[tuple[str, str, float]]:
                return [(h.atom_id, h.atom.content.inline, round(h.score, 5)) for h in hits]

            return (
                key(m.search("cats", k=8)),
                key(m.search(vecs[9], k=8, valid_at="2024-03-15T00:00:00Z", tags={"k": 1})),
                [key(r) for r in m.search_many(vecs[:3], k=4, valid_during=("2024-02-01T00:00:00Z", None))],
                [(a.content.inline, a.valid_from, a.valid_to) for a in m.history("atom-3")],
                m.get("atom-5", valid_at="2024-05-02T00:00:00Z"),
                m.explain("dogs", k=3).selected_rows,
            )

        assert answers(local) == answers(remote)


def test_batch_corrections_and_retractions(mem: Any) -> None:
    if not hasattr(aether.Memory, "correct_many"):
        pytest.skip("this aether has no Memory.correct_many")
    ids = mem.add_many([{"content": f"fact {i}", "valid_from": T2023, "tags": {"i": i}} for i in range(6)])
    before = mem.last_commit
    mem.correct_many(ids[:3], [f"fact {i} fixed" for i in range(3)], valid_from=T2024)
    mem.retract_many(ids[3:5], at=[T2024, "2024-07-01T00:00:00Z"])
    assert [mem.get(a).content.inline for a in ids[:3]] == ["fact 0 fixed", "fact 1 fixed", "fact 2 fixed"]
    assert mem.get(ids[0]).tags == {"i": 0}
    assert mem.get(ids[0], valid_at="2023-06-01T00:00:00Z").content.inline == "fact 0"
    assert [mem.get(a, valid_at="2024-01-01T00:00:00Z").valid_to for a in ids[3:5]] == [
        T2024, datetime(2024, 7, 1, tzinfo=UTC)]
    assert mem.get(ids[5]).valid_to is None
    assert mem.get(ids[1], as_of=before).content.inline == "fact 1"
    with pytest.raises(AtomNotFoundError):
        mem.retract_many([ids[0], "no-such-atom"])
    assert mem.get(ids[0]) is not None  # nothing written by the failed batch


def test_newer_search_options_pass_through(mem: Any) -> None:
    import inspect

    params = inspect.signature(aether.Memory.search).parameters
    if "diversity" not in params:
        pytest.skip("this aether's Memory.search has no diversity option")
    vecs = _rng_vectors(12, seed=3)
    mem.add_many([f"doc {i}" for i in range(12)], vectors=vecs)
    plain = mem.search(vecs[0], k=5)
    diverse = mem.search(vecs[0], k=5, diversity=0.9)
    assert len(diverse) == 5 and diverse[0].atom_id == plain[0].atom_id
    with pytest.raises(InvalidInputError):
        mem.search(vecs[0], k=5, diversity="lots")
    from datetime import timedelta

    if "half_life" in params:
        assert len(mem.search(vecs[0], k=5, recency=0.5, half_life=timedelta(days=1))) == 5


def test_dot_atom_ids_reach_their_atom(mem: Any) -> None:
    # Review finding: the client sent "." and ".." as bare path segments, which the URL layer removes
    # (GET .../atoms/.. became GET /v1/namespaces/<ns>): get/history/delete hit another resource.
    for aid in (".", ".."):
        mem.add(f"fact {aid}", atom_id=aid)
        got = mem.get(aid)
        assert got is not None and got.atom_id == aid and got.content.inline == f"fact {aid}"
        assert [v.atom_id for v in mem.history(aid)] == [aid]
        mem.delete(aid)
        assert mem.get(aid) is None
        assert len(mem.history(aid)) >= 1
