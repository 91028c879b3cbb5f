"""Agent state chains: hashing, validation, persist/restore (latest and as of), verify, tamper, reopen, crypto."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aether
from aether import (
    ConsciousnessLevel,
    ConsciousnessState,
    InvalidInputError,
    KeyRequiredError,
    StateConflictError,
    StatePersistenceManager,
    StateTamperedError,
    WrongKeyError,
)
from aether.state.chain import decode

from .conftest import FakeClock


def _state(agent: str = "agent-1", **traits: float) -> ConsciousnessState:
    s = ConsciousnessState(agent_id=agent)
    s.personality_traits = dict(traits) or {"curiosity": 0.8}
    s.learning_patterns = {"pattern1": "value1"}
    return s


def _chain(mgr: StatePersistenceManager, n: int, agent: str = "agent-1") -> list[ConsciousnessState]:
    states = [_state(agent, step=0.0)]
    mgr.persist(states[0])
    for i in range(1, n):
        nxt = states[-1].successor()
        nxt.personality_traits["step"] = float(i)
        mgr.persist(nxt)
        states.append(nxt)
    return states


def _files(root: Path, agent: str = "agent-1") -> list[Path]:
    return sorted((root / "state" / f"a-{agent}").glob("*.snap"))


def _flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------- the state itself


def test_continuity_hash_is_blake2b_128_over_the_seed_fields() -> None:
    s = _state()
    expected = hashlib.blake2b(
        json.dumps(
            {
                "agent_id": "agent-1",
                "consciousness_level": "basic",
                "personality_traits": {"curiosity": 0.8},
                "learning_patterns": {"pattern1": "value1"},
                "previous_state_id": None,
            },
            sort_keys=True,
        ).encode(),
        digest_size=16,
    ).hexdigest()
    assert s.calculate_continuity_hash() == expected
    assert len(expected) == 32
    s.current_context = {"not": "hashed"}
    assert s.calculate_continuity_hash() == expected
    s.personality_traits["curiosity"] = 0.9
    assert s.calculate_continuity_hash() != expected


def test_serialize_round_trip_keeps_every_field() -> None:
    s = _state()
    s.consciousness_level = ConsciousnessLevel.ADVANCED
    s.current_context = {"task": "x", "nested": [1, 2, {"a": None}]}
    s.quality_metrics = {"q": 0.5}
    s.performance_metrics = {"latency_ms": 12}
    s.previous_state_id = "prev"
    s.continuity_hash = s.calculate_continuity_hash()
    back = ConsciousnessState.deserialize(s.serialize())
    assert back == s
    assert ConsciousnessState.from_dict(s.to_dict()) == s


def test_validate_rules() -> None:
    s = _state()
    assert s.validate().is_valid  # no hash yet: fine (the seed's test)
    assert ConsciousnessState(agent_id="a").validate().is_valid  # no traits: fine (the integration test)
    assert not ConsciousnessState().validate().is_valid  # no agent
    s.continuity_hash = "0" * 32
    r = s.validate()
    assert not r.is_valid and "continuity_hash does not match the state" in r.errors
    s.continuity_hash = s.calculate_continuity_hash()
    assert s.validate().is_valid
    s.personality_traits["bad"] = float("nan")
    assert not s.validate().is_valid
    naive = _state()
    naive.timestamp = datetime(2024, 1, 1)  # naive on purpose
    assert not naive.validate().is_valid
    with pytest.raises(InvalidInputError):
        ConsciousnessState.deserialize("{}")
    with pytest.raises(InvalidInputError):
        ConsciousnessState.deserialize("not json")


# ---------------------------------------------------------------------------- chains


def test_chain_links_and_lists(tmp_path: Path) -> None:
    mgr = StatePersistenceManager(tmp_path)
    states = _chain(mgr, 3)
    infos = mgr.list_states("agent-1")
    assert [i.seq for i in infos] == [1, 2, 3]
    assert [i.state_id for i in infos] == [s.state_id for s in states]
    assert infos[0].previous_state_id is None
    assert [i.previous_state_id for i in infos[1:]] == [s.state_id for s in states[:-1]]
    assert [i.prev_digest for i in infos[1:]] == [i.digest for i in infos[:-1]]
    assert mgr.list_agents() == ["agent-1"]
    report = mgr.verify("agent-1")
    assert report.ok and report.length == 3 and report.head_state_id == states[-1].state_id
    latest = mgr.restore("agent-1")
    assert latest == states[-1]


def test_previous_state_id_is_set_to_the_head_when_missing() -> None:
    mgr = StatePersistenceManager()
    a, b = _state(), _state(x=1.0)
    mgr.persist(a)
    mgr.persist(b)  # b.previous_state_id was None
    assert b.previous_state_id == a.state_id
    assert mgr.verify("agent-1").ok


def test_duplicates_and_forks_are_refused() -> None:
    mgr = StatePersistenceManager()
    a = _state()
    mgr.persist(a)
    b = a.successor()
    mgr.persist(b)
    with pytest.raises(StateConflictError):
        mgr.persist(a)  # already in the chain
    fork = a.successor()  # continues a, but the head is b
    with pytest.raises(StateConflictError):
        mgr.persist(fork)
    res = asyncio.run(mgr.persist_consciousness_state(fork))
    assert not res.success and res.error and "fork" in res.error
    res = asyncio.run(mgr.persist_consciousness_state(ConsciousnessState()))
    assert not res.success and "agent_id" in (res.error or "")


def test_restore_as_of_a_persist_time(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2025, 1, 1, tzinfo=UTC))
    mgr = StatePersistenceManager(tmp_path, clock=clock)
    states = _chain(mgr, 3)
    times = [i.persisted_at for i in mgr.list_states("agent-1")]
    assert all(t is not None for t in times)
    us = [i.persisted_us or 0 for i in mgr.list_states("agent-1")]
    assert us == sorted(set(us))
    assert mgr.restore("agent-1", as_of=datetime(2024, 1, 1, tzinfo=UTC)) is None
    for t, s in zip(times, states, strict=True):
        assert mgr.restore("agent-1", as_of=t) == s
    restored = asyncio.run(mgr.restore_consciousness_state("agent-1", as_of=times[1]))
    assert restored == states[1]
    with pytest.raises(aether.NaiveDatetimeError):
        mgr.restore("agent-1", as_of=datetime(2025, 1, 1))  # naive on purpose


def test_chains_survive_reopen_and_share_a_store_directory(tmp_path: Path) -> None:
    mem = aether.open(tmp_path, embedder=aether.HashingEmbedder(dim=16))
    mem.add("the store and the state chains share one directory")
    mgr = StatePersistenceManager(mem)  # a Memory: its directory
    assert mgr.path == tmp_path
    states = _chain(mgr, 2)
    _chain(mgr, 1, agent="other agent/ü")
    mem.close()

    mem = aether.open(tmp_path, embedder=aether.HashingEmbedder(dim=16))
    assert mem.stats().atoms_current == 1
    again = StatePersistenceManager(tmp_path)
    assert again.list_agents() == ["agent-1", "other agent/ü"]
    assert again.restore("agent-1") == states[-1]
    nxt = states[-1].successor()
    again.persist(nxt)
    assert [i.seq for i in again.list_states("agent-1")] == [1, 2, 3]
    assert again.verify("agent-1").ok and again.verify("other agent/ü").ok
    mem.close()


def test_unknown_agent_and_bad_agent_ids() -> None:
    mgr = StatePersistenceManager()
    assert mgr.restore("nobody") is None
    assert asyncio.run(mgr.restore_consciousness_state("nobody")) is None
    assert mgr.list_states("nobody") == []
    with pytest.raises(InvalidInputError):
        mgr.restore("")


# ---------------------------------------------------------------------------- tampering


@pytest.mark.parametrize("where", ["magic", "header", "body", "digest"])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_flipped_byte_in_any_snapshot_is_detected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str, which: int
) -> None:
    mgr = StatePersistenceManager(tmp_path)
    _chain(mgr, 3)
    path = _files(tmp_path)[which]
    size = path.stat().st_size
    pos = {"magic": 2, "header": 20, "body": size - 40, "digest": size - 1}[where]
    _flip(path, pos)

    fresh = StatePersistenceManager(tmp_path)
    report = fresh.verify("agent-1")
    assert not report.ok
    assert any(path.name in p for p in report.problems)
    # Restoring the damaged snapshot (or its successor, whose link no longer holds) fails.
    t = mgr.list_states("agent-1")[which].persisted_at
    with caplog.at_level(logging.ERROR, logger="aether.state"):
        assert fresh.restore("agent-1", as_of=t) is None
    assert "State restoration failed" in caplog.text
    with pytest.raises(StateTamperedError):
        fresh.restore("agent-1", as_of=t, strict=True)
    with pytest.raises(StateTamperedError):
        asyncio.run(fresh.restore_consciousness_state_strict("agent-1", as_of=t))
    if which < 2:  # the next snapshot no longer chains to the damaged one
        with pytest.raises(StateTamperedError):
            fresh.restore("agent-1", as_of=mgr.list_states("agent-1")[which + 1].persisted_at, strict=True)
    else:  # a damaged head cannot be extended
        with pytest.raises(StateTamperedError):
            fresh.persist(_state(more=1.0))


_CHAIN_BYTES: dict[str, dict[int, bytes]] = {}


def _memory_chain_files() -> dict[str, dict[int, bytes]]:
    if not _CHAIN_BYTES:
        mgr = StatePersistenceManager()
        _chain(mgr, 2)
        _CHAIN_BYTES.update(mgr._backend.files)  # type: ignore[attr-defined]
    return _CHAIN_BYTES


@settings(max_examples=60, deadline=None)
@given(which=st.integers(0, 1), pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_property_any_bit_flip_is_detected(which: int, pos: int, bit: int) -> None:
    files = _memory_chain_files()
    mgr = StatePersistenceManager()
    store = {a: dict(f) for a, f in files.items()}
    data = bytearray(store["agent-1"][which + 1])
    data[pos % len(data)] ^= 1 << bit
    store["agent-1"][which + 1] = bytes(data)
    mgr._backend.files = store  # type: ignore[attr-defined]
    assert not mgr.verify("agent-1").ok


def test_missing_middle_snapshot_and_moved_snapshot_are_detected(tmp_path: Path) -> None:
    mgr = StatePersistenceManager(tmp_path)
    _chain(mgr, 3)
    _chain(mgr, 1, agent="b")
    files = _files(tmp_path)
    files[1].unlink()
    report = StatePersistenceManager(tmp_path).verify("agent-1")
    assert not report.ok and any("missing" in p for p in report.problems)
    # A snapshot copied into another agent's chain names the wrong agent.
    (tmp_path / "state" / "a-b" / "0000000002.snap").write_bytes(files[2].read_bytes())
    assert not StatePersistenceManager(tmp_path).verify("b").ok


def test_file_layout_is_json_inside_no_pickle(tmp_path: Path) -> None:
    mgr = StatePersistenceManager(tmp_path)
    _chain(mgr, 1)
    raw = decode(_files(tmp_path)[0].read_bytes(), "x")
    assert raw.header["agent_id"] == "agent-1" and raw.header["compression"] == "zstd"
    import zstandard

    body = json.loads(zstandard.ZstdDecompressor().decompress(raw.body))
    assert body["personality_traits"] == {"step": 0.0}


# ---------------------------------------------------------------------------- encryption


def test_encryption_round_trip_and_key_errors(tmp_path: Path) -> None:
    key = os.urandom(32)
    mgr = StatePersistenceManager(tmp_path, key=key)
    s = _state(secret_trait=0.123456)
    s.current_context = {"password-ish": "hunter2-hunter2"}
    mgr.persist(s)
    assert mgr.encrypted
    blob = _files(tmp_path)[0].read_bytes()
    assert b"hunter2" not in blob and b"secret_trait" not in blob
    assert StatePersistenceManager(tmp_path, key=key).restore("agent-1") == s

    no_key = StatePersistenceManager(tmp_path)
    assert no_key.restore("agent-1") is None
    with pytest.raises(KeyRequiredError):
        no_key.restore("agent-1", strict=True)
    report = no_key.verify("agent-1")
    assert report.ok and report.unchecked == 1  # structure verified, content not decrypted
    assert no_key.list_states("agent-1")[0].encrypted  # listing needs no key

    with pytest.raises(WrongKeyError):
        StatePersistenceManager(tmp_path, key=os.urandom(32)).restore("agent-1", strict=True)
    with pytest.raises(InvalidInputError):
        StatePersistenceManager(tmp_path, key=b"short")


def test_encrypted_chain_rejects_a_forged_plaintext_snapshot(tmp_path: Path) -> None:
    key = os.urandom(32)
    StatePersistenceManager(tmp_path, key=key).persist(_state())
    # Someone without the key replaces the snapshot with a well-formed plaintext one.
    forger_dir = tmp_path / "forger"
    forged = _state(evil=1.0)
    StatePersistenceManager(forger_dir).persist(forged)
    _files(tmp_path)[0].write_bytes(_files(forger_dir)[0].read_bytes())
    mgr = StatePersistenceManager(tmp_path, key=key)
    with pytest.raises(StateTamperedError):
        mgr.restore("agent-1", strict=True)
    assert not mgr.verify("agent-1").ok


def test_encrypted_header_is_authenticated(tmp_path: Path) -> None:
    """Re-computing the file checksum after editing the header does not help without the key."""
    from aether.state.chain import encode

    key = os.urandom(32)
    mgr = StatePersistenceManager(tmp_path, key=key)
    mgr.persist(_state())
    path = _files(tmp_path)[0]
    raw = decode(path.read_bytes(), "x")
    header = dict(raw.header)
    header["timestamp_us"] += 1
    new_header = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(encode(new_header, raw.body))
    with pytest.raises(StateTamperedError):
        StatePersistenceManager(tmp_path, key=key).restore("agent-1", strict=True)


# ---------------------------------------------------------------------------- CLI


def test_cli_state_commands_through_the_real_entry_point(tmp_path: Path) -> None:
    import subprocess
    import sys

    clock = FakeClock(datetime(2025, 3, 1, tzinfo=UTC))
    mgr = StatePersistenceManager(tmp_path, clock=clock)
    states = _chain(mgr, 3)
    exe = Path(sys.executable).with_name("aether")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), "state", *args], capture_output=True, text=True, timeout=120)

    out = cli("list", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        {
            "agent_id": "agent-1",
            "snapshots": 3,
            "head_state_id": states[-1].state_id,
            "last_persisted": mgr.list_states("agent-1")[-1].persisted_at.isoformat(),  # type: ignore[union-attr]
            "encrypted": False,
            "broken": 0,
        }
    ]
    t1 = mgr.list_states("agent-1")[1].persisted_at
    assert t1 is not None
    out = cli("show", str(tmp_path), "agent-1", "--as-of", t1.isoformat())
    assert out.returncode == 0, out.stderr
    assert ConsciousnessState.deserialize(out.stdout) == states[1]

    _flip(_files(tmp_path)[1], 30)
    out = cli("verify", str(tmp_path), "agent-1", "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    assert not report["ok"] and any("0000000002.snap" in p for p in report["problems"])
    out = cli("show", str(tmp_path), "agent-1", "--as-of", t1.isoformat())
    assert out.returncode == 1 and "StateTamperedError" in out.stderr and "Traceback" not in out.stderr


def test_cli_state_with_cli_runner(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aether.cli import app

    key = os.urandom(32)
    key_file = tmp_path / "key.hex"
    key_file.write_text(key.hex())
    store = tmp_path / "store"
    mgr = StatePersistenceManager(store, key=key)
    states = _chain(mgr, 2)
    runner = CliRunner()

    res = runner.invoke(app, ["state", "list", str(store)])
    assert res.exit_code == 0 and "agent-1" in res.output
    res = runner.invoke(app, ["state", "list", str(store), "agent-1"])
    assert res.exit_code == 0 and "yes" in res.output  # encrypted column; listing needs no key
    res = runner.invoke(app, ["state", "show", str(store), "agent-1", "--key-file", str(key_file)])
    assert res.exit_code == 0, res.output
    assert ConsciousnessState.deserialize(res.stdout) == states[-1]
    res = runner.invoke(app, ["state", "show", str(store), "agent-1"])
    assert isinstance(res.exception, KeyRequiredError)
    res = runner.invoke(app, ["state", "verify", str(store), "agent-1"])
    assert res.exit_code == 0 and "not decrypted" in res.output
    res = runner.invoke(app, ["state", "verify", str(store), "agent-1", "--key-file", str(key_file)])
    assert res.exit_code == 0 and "2 snapshots" in res.output
    res = runner.invoke(app, ["state", "show", str(store), "nobody", "--key-file", str(key_file)])
    assert isinstance(res.exception, InvalidInputError)
    res = runner.invoke(app, ["state", "list", str(tmp_path / "missing")])
    assert isinstance(res.exception, aether.StoreNotFoundError)


# ---------------------------------------------------------------------------- more properties


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None)
@given(traits=st.dictionaries(st.text(max_size=10), _json, max_size=5),
       context=st.dictionaries(st.text(max_size=10), _json, max_size=5))
def test_property_persist_restore_round_trip(traits: dict, context: dict) -> None:
    mgr = StatePersistenceManager({"key": b"k" * 32})
    s = ConsciousnessState(agent_id="p", personality_traits=traits, current_context=context)
    assert mgr.persist(s).success
    assert mgr.restore("p", strict=True) == s


def test_concurrent_writers_keep_one_linear_chain(tmp_path: Path) -> None:
    """Two managers (as two processes would) append from several threads: the per-agent lock serialises them."""
    from concurrent.futures import ThreadPoolExecutor

    managers = [StatePersistenceManager(tmp_path), StatePersistenceManager(tmp_path)]

    def write(i: int) -> None:
        managers[i % 2].persist(_state(i=float(i)))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(16)))
    report = StatePersistenceManager(tmp_path).verify("agent-1")
    assert report.ok and report.length == 16


def test_agent_ids_that_cannot_name_a_directory_are_refused(tmp_path: Path) -> None:
    mgr = StatePersistenceManager(tmp_path)
    with pytest.raises(InvalidInputError):
        mgr.persist(_state("ü" * 100))  # 100 characters, 600 once percent-encoded
    res = asyncio.run(mgr.persist_consciousness_state(_state("x" * 201)))
    assert not res.success
    mgr.persist(_state("../../escape"))
    assert mgr.list_agents() == ["../../escape"]
    assert all(p.parent.parent == tmp_path / "state" for p in tmp_path.rglob("*.snap"))


def test_an_encrypted_memory_lends_its_codec() -> None:
    from aether.state._seal import AesGcmCodec

    mem = aether.open(embedder=aether.HashingEmbedder(dim=16))
    assert not StatePersistenceManager(mem).encrypted
    mem._engine.codec = AesGcmCodec(b"s" * 32)  # stands in for the security layer's store codec
    mgr = StatePersistenceManager(aether.BitemporalMemoryStore(mem))
    assert mgr.encrypted
    s = _state()
    mgr.persist(s)
    assert mgr.restore("agent-1", strict=True) == s
    mem.close()


def test_cli_on_an_encrypted_store_uses_the_store_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from aether.cli import app
    from aether.security.keys import generate_key, write_key_file

    monkeypatch.delenv("AETHER_KEY", raising=False)
    monkeypatch.delenv("AETHER_KEY_FILE", raising=False)
    key = generate_key()
    key_file = tmp_path / "master.key"
    write_key_file(key_file, key)
    root = tmp_path / "store"
    with aether.open(root, embedder=aether.HashingEmbedder(dim=16), key=key) as mem:
        mem.add("encrypted store")
        mgr = StatePersistenceManager(mem)
        assert mgr.encrypted
        states = _chain(mgr, 2)
    runner = CliRunner()
    res = runner.invoke(app, ["state", "show", str(root), "agent-1", "--key-file", str(key_file)])
    assert res.exit_code == 0, res.output
    assert ConsciousnessState.deserialize(res.stdout) == states[-1]
    res = runner.invoke(app, ["state", "verify", str(root), "agent-1", "--key-file", str(key_file)])
    assert res.exit_code == 0 and "2 snapshots" in res.output and "not decrypted" not in res.output
    res = runner.invoke(app, ["state", "verify", str(root), "agent-1"])  # structure only
    assert res.exit_code == 0 and "not decrypted" in res.output
    res = runner.invoke(app, ["state", "show", str(root), "agent-1"])
    assert isinstance(res.exception, KeyRequiredError)
    res = runner.invoke(app, ["state", "list", str(root)])
    assert res.exit_code == 0 and "agent-1" in res.output


def test_no_plaintext_snapshot_is_written_into_an_encrypted_store(tmp_path: Path) -> None:
    from aether.security.keys import generate_key

    key = generate_key()
    root = tmp_path / "store"
    aether.open(root, embedder=aether.HashingEmbedder(dim=16), key=key).close()
    res = asyncio.run(StatePersistenceManager(root).persist_consciousness_state(_state()))
    assert not res.success and "encrypted" in (res.error or "")
    with pytest.raises(KeyRequiredError):
        StatePersistenceManager(root).persist(_state())
    assert not list(root.rglob("*.snap"))
