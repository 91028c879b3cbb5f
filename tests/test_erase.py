"""Erasure (GDPR) and compaction (issue 5), on real files: nothing of an erased subject stays readable."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import aether
from aether.cli import app
from aether.security.keys import generate_key, write_key_file
from tests._security_util import copy_store, find_secret

DIM = 32
ALICE = "alice-canary-q9z"
BOB = "bob-canary-k4w"


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _open(path: Path | None, key: bytes | None = None, **kw: object) -> aether.Memory:
    return aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), key=key, **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AETHER_KEY", raising=False)
    monkeypatch.delenv("AETHER_KEY_FILE", raising=False)


def _populate(mem: aether.Memory) -> dict[str, list[str]]:
    """Alice's and Bob's atoms spread over a segment, closings, a second segment and the WAL."""
    ids: dict[str, list[str]] = {"alice": [], "bob": []}
    a0 = mem.add(f"{ALICE} home address", subject="alice", tags={"owner": ALICE}, vector=_vec(1))
    b0 = mem.add(f"{BOB} likes tea", subject="bob", tags={"owner": "bob"}, vector=_vec(2))
    ids["alice"].append(a0.atom_id)
    ids["bob"].append(b0.atom_id)
    mem.checkpoint()
    mem.correct(a0.atom_id, f"{ALICE} new home address", vector=_vec(3))  # closes a sealed row
    mem.correct(b0.atom_id, f"{BOB} likes green tea")
    ids["alice"].append(mem.add(f"{ALICE} phone number", subject="alice", vector=_vec(4)).atom_id)
    mem.checkpoint()
    ids["alice"].append(mem.add(f"{ALICE} in the WAL", subject="alice", metadata={"m": ALICE}).atom_id)
    ids["bob"].append(mem.add(f"{BOB} in the WAL", subject="bob").atom_id)
    return ids


def _alice_needles() -> list[bytes]:
    return [ALICE.encode()] + [_vec(s).tobytes() for s in (1, 3, 4)]


def _assert_alice_gone(mem: aether.Memory, ids: dict[str, list[str]], before: object) -> None:
    for a in ids["alice"]:
        assert mem.get(a) is None
        assert mem.history(a) == []
        assert mem.view(as_of=before).get(a) is None  # as-of views too: erased for all time
        assert mem.get(a, as_of=before) is None
    for q in (ALICE, _vec(1), _vec(3)):
        hits = mem.search(q, k=10) + mem.view(as_of=before).search(q, k=10)
        hits += mem.search(q, k=10, valid_during=(None, None))
        assert all(h.atom.subject != "alice" for h in hits)
        assert all(ALICE not in h.atom.content.inline for h in hits)
    for b in ids["bob"]:
        got = mem.get(b)
        assert got is not None and BOB in got.content.inline


def test_erase_subject_then_compact_purges_an_unencrypted_store(tmp_path: Path) -> None:
    root = tmp_path / "s"
    mem = _open(root)
    ids = _populate(mem)
    mem.search(ALICE, k=3, mode="keyword") if "mode" in mem.search.__code__.co_varnames else None
    assert find_secret(root, _alice_needles())  # the scanner sees Alice before the erasure
    before = mem.last_commit
    res = mem.erase(subject="alice")
    assert res.versions >= 4 and res.keys_destroyed == 0
    _assert_alice_gone(mem, ids, before)
    mem.compact()
    _assert_alice_gone(mem, ids, before)
    assert find_secret(root, _alice_needles()) == [], "erased data still on disk after compaction"
    mem.close()
    assert find_secret(root, _alice_needles()) == []
    assert find_secret(root, [BOB.encode()])  # other subjects' data is intact, on disk and in reads
    with _open(root) as mem:
        _assert_alice_gone(mem, ids, before)
        assert mem.history(ids["bob"][0])[-1].content.inline.endswith("green tea")
    assert aether.verify(root).ok
    # the tombstone in the hash-chained log is content-free
    entries = [
        json.loads(x) for p in sorted((root / "log").glob("*.log")) for x in p.read_text().splitlines()
    ]
    tomb = [e for e in entries if e["kind"] == "erase"]
    assert len(tomb) == 1 and tomb[0]["scope"] == "subject" and tomb[0]["versions"] == res.versions
    assert "alice" not in json.dumps(tomb)


def test_erase_survives_reopen_before_compaction(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with _open(root) as mem:
        ids = _populate(mem)
        before = mem.last_commit
        mem.erase(atom_id=ids["alice"][0])
        with pytest.raises(aether.AtomNotFoundError):
            mem.erase(atom_id=ids["alice"][0])
        with pytest.raises(aether.AtomNotFoundError):
            mem.erase(atom_id="no-such-atom")
    with _open(root) as mem:  # erasure came back from the manifest (checkpointed on close)
        assert mem.get(ids["alice"][0]) is None and mem.history(ids["alice"][0]) == []
        assert mem.get(ids["alice"][1]) is not None  # same subject, other atom: intact
        mem.erase(atom_id=ids["alice"][1])
        mem._engine._wal.close()  # no checkpoint: the erasure is only in the WAL
        mem._engine._lock.release()
    with _open(root) as mem:
        assert mem.get(ids["alice"][1]) is None
        assert mem.view(as_of=before).get(ids["alice"][1]) is None
        assert mem.get(ids["alice"][2]) is not None
        assert mem.stats().versions > 0


def test_subject_erasure_destroys_the_key_for_old_copies(tmp_path: Path) -> None:
    key = generate_key()
    root = tmp_path / "enc"
    mem = _open(root, key)
    ids = _populate(mem)
    mem.checkpoint()
    backup = tmp_path / "backup"
    shutil.copytree(root, backup)  # a copy of every data file, taken before the erasure
    res = mem.erase(subject="alice")
    assert res.keys_destroyed == 1
    _assert_alice_gone(mem, ids, mem.last_commit - timedelta(microseconds=1))
    mem.close()
    # The old copy with the store's keyring as it is now: Alice cannot be decrypted, Bob can.
    old = copy_store(backup, tmp_path / "old")
    shutil.copy(root / "keys" / "keyring.json", old / "keys" / "keyring.json")
    with _open(old, key) as m2:
        for a in ids["alice"]:
            assert m2.get(a) is None and m2.history(a) == []
        assert all(h.atom.subject != "alice" for h in m2.search(_vec(1), k=20))
        assert m2.get(ids["bob"][0]) is not None
    # and at the row level: every sealed row of Alice names a key the keyring no longer has
    from aether.security.keyring import Keyring

    ring = Keyring.load(root, json.loads((root / "MANIFEST.json").read_bytes())["store_id"], key)
    assert "alice" not in ring.subjects() and "bob" in ring.subjects()
    with _open(root, key) as m3:
        m3.compact()
        assert all(m3.get(a) is None for a in ids["alice"])
        assert m3.get(ids["bob"][1]) is not None
    assert aether.verify(root, key=key).ok


def test_erase_on_views_read_only_and_in_memory(tmp_path: Path) -> None:
    with _open(None) as mem:
        a = mem.add("x", subject="s1")
        b = mem.add("y", subject="s2")
        with pytest.raises(aether.ReadOnlyError):
            mem.view().erase(subject="s1")
        with pytest.raises(aether.InvalidInputError):
            mem.erase()
        with pytest.raises(aether.InvalidInputError):
            mem.erase(subject="s1", atom_id=a.atom_id)
        assert mem.erase(subject="nobody").versions == 0
        assert mem.erase(subject="s1").versions == 1
        assert mem.get(a.atom_id) is None
        r = mem.compact()
        assert r.purged == 1 and r.rows_after == 1
        assert mem.get(b.atom_id) is not None and mem.search("y", k=5)[0].atom.atom_id == b.atom_id
        c = mem.add("z", subject="s1")  # the subject can write again
        assert mem.get(c.atom_id) is not None
    root = tmp_path / "s"
    _open(root).close()
    with _open(root, read_only=True) as ro, pytest.raises(aether.ReadOnlyError):
        ro.erase(subject="s1")


def test_cli_erase_and_compact(tmp_path: Path) -> None:
    key = generate_key()
    kf = tmp_path / "k"
    write_key_file(kf, key)
    root = tmp_path / "s"
    with _open(root, key) as mem:
        a = mem.add(f"{ALICE} via cli", subject="alice")
        b = mem.add(f"{BOB} via cli", subject="bob")
    runner = CliRunner()
    res = runner.invoke(app, ["erase", str(root), "--subject", "alice", "--key-file", str(kf)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compact", str(root), "--key-file", str(kf)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["erase", str(root), "--key-file", str(kf)]).exit_code != 0
    res = runner.invoke(app, ["erase", str(root), "--atom-id", b.atom_id, "--compact", "--key-file", str(kf)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["verify", str(root), "--key-file", str(kf)]).exit_code == 0
    with _open(root, key) as mem:
        assert mem.get(a.atom_id) is None and mem.get(b.atom_id) is None
        assert mem.stats().versions == 0


_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["add", "add", "add", "erase_subject", "erase_atom", "compact", "checkpoint", "reopen"]
        ),
        st.integers(0, 2),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, encrypted=st.booleans())
def test_erasure_against_a_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]], encrypted: bool
) -> None:
    """Random adds, erasures, compactions and reopens against a dict model of what must survive."""
    root = tmp_path_factory.mktemp("model") / "s"
    key = generate_key() if encrypted else None
    model: dict[str, tuple[str, str]] = {}  # atom_id -> (subject, latest content)
    erased_tokens: set[str] = set()
    written: dict[str, list[str]] = {}
    mem = _open(root, key)
    n = 0
    try:
        for op, s, a in ops:
            subj, aid = f"s{s}", f"a{a}-s{s}"
            if op == "add":
                n += 1
                text = f"[tok:{aid}:{n}]"
                mem.add(text, subject=subj, atom_id=aid)
                model[aid] = (subj, text)
                written.setdefault(aid, []).append(text)
            elif op == "erase_subject":
                mem.erase(subject=subj)
                for x in [x for x, (sj, _) in model.items() if sj == subj]:
                    del model[x]
                    erased_tokens.update(written.pop(x))
            elif op == "erase_atom":
                if aid in model:
                    mem.erase(atom_id=aid)
                    del model[aid]
                    erased_tokens.update(written.pop(aid))
                else:
                    with pytest.raises(aether.AtomNotFoundError):
                        mem.erase(atom_id=aid)
            elif op == "compact":
                mem.compact()
            elif op == "checkpoint":
                mem.checkpoint()
            else:
                mem.close()
                mem = _open(root, key)
            for x in {f"a{i}-s{j}" for i in range(4) for j in range(3)}:
                got = mem.get(x)
                if x in model:
                    assert got is not None
                    assert (got.subject, got.content.inline) == model[x]
                    assert {h.subject for h in mem.history(x)} == {model[x][0]}
                else:
                    assert got is None and mem.history(x) == []
            if erased_tokens:
                hits = mem.search(next(iter(erased_tokens)), k=50, valid_during=(None, None))
                assert all(h.atom.atom_id in model for h in hits)
        mem.compact()
    finally:
        mem.close()
    if not encrypted:
        assert find_secret(root, [t.encode() for t in erased_tokens]) == []
    assert aether.verify(root, key=key).ok
