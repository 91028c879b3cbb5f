"""The bitemporal algebra against a brute-force reference model (hypothesis).

Random sequences of add / add_many / correct / retract / delete run against aether and
against a tiny list-of-versions model that applies DESIGN.md's rules literally; then
random (valid_at, as_of) queries through get() and search() must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aether
from aether._time import OPEN, to_us

from .conftest import FakeClock

BASE = datetime(2020, 1, 1, tzinfo=UTC)
ATOMS = [f"atom-{i}" for i in range(4)]


def vt_(i: int | None) -> datetime | None:
    return None if i is None else BASE + timedelta(days=10 * i)


@dataclass
class V:
    atom: str
    content: str
    vf: int
    vt: int
    txf: int
    txt: int = OPEN


class Reference:
    """DESIGN.md's rules, applied literally over a flat list of versions."""

    def __init__(self) -> None:
        self.versions: list[V] = []

    def known(self, atom: str) -> bool:
        return any(v.atom == atom for v in self.versions)

    def current(self, atom: str) -> list[V]:
        return [v for v in self.versions if v.atom == atom and v.txt == OPEN]

    def put(self, atom: str, content: str, vf: int, vt: int, tx: int) -> None:
        for v in self.current(atom):
            if v.vf < vt and vf < v.vt:
                v.txt = tx
                if v.vf < vf:
                    self.versions.append(V(atom, v.content, v.vf, vf, tx))
                if vt < v.vt:
                    self.versions.append(V(atom, v.content, vt, v.vt, tx))
        self.versions.append(V(atom, content, vf, vt, tx))

    def latest_content(self, atom: str) -> str:
        return max((v for v in self.versions if v.atom == atom), key=lambda v: v.txf).content

    def retract(self, atom: str, at: int, tx: int) -> None:
        for v in self.current(atom):
            if v.vt > at:
                v.txt = tx
                if v.vf < at:
                    self.versions.append(V(atom, v.content, v.vf, at, tx))

    def delete(self, atom: str, tx: int) -> None:
        for v in self.current(atom):
            v.txt = tx

    def visible(self, atom: str, valid_at: int, as_of: int) -> list[str]:
        return [
            v.content
            for v in self.versions
            if v.atom == atom and v.txf <= as_of < v.txt and v.vf <= valid_at < v.vt
        ]


grid = st.integers(min_value=0, max_value=12)
atom_s = st.sampled_from(ATOMS)


@st.composite
def interval(draw: st.DrawFn) -> tuple[int, int | None]:
    a = draw(grid)
    b = draw(st.one_of(st.none(), st.integers(min_value=a + 1, max_value=14)))
    return a, b


op_s = st.one_of(
    st.tuples(st.just("add"), atom_s, interval()),
    st.tuples(st.just("correct"), atom_s, interval()),
    st.tuples(st.just("retract"), atom_s, grid),
    st.tuples(st.just("delete"), atom_s),
    st.tuples(st.just("many"), st.lists(st.tuples(atom_s, interval()), min_size=1, max_size=3)),
)


