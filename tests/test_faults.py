"""I/O fault injection: failing write / fsync / rename and a full disk, at every call of a workload.

Every storage call goes through ``aether.storage._fs`` (``write_all``, ``fsync_fd``, ``replace``,
``write_atomic``); the tests make the N-th call fail with ``EIO`` or ``ENOSPC`` (a failing
``write_all`` first writes part of its data, as a real short write does). Then:

* the failing operation raises ``StorageIOError`` (an ``AetherError`` and an ``OSError``);
* the store stays usable: later writes succeed once the fault is gone;
* nothing acknowledged is lost and nothing that raised is visible, in the live store and
  after reopening (a full dump of every atom's history is compared).
"""

from __future__ import annotations

import errno
import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import aether
from aether.errors import AetherError, StorageIOError
from aether.storage import _fs
from aether.storage.wal import WriteAheadLog
from tests.crash_child import check_consistency

# Injected faults in automatic checkpoints (and the security log) are reported as warnings, by design.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DIM = 16
T0 = datetime(2023, 1, 1, tzinfo=UTC)
STATS = {"faults_injected": 0, "faults_raised_typed": 0, "scenarios": 0}


class Faults:
    """Arms ``_fs`` functions to fail on calls ``[at, at + count)`` (counted across all of them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, targets: tuple[str, ...], err: int) -> None:
        self.calls = 0
        self.fail_from = 10**9
        self.fail_count = 0
        self.fired = 0
        self.err = err
        for name in targets:
            real = getattr(_fs, name)
            monkeypatch.setattr(_fs, name, self._wrap(name, real))

    def arm(self, at: int, count: int = 1) -> None:
        self.calls = 0
        self.fail_from = at
        self.fail_count = count

    def disarm(self) -> None:
        self.fail_from = 10**9

    def _should_fail(self) -> bool:
        self.calls += 1
        if self.fail_from <= self.calls < self.fail_from + self.fail_count:
            self.fired += 1
            return True
        return False

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            if self._should_fail():
                if name == "write_all" and len(args[1]) > 1:
                    fh, data = args
                    fh.write(data[: len(data) // 2])  # a short write: part of the data reaches the file
                    fh.flush()
                raise OSError(self.err, f"injected {errno.errorcode[self.err]} in {name}")
            return real(*args)

        return wrapper


def dump(mem: aether.Memory) -> list[tuple[Any, ...]]:
    """Every version of every atom (history included): the store's whole observable state."""
    eng = mem._engine
    out = []
    for aid in sorted(eng.table.atom_index):
        for v in mem.history(aid):
            out.append(
                (v.atom_id, v.version_id, v.content.inline, sorted(v.tags.items()), v.valid_from, v.valid_to,
                 v.tx_from, v.tx_to)
            )
    return out


def _workload(mem: aether.Memory, rng: random.Random, step: int) -> None:
    """One write of a mixed workload (which one depends on ``step``)."""
    eng = mem._engine
    atoms = sorted(eng.table.atom_index)
    kind = step % 6
    if kind in (0, 3) or not atoms:
        mem.add(f"fact {step} " + "y" * rng.randrange(0, 200), tags={"s": step % 3},
                valid_from=T0 + timedelta(days=step))
    elif kind == 1:
        mem.add_many([{"content": f"batch {step} item {j}", "tags": {"b": step}} for j in range(4)])
    elif kind == 2:
        mem.correct(rng.choice(atoms), f"corrected {step}", valid_from=T0 + timedelta(days=step, hours=1))
    elif kind == 4:
        mem.retract(rng.choice(atoms), at=T0 + timedelta(days=step, hours=2))
    else:
        mem.checkpoint()


def _scenario(path: Path, faults: Faults, at: int, count: int, seed: int) -> None:
    rng = random.Random(seed)
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), checkpoint_bytes=3000)
    for step in range(4):
        _workload(mem, rng, step)
    before_fault = dump(mem)
    faults.arm(at, count)
    raised = 0
    for step in range(4, 12):
        before = dump(mem)
        try:
            _workload(mem, rng, step)
        except StorageIOError as exc:
            assert isinstance(exc, AetherError) and isinstance(exc, OSError)
            assert exc.errno == faults.err
            raised += 1
            # The failed write is not visible: the store is exactly as before it.
            assert dump(mem) == before
        except AetherError as exc:  # pragma: no cover - any other typed error is a bug here
            raise AssertionError(f"unexpected {type(exc).__name__}: {exc}") from exc
    faults.disarm()
    STATS["faults_injected"] += faults.fired
    STATS["faults_raised_typed"] += raised
    STATS["scenarios"] += 1
    # Still usable: a write and a checkpoint succeed once the fault is gone.
    mem.add("after the fault", valid_from=T0)
    mem.checkpoint()
    live = dump(mem)
    assert len(live) >= len(before_fault)
    check_consistency(mem)
    mem.close()
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM)) as again:
        assert dump(again) == live  # nothing acknowledged lost, nothing failed resurrected
        check_consistency(again)


TARGETS = {
    "write": ("write_all",),
    "fsync": ("fsync_fd",),
    "rename": ("replace",),
    "any": ("write_all", "fsync_fd", "replace"),
}


@pytest.mark.parametrize(
    ("target", "err"),
    [("write", errno.EIO), ("write", errno.ENOSPC), ("fsync", errno.EIO), ("rename", errno.EIO),
     ("any", errno.ENOSPC)],
)
def test_single_fault_at_every_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, err: int) -> None:
    faults = Faults(monkeypatch, TARGETS[target], err)
    fired = 0
    for at in range(1, 9):
        faults.fired = 0
        _scenario(tmp_path / f"s{at}", faults, at, 1, seed=at)
        fired += faults.fired
    assert fired > 0


