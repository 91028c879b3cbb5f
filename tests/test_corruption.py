"""Corruption: flip bytes and truncate every file of a small store; never a silent wrong answer.

For each file of the store (WAL, segments, closings, manifest, and any other file a feature
adds: the security log, index files) the test flips bytes at evenly spaced offsets and
truncates at a few lengths, then reopens a copy of the store and requires one of:

* a typed ``AetherError`` (a ``CorruptionError`` must name the damaged file), or
* results identical to the undamaged store (a derived file rebuilt from the rows), or
* for the WAL only: the state after an earlier transaction, when the damage is in the *last*
  record or is a truncation (indistinguishable from a torn write after a crash; the
  checkpointed state and every earlier record are intact). A damaged record followed by a
  valid one is always an error.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aether
from aether.errors import AetherError, CorruptionError
from aether.storage.wal import scan_frames
from tests.conftest import FakeClock
from tests.crash_child import check_consistency

DIM = 16
T0 = datetime(2023, 1, 1, tzinfo=UTC)
STATS: dict[str, int] = {"injected": 0, "detected": 0, "identical": 0, "wal_tail_dropped": 0}
BY_KIND: dict[str, set[str]] = {}


def _abandon(mem: aether.Memory) -> None:
    """Stop using a store without closing it (no final checkpoint), as a crash would."""
    eng = mem._engine
    for d in eng.derived:
        wait = getattr(d, "wait", None)
        if callable(wait):
            wait()
    if eng._wal is not None:
        eng._wal.close()
    if eng._lock is not None:
        eng._lock.release()
    eng._closed = True


def _queries() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.normal(size=(4, DIM)).astype(np.float32)


def observe(mem: aether.Memory) -> tuple[Any, ...]:
    """Everything a user can see: every version of every atom, and searches at several times."""
    eng = mem._engine
    versions = []
    for aid in sorted(eng.table.atom_index):
        for v in mem.history(aid):
            versions.append((v.atom_id, v.content.inline, sorted(v.tags.items()), v.valid_from, v.valid_to,
                             v.tx_from, v.tx_to))
    searches = []
    for q in _queries():
        for valid_at in (T0 + timedelta(days=2), T0 + timedelta(days=20)):
            hits = mem.search(q, k=5, valid_at=valid_at)
            searches.append([(h.atom.atom_id, h.atom.version_id, round(h.score, 5)) for h in hits])
    return tuple(versions), tuple(map(tuple, searches))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[Any, ...], list[tuple[Any, ...]]]:
    """A small store: two segments, a closings file, and five uncheckpointed WAL records.

    Returns the path, what it shows, and what it showed after each of the WAL's records
    (``states[i]``: after the first ``i`` of them), for the WAL-tail rule.
    """
    path = tmp_path_factory.mktemp("corrupt") / "store"
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), clock=FakeClock())
    ids = mem.add_many(
        [{"content": f"fact number {i}", "tags": {"g": i % 3}, "valid_from": T0 + timedelta(days=i)} for i in range(30)]
    )
    mem.checkpoint()
    mem.correct(ids[0], "fact zero, corrected", valid_from=T0 + timedelta(days=1))
    mem.correct(ids[5], "fact five, corrected", valid_from=T0 + timedelta(days=7))
    mem.retract(ids[7], at=T0 + timedelta(days=9))
    mem.delete(ids[9])
    mem.checkpoint()
    states = [observe(mem)]
    for i in range(5):
        mem.add(f"late fact {i}", tags={"late": True}, valid_from=T0 + timedelta(days=i))
        states.append(observe(mem))
    _abandon(mem)
    return path, states[-1], states


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "LOCK")


def _try_open(root: Path) -> tuple[Any, ...] | AetherError:
    try:
        with aether.open(root, embedder=aether.HashingEmbedder(dim=DIM)) as mem:
            seen = observe(mem)
            check_consistency(mem)
            return seen
    except AetherError as exc:
        return exc


def _judge(rel: str, damaged: Path, outcome: tuple[Any, ...] | AetherError, expected: tuple[Any, ...],
           wal_ok: list[tuple[Any, ...]]) -> None:
    STATS["injected"] += 1
    if isinstance(outcome, AetherError):
        if isinstance(outcome, CorruptionError):
            assert _names(outcome, damaged), f"{rel}: CorruptionError does not name the file: {outcome}"
        STATS["detected"] += 1
        return
    if outcome == expected:
        STATS["identical"] += 1
        BY_KIND.setdefault(rel.split("/")[0], set()).add("identical")
        return
    if outcome in wal_ok:
        STATS["wal_tail_dropped"] += 1
        return
    raise AssertionError(f"{rel}: silent wrong answer after damage")


def _names(exc: CorruptionError, damaged: Path) -> bool:
    """The error names the damaged file (or the directory holding it, for a cross-file check)."""
    if damaged.name in str(exc):
        return True
    where = exc.path or ""
    return bool(where) and (str(damaged).endswith(where) or str(damaged.parent) == where.rstrip("/"))


def _damage_each(pristine: tuple[Path, tuple[Any, ...], list[tuple[Any, ...]]], tmp_path: Path,
                 damage: Callable[[bytes], Iterator[tuple[str, bytes]]]) -> int:
    src, expected, states = pristine
    trials = 0
    for f in _files(src):
        rel = f.relative_to(src).as_posix()
        data = f.read_bytes()
        wal_ok: list[tuple[Any, ...]] = []
        last_frame = len(data)
        if rel.startswith("wal/"):
            frames, _ = scan_frames(f, data)
            last_frame = frames[-1][0] if frames else 8
        for label, bad in damage(data):
            if rel.startswith("wal/"):
                # Damage confined to the last record, or a truncation: like a torn write.
                in_tail = label.startswith("flip") and int(label.split("@")[1]) >= last_frame
                wal_ok = states[:-1] if (in_tail or label.startswith("cut")) else []
            dst = tmp_path / f"t{trials}"
            shutil.copytree(src, dst)
            (dst / rel).write_bytes(bad)
            _judge(f"{rel} {label}", dst / rel, _try_open(dst), expected, wal_ok)
            shutil.rmtree(dst)
            trials += 1
    return trials


def _flips(data: bytes) -> Iterator[tuple[str, bytes]]:
    step = max(1, len(data) // 16)
    for off in [*range(0, len(data), step), len(data) - 1]:
        b = bytearray(data)
        b[off] ^= 0x5A
        yield f"flip@{off}", bytes(b)


def _cuts(data: bytes) -> Iterator[tuple[str, bytes]]:
    for size in sorted({0, len(data) // 3, len(data) // 2, 2 * len(data) // 3, len(data) - 1}):
        yield f"cut@{size}", data[:size]


def test_flipped_bytes_are_detected_or_harmless(pristine: Any, tmp_path: Path) -> None:
    assert _damage_each(pristine, tmp_path, _flips) > 40


def test_truncations_are_detected_or_harmless(pristine: Any, tmp_path: Path) -> None:
    assert _damage_each(pristine, tmp_path, _cuts) > 10


def test_mid_wal_damage_is_always_an_error(pristine: Any, tmp_path: Path) -> None:
    """Any flipped byte before the WAL's last record: a CorruptionError naming the WAL file."""
    src = pristine[0]
    (wal,) = list((src / "wal").glob("*.wal"))
    data = wal.read_bytes()
    frames, _ = scan_frames(wal, data)
    assert len(frames) == 5
    stop = frames[-1][0]
    for off in range(0, stop, max(1, stop // 40)):
        dst = tmp_path / f"w{off}"
        shutil.copytree(src, dst)
        b = bytearray(data)
        b[off] ^= 0x01
        (dst / "wal" / wal.name).write_bytes(bytes(b))
        out = _try_open(dst)
        assert isinstance(out, CorruptionError), f"offset {off}: {out!r}"[:300]
        assert wal.name in str(out)
        STATS["injected"] += 1
        STATS["detected"] += 1
        shutil.rmtree(dst)


def test_missing_files_are_detected(pristine: Any, tmp_path: Path) -> None:
    src = pristine[0]
    for f in _files(src):
        rel = f.relative_to(src).as_posix()
        if rel.startswith(("wal/", "log/", "index/")):
            continue  # the WAL's newest records have no other copy; derived files are rebuilt
        dst = tmp_path / rel.replace("/", "_")
        shutil.copytree(src, dst)
        (dst / rel).unlink()
        out = _try_open(dst)
        assert isinstance(out, AetherError), rel
        STATS["injected"] += 1
        STATS["detected"] += 1
        shutil.rmtree(dst)


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\ncorruption: {STATS} (silent wrong answers: 0); harmless damage in: {sorted(BY_KIND)}")


def _flat_recipe() -> Any:
    from aether.index import load_recipe

    return load_recipe().with_overrides(
        partition_rows=60, tail_rows=30, background=False,
        tiers=[{"name": "flat", "max_rows": None, "factory": "Flat"}], planner={"exact_rows": 10},
    )


def _open_indexed(root: Path) -> tuple[Any, ...] | AetherError:
    from aether.index import use_recipe

    try:
        with aether.open(root, embedder=aether.HashingEmbedder(dim=DIM)) as mem:
            use_recipe(mem._engine, _flat_recipe())
            return observe(mem)
    except AetherError as exc:
        return exc


def test_index_file_damage_is_detected_and_rebuilt(tmp_path: Path) -> None:
    """Per-bucket index files (``index/<gen>/``): damage, truncation or loss means a rebuild
    from the rows (identical answers) or a typed error, never a wrong answer."""
    from aether.index import use_recipe

    src = tmp_path / "indexed"
    mem = aether.open(src, embedder=aether.HashingEmbedder(dim=DIM), clock=FakeClock())
    idx = use_recipe(mem._engine, _flat_recipe())
    rng = np.random.default_rng(5)
    mem.add_many(
        [{"content": f"m{i}", "valid_from": T0 + timedelta(days=i % 40)} for i in range(240)],
        vectors=rng.normal(size=(240, DIM)).astype(np.float32),
    )
    mem.checkpoint()
    idx.seal()
    mem.close()
    expected = _open_indexed(src)
    assert not isinstance(expected, AetherError)
    files = sorted(p for p in (src / "index").rglob("*") if p.is_file()) if (src / "index").exists() else []
    if not files:
        pytest.skip("this build writes no index files")
    trials = 0
    for f in files[:5]:
        rel = f.relative_to(src).as_posix()
        data = f.read_bytes()
        damages = [*list(_flips(data))[::4], (f"cut@{len(data) // 2}", data[: len(data) // 2]), ("gone", None)]
        for label, bad in damages:
            dst = tmp_path / f"i{trials}"
            shutil.copytree(src, dst)
            if bad is None:
                (dst / rel).unlink()
            else:
                (dst / rel).write_bytes(bad)
            _judge(f"{rel} {label}", dst / rel, _open_indexed(dst), expected, [])
            shutil.rmtree(dst)
            trials += 1
    assert trials >= 10


# ------------------------------------------------------------------------------- WAL scan rules, directly
def _frames(n: int, size: int = 300) -> tuple[bytes, list[int]]:
    import struct

    import crc32c

    from aether.storage.wal import MAGIC

    rng = np.random.default_rng(n)
    out, offs = bytearray(MAGIC), []
    for i in range(n):
        payload = struct.pack("<I", 2) + b"{}" + rng.integers(0, 256, size=size + i, dtype=np.uint8).tobytes()
        offs.append(len(out))
        out += struct.pack("<II", len(payload), crc32c.crc32c(payload)) + payload
    return bytes(out), offs


def test_wal_scan_rules() -> None:
    data, offs = _frames(6)
    p = Path("x.wal")
    assert len(scan_frames(p, data)[0]) == 6
    # A torn last frame (any prefix of it) is cut, whatever its size.
    for cut in (offs[-1] + 3, offs[-1] + 8, offs[-1] + 100, len(data) - 1):
        frames, torn = scan_frames(p, data[:cut])
        assert len(frames) == 5 and torn == offs[-1]
    # Zeros after the last record (a file extended, never written) are a torn tail too.
    frames, torn = scan_frames(p, data + b"\0" * 4096)
    assert len(frames) == 6 and torn == len(data)
    # A damaged byte anywhere before the last frame: an error, never a silent cut.
    for off in range(offs[0], offs[-1], 7):
        b = bytearray(data)
        b[off] ^= 0x10
        with pytest.raises(CorruptionError):
            scan_frames(p, bytes(b))
    # A damaged length that runs past the end, in the middle: found by the chain of later frames.
    for i in (0, 2, 4):
        b = bytearray(data)
        b[offs[i] + 3] ^= 0x40
        with pytest.raises(CorruptionError, match="followed by a valid record"):
            scan_frames(p, bytes(b))
