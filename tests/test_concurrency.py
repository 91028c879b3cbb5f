"""Concurrency: whole transactions for concurrent readers, one writer per store, refresh for readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import aether
from aether.errors import StoreLockedError

DIM = 16
N = 5  # items per add_many: a reader must always see a multiple of N of them
REPO = Path(__file__).resolve().parent.parent


def _count(mem: aether.Memory, q: np.ndarray) -> int:
    return len(mem.search(q, k=100_000, tags={"grp": "x"}))


def test_readers_see_whole_transactions_during_ingest(tmp_path: Path) -> None:
    mem = aether.open(tmp_path / "s", embedder=aether.HashingEmbedder(dim=DIM), checkpoint_bytes=20_000)
    q = np.ones(DIM, np.float32)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        last = 0
        try:
            while not stop.is_set():
                c = _count(mem, q)
                v = mem.view()  # a pinned view sees one consistent state too
                cv = _count(v, q)
                seen.append(c)
                assert c % N == 0 and cv % N == 0, (c, cv)
                assert c >= last, "a reader went back in time"
                last = c
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for b in range(60):
            mem.add_many([{"content": f"batch {b} item {j}", "tags": {"grp": "x"}} for j in range(N)])
            mem.add(f"noise {b}", tags={"grp": "y"})
            if b % 20 == 19:
                mem.checkpoint()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert _count(mem, q) == 60 * N
    assert len(seen) > 10 and any(0 < c < 60 * N for c in seen)
    mem.close()


def test_second_writer_gets_store_locked_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    mem = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM))
    mem.add("held")
    with pytest.raises(StoreLockedError):  # in this process
        aether.open(path, embedder=aether.HashingEmbedder(dim=DIM))
    code = textwrap.dedent(
        f"""
        import aether
        try:
            aether.open({str(path)!r}, embedder=aether.HashingEmbedder(dim={DIM}))
            print("OPENED")
        except aether.errors.StoreLockedError as e:
            print("LOCKED", e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.startswith("LOCKED"), out.stdout + out.stderr
    assert "read_only=True" in out.stdout
    # A reader is welcome while the writer holds the lock.
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), read_only=True) as ro:
        assert len(ro.search("held", k=5)) == 1
    mem.close()
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM)) as again:  # released on close
        assert len(again.search("held", k=5)) == 1


def test_lock_is_released_when_the_writer_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "s"
    code = (
        f"import aether, time; m = aether.open({str(path)!r}, embedder=aether.HashingEmbedder(dim={DIM}));"
        "m.add('x'); print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
        with pytest.raises(StoreLockedError):
            aether.open(path, embedder=aether.HashingEmbedder(dim=DIM))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM)) as mem:  # no stale lock
        assert len(mem.search("x", k=5)) == 1


def test_read_only_store_sees_commits_after_refresh(tmp_path: Path) -> None:
    path = tmp_path / "s"
    w = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), checkpoint_bytes=4000)
    w.add_many([{"content": f"first {j}", "tags": {"grp": "x"}} for j in range(N)])
    ro = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), read_only=True)
    q = np.ones(DIM, np.float32)
    assert _count(ro, q) == N
    for b in range(1, 12):
        w.add_many([{"content": f"batch {b} item {j}", "tags": {"grp": "x"}} for j in range(N)])
        if b % 3 == 0:
            w.checkpoint()  # new segment, manifest replaced, WAL rotated and old files deleted
        assert _count(ro, q) == b * N  # not before refresh()
        ro.refresh()
        assert _count(ro, q) == (b + 1) * N
        atom = w.add("single", tags={"grp": "z"})
        ro.refresh()
        got = ro.get(atom.atom_id)
        assert got is not None and got.content.inline == "single"
    w.close()
    ro.refresh()
    assert _count(ro, q) == 12 * N
    ro.close()


def test_reader_process_refreshing_during_ingest_and_checkpoints(tmp_path: Path) -> None:
    """A separate reader process refreshes in a loop while the writer ingests and checkpoints
    every few commits: every refresh succeeds, sees whole transactions and never goes back."""
    path = tmp_path / "s"
    w = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), checkpoint_bytes=6000)
    w.add_many([{"content": f"seed {j}", "tags": {"grp": "x"}} for j in range(N)])
    code = textwrap.dedent(
        f"""
        import json, sys, time, numpy as np, aether
        ro = aether.open({str(path)!r}, embedder=aether.HashingEmbedder(dim={DIM}), read_only=True)
        q = np.ones({DIM}, np.float32)
        last, refreshes, t_end = 0, 0, time.time() + 60
        print("ready", flush=True)
        while time.time() < t_end:
            ro.refresh()
            refreshes += 1
            c = len(ro.search(q, k=100000, tags={{"grp": "x"}}))
            assert c % {N} == 0 and c >= last, (c, last)
            last = c
            if c >= {N} * 41:
                break
        print(json.dumps({{"refreshes": refreshes, "count": last}}), flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("ready")
    for b in range(40):
        w.add_many([{"content": f"batch {b} item {j} " + "z" * 200, "tags": {"grp": "x"}} for j in range(N)])
        time.sleep(0.01)
    out, err = proc.communicate(timeout=120)
    w.close()
    assert proc.returncode == 0, err[-3000:]
    res = json.loads(out.strip().splitlines()[-1])
    assert res["count"] == 41 * N and res["refreshes"] > 1


def test_read_only_open_during_checkpoints(tmp_path: Path) -> None:
    """Opening read-only while the writer checkpoints (manifest replaced, old WAL files deleted)
    must not fail with a spurious CorruptionError (it did, about one open in two, before the retry)."""
    path = tmp_path / "s"
    w = aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), checkpoint_bytes=4_000)
    w.add_many([{"content": f"seed {j}", "tags": {"grp": "x"}} for j in range(N)])
    stop = threading.Event()

    def writer() -> None:
        b = 0
        while not stop.is_set() and b < 300:
            w.add_many([{"content": f"b{b} {j} " + "w" * 100, "tags": {"grp": "x"}} for j in range(N)])
            b += 1
            time.sleep(0.002)  # leave the GIL to the reader now and then

    t = threading.Thread(target=writer)
    t.start()
    q = np.ones(DIM, np.float32)
    try:
        for _ in range(20):
            with aether.open(path, embedder=aether.HashingEmbedder(dim=DIM), read_only=True) as ro:
                assert _count(ro, q) % N == 0
    finally:
        stop.set()
        t.join()
    w.close()
