"""Bulk corrections and retractions: the per-batch (vectorised) planner against the per-row planner
and against the bitemporal reference model of ``test_bitemporal_model``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aether
from aether._time import OPEN, to_us
from aether.engine import bulkplan, txplan
from aether.engine.txplan import DeleteOp, PutOp, RetractOp
from aether.errors import AetherError, AtomNotFoundError, InvalidIntervalError

from .conftest import FakeClock
from .test_bitemporal_model import ATOMS, Reference, check_agreement, check_invariants, interval, vt_

DIM = 16
MORE_ATOMS = [f"atom-{i}" for i in range(8)]  # the model's four plus four more (some never written)


def _history_op() -> Any:
    atom = st.sampled_from(MORE_ATOMS)
    return st.one_of(
        st.tuples(st.just("add"), atom, interval()),
        st.tuples(st.just("correct"), atom, interval()),
        st.tuples(st.just("retract"), atom, st.integers(0, 12)),
        st.tuples(st.just("delete"), atom),
    )


def _apply_history(mem: aether.Memory, history: list[Any]) -> None:
    for n, op in enumerate(history):
        try:
            if op[0] == "add":
                mem.add(f"h{n}", atom_id=op[1], valid_from=vt_(op[2][0]), valid_to=vt_(op[2][1]),
                        tags={"n": n}, metadata={"m": n, "é": [1, 2]})
            elif op[0] == "correct":
                mem.correct(op[1], f"h{n}", valid_from=vt_(op[2][0]), valid_to=vt_(op[2][1]))
            elif op[0] == "retract":
                mem.retract(op[1], at=vt_(op[2]))
            else:
                mem.delete(op[1])
        except AtomNotFoundError:
            pass


@st.composite
def batch_op(draw: st.DrawFn, dim: int) -> Any:
    atom = draw(st.sampled_from(MORE_ATOMS))
    kind = draw(st.sampled_from(["put", "correct", "retract", "delete"]))
    if kind == "retract":
        at = draw(st.one_of(st.none(), st.integers(0, 14)))
        return RetractOp(atom, None if at is None else to_us(vt_(at)))
    if kind == "delete":
        return DeleteOp(atom)
    a = draw(st.one_of(st.none(), st.integers(0, 14)))
    b = draw(st.one_of(st.none(), st.integers(0, 15)))  # may be before a (or before now): invalid
    vec = None
    if draw(st.booleans()):
        v = np.asarray(draw(st.lists(st.floats(-1, 1), min_size=dim, max_size=dim)), np.float32) + 2.0
        vec = v / np.linalg.norm(v)
    correct = kind == "correct"
    content = draw(st.one_of(st.none(), st.just(f"new {atom}"))) if correct else draw(
        st.sampled_from([f"put {atom}", None]) if draw(st.integers(0, 9)) == 0 else st.just(f"put {atom}")
    )
    maybe = st.booleans()
    return PutOp(
        atom_id=atom,
        content=content,
        content_meta=None if correct else '{"p":1}',
        tags=None if correct and draw(maybe) else {"b": draw(st.integers(0, 3))},
        metadata=None if correct and draw(maybe) else '{"x":"y"}',
        modality=None if correct else "text",
        subject=None if correct else "s",
        quality=None if correct else 0.5,
        valid_from=None if a is None else to_us(vt_(a)),
        valid_to=OPEN if b is None else to_us(vt_(b)),
        vector=vec,
        must_exist=correct,
    )


def _same_plan(got: Any, want: Any) -> None:
    (h1, r1, n1), (h2, r2, n2) = got, want
    assert h1 == h2 and n1 == n2
    assert (r1 is None) == (r2 is None)
    if r1 is None:
        return
    for name in ("atom_id", "subject", "modality", "content", "content_meta", "tags", "metadata"):
        assert getattr(r1, name) == getattr(r2, name), name
    for name in ("version_id", "quality", "valid_from", "valid_to", "tx_from", "tx_to", "vectors"):
        assert np.array_equal(getattr(r1, name), getattr(r2, name)), name


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "lookup"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(_history_op(), max_size=14), data=st.data())
def test_bulk_planner_equals_per_row_planner(scan: bool, history: list[Any], data: st.DataObject) -> None:
    """Same closings, rows, fields, vectors and version ids; it declines exactly the batches that repeat
    an atom or that the per-row planner rejects."""
    with aether.open(embedder=aether.HashingEmbedder(dim=DIM), clock=FakeClock()) as mem:
        _apply_history(mem, history)
        eng = mem._engine
        unique = data.draw(st.booleans())  # distinct atoms (the per-batch case) half of the time
        ops = data.draw(st.lists(batch_op(DIM), min_size=1, max_size=8,
                                 unique_by=(lambda op: op.atom_id) if unique else None))
        eng.embed_missing(ops)
        tx = eng.snapshot.last_tx + 1
        try:
            want = txplan.plan_rows(eng, ops, tx)
        except AetherError:
            want = None
        old = bulkplan.SCAN_FACTOR
        bulkplan.SCAN_FACTOR = 1 << 40 if scan else 0
        try:
            got = bulkplan.plan_bulk(eng, ops, tx)
        finally:
            bulkplan.SCAN_FACTOR = old
        distinct = len({op.atom_id for op in ops}) == len(ops)
        if want is None or not distinct:
            assert got is None
        else:
            assert got is not None
            _same_plan(got, want)


# ------------------------------------------------------------------------- the public methods vs the model

many_s = st.lists(st.tuples(st.sampled_from(ATOMS), interval()), min_size=1, max_size=5)
model_op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(ATOMS), interval()),
    st.tuples(st.just("correct_many"), many_s),
    st.tuples(st.just("retract_many"), st.lists(st.tuples(st.sampled_from(ATOMS), st.integers(0, 12)),
                                                min_size=1, max_size=5)),
    st.tuples(st.just("add_many"), many_s),
)


def _run_model(mem: aether.Memory, ref: Reference, ops: list[Any]) -> list[int]:
    txs: list[int] = []
    for n, op in enumerate(ops):
        kind = op[0]
        rows = op[1] if kind != "add" else None
        missing = kind in ("correct_many", "retract_many") and any(not ref.known(r[0]) for r in op[1])
        try:
            if kind == "add":
                _, atom, (a, b) = op
                mem.add(f"c{n}", atom_id=atom, valid_from=vt_(a), valid_to=vt_(b))
            elif kind == "correct_many":
                assert rows is not None
                mem.correct_many([r[0] for r in rows], [f"c{n}.{j}" for j in range(len(rows))],
                                 valid_from=[vt_(r[1][0]) for r in rows], valid_to=[vt_(r[1][1]) for r in rows])
            elif kind == "retract_many":
                assert rows is not None
                mem.retract_many([r[0] for r in rows], at=[vt_(r[1]) for r in rows])
            else:
                assert rows is not None
                mem.add_many([{"content": f"c{n}.{j}", "atom_id": atom, "valid_from": vt_(a), "valid_to": vt_(b)}
                              for j, (atom, (a, b)) in enumerate(rows)])
        except AtomNotFoundError:
            assert missing, op
            continue
        assert not missing, op
        assert mem.last_commit is not None
        tx = to_us(mem.last_commit)
        txs.append(tx)
        if kind == "add":
            _, atom, (a, b) = op
            ref.put(atom, f"c{n}", to_us(vt_(a)), OPEN if b is None else to_us(vt_(b)), tx)
        elif kind == "retract_many":
            for atom, at in op[1]:
                ref.retract(atom, to_us(vt_(at)), tx)
        else:
            for j, (atom, (a, b)) in enumerate(op[1]):
                ref.put(atom, f"c{n}.{j}", to_us(vt_(a)), OPEN if b is None else to_us(vt_(b)), tx)
    return txs


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(model_op, min_size=1, max_size=10))
def test_bulk_methods_match_reference(ops: list[Any]) -> None:
    old = bulkplan.BULK_MIN_OPS
    bulkplan.BULK_MIN_OPS = 1  # every batch through the per-batch planner (where it applies)
    try:
        with aether.open(embedder=aether.HashingEmbedder(dim=16), clock=FakeClock()) as mem:
            ref = Reference()
            txs = _run_model(mem, ref, ops)
            check_invariants(mem)
            check_agreement(mem, ref, txs)
    finally:
        bulkplan.BULK_MIN_OPS = old


# ------------------------------------------------------------------------- examples

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 32)).astype(np.float32)


def _hist(mem: aether.Memory, ids: list[str]) -> list[list[tuple[Any, ...]]]:
    return [[(a.atom_id, a.version_id, a.content.inline, a.tags, a.metadata, a.subject, a.quality_score,
              a.valid_from, a.valid_to, a.tx_from, a.tx_to) for a in mem.history(i)] for i in ids]


def _seed(mem: aether.Memory, n: int) -> list[str]:
    ids = [f"id-{i}" for i in range(n)]
    mem.add_columns([f"fact {i}" for i in range(n)], atom_id=ids, vectors=_vecs(n), valid_from=T0,
                    tags=[{"k": i % 3} for i in range(n)], metadata={"src": "seed"}, subject="alice",
                    quality_score=0.25)
    return ids


def test_correct_many_equals_correct_loop_in_one_store(tmp_path: Path, embedder: aether.HashingEmbedder) -> None:
    """The batch, durable and reopened, holds exactly what per-row planning writes (forced for store b)."""
    n = 300
    mid = T0 + timedelta(days=30)
    out = []
    for name, min_ops in (("a", bulkplan.BULK_MIN_OPS), ("b", 1 << 40)):
        old = bulkplan.BULK_MIN_OPS
        bulkplan.BULK_MIN_OPS = min_ops
        try:
            with aether.open(tmp_path / name, embedder=embedder, clock=FakeClock()) as mem:
                ids = _seed(mem, n)
                mem.correct_many(ids[::2], [f"new {i}" for i in range(0, n, 2)], valid_from=mid,
                                 tags=[{"k": "x"} if i % 4 else None for i in range(0, n, 2)])
                mem.correct_many(ids[1::2], valid_from=mid, valid_to=mid + timedelta(days=3),
                                 metadata={"fixed": True})
                mem.retract_many(ids[:100], at=[mid + timedelta(days=i % 7) for i in range(100)])
                mem.add_many([{"content": f"again {i}", "atom_id": ids[i], "valid_from": T0 + timedelta(days=i % 40)}
                              for i in range(100, 200)], vectors=_vecs(100, 1))
            with aether.open(tmp_path / name, embedder=embedder) as mem:
                out.append(_hist(mem, ids))
        finally:
            bulkplan.BULK_MIN_OPS = old
    assert out[0] == out[1]
    with aether.open(tmp_path / "a", embedder=embedder) as mem:
        now = mem.get("id-298", valid_at=mid + timedelta(days=100))
        assert now is not None and now.content.inline == "new 298" and now.tags == {"k": "x"}
        assert now.metadata == {"src": "seed"} and now.subject == "alice" and now.quality_score == 0.25
        before = mem.get("id-298", valid_at=T0 + timedelta(days=1))
        assert before is not None and before.content.inline == "fact 298" and before.tags == {"k": 1}
        odd = mem.get("id-201", valid_at=mid + timedelta(days=1))
        assert odd is not None and odd.content.inline == "fact 201" and odd.metadata == {"fixed": True}
        after = mem.get("id-201", valid_at=mid + timedelta(days=5))  # past the corrected period: as before
        assert after is not None and after.metadata == {"src": "seed"}
        assert mem.get("id-4", valid_at=mid + timedelta(days=5)) is None  # retracted at mid + 4 days


def test_kept_content_keeps_its_vector(memory_mem: aether.Memory) -> None:
    ids = _seed(memory_mem, 40)
    t = memory_mem._engine.table
    memory_mem.correct_many(ids, tags={"v": 2})
    for i in (0, 17, 39):
        rows = [r for r in t.atom_rows[t.atom_index[ids[i]]] if t.tx_to[r] == OPEN]
        assert rows and all(np.allclose(t.vectors[r], t.vectors[t.atom_rows[t.atom_index[ids[i]]][0]]) for r in rows)
    hit = memory_mem.search(_vecs(40)[17], k=1, mode="dense")[0]  # now: the corrected version
    assert hit.atom.atom_id == "id-17" and hit.atom.tags == {"v": 2}


def test_bulk_errors_write_nothing(memory_mem: aether.Memory) -> None:
    ids = _seed(memory_mem, 30)
    before = memory_mem.stats().versions
    with pytest.raises(AtomNotFoundError, match="nope"):
        memory_mem.correct_many([*ids[:20], "nope", *ids[20:]], valid_from=T0 + timedelta(days=1))
    with pytest.raises(AtomNotFoundError):
        memory_mem.retract_many([*ids, "nope"])
    with pytest.raises(InvalidIntervalError, match="row 3"):
        memory_mem.correct_many(ids[:5], valid_from=[T0 + timedelta(days=2)] * 5,
                                valid_to=[T0 + timedelta(days=3)] * 3 + [T0] + [None])
    with pytest.raises(aether.InvalidInputError, match="row 2"):
        memory_mem.correct_many(ids[:4], ["a", "b", "  ", "d"])
    with pytest.raises(aether.InvalidInputError):
        memory_mem.correct_many(ids[:4], vectors=_vecs(3))
    # valid_from defaults to now: a valid_to in the past is an empty interval (found by the per-row planner)
    with pytest.raises(InvalidIntervalError):
        memory_mem.correct_many(ids, valid_to=T0)
    assert memory_mem.stats().versions == before
    memory_mem.correct_many([])
    memory_mem.retract_many([])
    assert memory_mem.stats().versions == before


def test_repeated_atoms_apply_in_order(memory_mem: aether.Memory) -> None:
    ids = _seed(memory_mem, 20)
    batch = ids + ids[:5]
    memory_mem.correct_many(batch, [f"first {a}" for a in ids] + [f"second {a}" for a in ids[:5]])
    got = memory_mem.get(ids[3])
    assert got is not None and got.content.inline == f"second {ids[3]}"
    got = memory_mem.get(ids[10])
    assert got is not None and got.content.inline == f"first {ids[10]}"


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "lookup"])
def test_bulk_planner_on_a_reopened_store(tmp_path: Path, embedder: aether.HashingEmbedder, scan: bool) -> None:
    """Rows loaded from segments (Arrow chunks), WAL rows and fresh commits, an erased atom: both planners
    agree, and the erased atom is not found."""
    path = tmp_path / "s"
    clock = FakeClock()
    with aether.open(path, embedder=embedder, clock=clock) as mem:
        ids = _seed(mem, 120)
        mem.correct_many(ids[:60], [f"v2 {i}" for i in range(60)], valid_from=T0 + timedelta(days=5))
        mem.checkpoint()
        mem.retract_many(ids[30:90], at=T0 + timedelta(days=9))  # left in the WAL
    with aether.open(path, embedder=embedder, clock=clock) as mem:
        mem.add_many([{"content": f"v3 {i}", "atom_id": ids[i], "valid_from": T0 + timedelta(days=2),
                       "valid_to": T0 + timedelta(days=7)} for i in range(0, 120, 3)], vectors=_vecs(40, 3))
        mem.erase(atom_id=ids[7])
        eng = mem._engine
        ops: list[Any] = [
            PutOp(atom_id=a, content=None if i % 2 else f"v4 {i}", content_meta=None, tags=None,
                  metadata=None if i % 3 else '{"z":1}', modality=None, subject=None, quality=None,
                  valid_from=to_us(T0 + timedelta(days=i % 11)), valid_to=OPEN if i % 4 else to_us(
                      T0 + timedelta(days=12)), vector=None, must_exist=True)
            if i % 5 else RetractOp(a, to_us(T0 + timedelta(days=i % 13)))
            for i, a in enumerate(ids) if a != ids[7]
        ]
        eng.embed_missing(ops)
        tx = eng.snapshot.last_tx + 1
        old = bulkplan.SCAN_FACTOR
        bulkplan.SCAN_FACTOR = 1 << 40 if scan else 0
        try:
            got = bulkplan.plan_bulk(eng, ops, tx)
            assert got is not None
            _same_plan(got, txplan.plan_rows(eng, ops, tx))
            assert bulkplan.plan_bulk(eng, [*ops, DeleteOp(ids[7])], tx) is None  # erased: not found
        finally:
            bulkplan.SCAN_FACTOR = old
        with pytest.raises(AtomNotFoundError):
            mem.correct_many([ids[7], *ids[8:40]], valid_from=T0)
        mem.correct_many(ids[8:40], tags={"after": "erase"})
        got_atom = mem.get(ids[9])
        assert got_atom is not None and got_atom.tags == {"after": "erase"}