def test_disk_full_for_a_while(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC on every write call for a stretch (a full disk), then space comes back."""
    faults = Faults(monkeypatch, ("write_all", "fsync_fd", "replace"), errno.ENOSPC)
    for at, count in itertools.product((1, 5), (3, 40)):
        faults.fired = 0
        _scenario(tmp_path / f"s{at}-{count}", faults, at, count, seed=at * count)
        assert faults.fired > 0


def test_write_atomic_failure_keeps_old_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mem = aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM))
    mem.add("one", valid_from=T0)
    state = dump(mem)
    real = _fs.write_atomic

    def broken(path: Path, data: bytes) -> None:
        raise StorageIOError(errno.ENOSPC, f"injected for {path}")

    monkeypatch.setattr(_fs, "write_atomic", broken)
    with pytest.raises(StorageIOError):
        mem.checkpoint()
    assert dump(mem) == state
    mem.add("two", valid_from=T0)  # the WAL still takes writes
    monkeypatch.setattr(_fs, "write_atomic", real)
    assert mem.checkpoint()
    state = dump(mem)
    mem.close()
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM)) as again:
        assert dump(again) == state
    assert not list((tmp_path / "s").rglob("*.tmp"))


def test_auto_checkpoint_failure_does_not_fail_a_durable_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit is acknowledged once its WAL record is durable; a failing automatic checkpoint
    after it must not make the write look failed (callers would retry and duplicate it)."""
    mem = aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM), checkpoint_bytes=1)
    monkeypatch.setattr(_fs, "replace", _raiser(errno.EIO))
    with pytest.warns(RuntimeWarning, match="checkpoint failed"):
        atom = mem.add("durable", valid_from=T0)
    assert mem.get(atom.atom_id, valid_at=T0) is not None
    monkeypatch.undo()
    mem.close()
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM)) as again:
        assert again.get(atom.atom_id, valid_at=T0) is not None


def test_close_with_failing_checkpoint_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mem = aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM))
    ids = mem.add_many([f"fact {i}" for i in range(5)])
    state = dump(mem)
    monkeypatch.setattr(_fs, "fsync_fd", _raiser(errno.EIO))
    with pytest.raises(StorageIOError):
        mem.close()
    monkeypatch.undo()
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM)) as again:  # lock released
        assert dump(again) == state
        assert all(again.get(i) is not None for i in ids)


def _raiser(err: int) -> Callable[..., Any]:
    def f(*args: Any) -> Any:
        raise OSError(err, "injected")

    return f


def test_wal_rollback_leaves_no_partial_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mem = aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM))
    mem.add("one", valid_from=T0)
    wal = mem._engine._wal
    assert wal is not None and wal.path is not None
    size = wal.path.stat().st_size
    faults = Faults(monkeypatch, ("write_all",), errno.EIO)
    faults.arm(1)
    with pytest.raises(StorageIOError):
        mem.add("two " * 500, valid_from=T0)
    assert wal.path.stat().st_size == size  # the half-written frame was cut off


def test_wal_rollback_that_fails_is_finished_before_the_next_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Double fault: the append fails half-way *and* cutting the partial frame fails. The next
    append must cut it first, or recovery would see garbage in the middle of the log."""
    path = tmp_path / "s"
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM))
    first = mem.add("one", valid_from=T0)
    faults = Faults(monkeypatch, ("write_all",), errno.EIO)
    real_truncate = WriteAheadLog._truncate_to
    broken = {"n": 1}

    def truncate_once_broken(self: WriteAheadLog, offset: int) -> None:
        if broken["n"]:
            broken["n"] -= 1
            raise OSError(errno.EIO, "injected truncate failure")
        real_truncate(self, offset)

    monkeypatch.setattr(WriteAheadLog, "_truncate_to", truncate_once_broken)
    faults.arm(1)
    with pytest.raises(StorageIOError):
        mem.add("two " * 500, valid_from=T0)
    faults.disarm()
    third = mem.add("three", valid_from=T0)
    state = dump(mem)
    # Reopen without a checkpoint (as after a crash): the WAL must replay cleanly.
    mem._engine._wal.close()  # type: ignore[union-attr]
    mem._engine._lock.release()  # type: ignore[union-attr]
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM)) as again:
        assert dump(again) == state
        assert again.get(first.atom_id, valid_at=T0) and again.get(third.atom_id, valid_at=T0)


def test_rotation_failure_leaves_no_stray_wal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mem = aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM))
    mem.add("one", valid_from=T0)
    wal = mem._engine._wal
    assert wal is not None
    files_before = wal.files()
    real_open = WriteAheadLog._open
    calls = {"n": 0}

    def open_fails(self: WriteAheadLog, path: Path) -> None:
        calls["n"] += 1
        if path not in files_before:
            path.write_bytes(b"AETH")  # a half-started file, then the failure
            raise StorageIOError(errno.ENOSPC, "injected")
        real_open(self, path)

    monkeypatch.setattr(WriteAheadLog, "_open", open_fails)
    with pytest.raises(StorageIOError):
        mem.checkpoint()  # manifest written, WAL rotation failed
    monkeypatch.undo()
    assert wal.files() == files_before
    mem.add("two", valid_from=T0)
    state = dump(mem)
    mem.close()
    with aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM)) as again:
        assert dump(again) == state


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nfault injection: {STATS}")