def run_ops(mem: aether.Memory, ref: Reference, ops: list, *, reopen_at: int | None = None,
            reopen=None) -> tuple[aether.Memory, list[int]]:
    txs: list[int] = []
    for n, op in enumerate(ops):
        if reopen_at is not None and n == reopen_at and reopen is not None:
            mem = reopen(mem)
        content = f"c{n}"
        kind = op[0]
        expect_error = kind in ("correct", "retract", "delete") and not ref.known(op[1])
        try:
            if kind == "add":
                _, atom, (a, b) = op
                mem.add(content, atom_id=atom, valid_from=vt_(a), valid_to=vt_(b))
            elif kind == "correct":
                _, atom, (a, b) = op
                mem.correct(atom, content, valid_from=vt_(a), valid_to=vt_(b))
            elif kind == "retract":
                mem.retract(op[1], at=vt_(op[2]))
            elif kind == "delete":
                mem.delete(op[1])
            else:
                mem.add_many(
                    [{"content": f"{content}.{j}", "atom_id": atom, "valid_from": vt_(a), "valid_to": vt_(b)}
                     for j, (atom, (a, b)) in enumerate(op[1])]
                )
        except aether.AtomNotFoundError:
            assert expect_error, f"unexpected AtomNotFoundError for {op}"
            continue
        assert not expect_error, f"expected AtomNotFoundError for {op}"
        assert mem.last_commit is not None
        tx = to_us(mem.last_commit)
        txs.append(tx)
        if kind in ("add", "correct"):
            _, atom, (a, b) = op
            ref.put(atom, content, to_us(vt_(a)), OPEN if b is None else to_us(vt_(b)), tx)
        elif kind == "retract":
            ref.retract(op[1], to_us(vt_(op[2])), tx)
        elif kind == "delete":
            ref.delete(op[1], tx)
        else:
            for j, (atom, (a, b)) in enumerate(op[1]):
                ref.put(atom, f"{content}.{j}", to_us(vt_(a)), OPEN if b is None else to_us(vt_(b)), tx)
    return mem, txs


def check_agreement(mem: aether.Memory, ref: Reference, txs: list[int]) -> None:
    as_ofs = sorted({t for tx in txs for t in (tx - 1, tx)} | {1})
    valid_ats = [to_us(vt_(i)) + d for i in range(0, 15) for d in (-1, 0)]
    for as_of in as_ofs:
        for valid_at in valid_ats:
            expected_set = set()
            for atom in ATOMS:
                exp = ref.visible(atom, valid_at, as_of)
                assert len(exp) <= 1, "reference broke the no-overlap invariant"
                got = mem.get(atom, valid_at=aether_time(valid_at), as_of=aether_time(as_of))
                assert (got.content.inline if got else None) == (exp[0] if exp else None), (
                    atom, valid_at, as_of
                )
                if exp:
                    expected_set.add(atom)
            hits = mem.search("c", k=50, valid_at=aether_time(valid_at), as_of=aether_time(as_of))
            assert {h.atom.atom_id for h in hits} == expected_set


def aether_time(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def check_invariants(mem: aether.Memory) -> None:
    for atom in ATOMS:
        hist = mem.history(atom)
        assert [h.tx_from for h in hist] == sorted(h.tx_from for h in hist)
        for h in hist:
            assert h.tx_to is None or h.tx_to > h.tx_from
            assert h.valid_to is None or h.valid_to > h.valid_from


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_s, min_size=1, max_size=12))
def test_algebra_matches_reference(ops: list) -> None:
    mem = aether.open(embedder=aether.HashingEmbedder(dim=16), clock=FakeClock())
    ref = Reference()
    mem, txs = run_ops(mem, ref, ops)
    check_invariants(mem)
    check_agreement(mem, ref, txs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op_s, min_size=2, max_size=10), data=st.data())
def test_algebra_survives_reopen(tmp_path_factory: pytest.TempPathFactory, ops: list, data: st.DataObject) -> None:
    """Same as above on a durable store closed (checkpointed) or abandoned midway, then reopened."""
    path: Path = tmp_path_factory.mktemp("model") / "store"
    clock = FakeClock()
    emb = aether.HashingEmbedder(dim=16)
    mem = aether.open(path, embedder=emb, clock=clock)
    checkpoint = data.draw(st.booleans())

    def reopen(m: aether.Memory) -> aether.Memory:
        if checkpoint:
            m.close()
        else:  # no checkpoint: the WAL alone must carry everything
            m._engine._wal.close()  # type: ignore[union-attr]
            m._engine._lock.release()  # type: ignore[union-attr]
        return aether.open(path, embedder=emb, clock=clock)

    ref = Reference()
    mem, txs = run_ops(mem, ref, ops, reopen_at=data.draw(st.integers(0, len(ops))), reopen=reopen)
    mem = reopen(mem)
    check_agreement(mem, ref, txs)
    mem.close()
