"""Crash safety of payload writes: SIGKILL during a blob write, reopen, every acknowledged payload intact.

A payload is made durable (temp file, fsync, rename, folder fsync) before the version row naming
it is committed, so a kill anywhere leaves at most a temp file (removed when the store is opened
for writing) or a blob no row names (a warning of ``aether verify``, removed by compaction).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aether
from aether.payloads import blobs_of

REPO = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "payload_crash_child.py"


def _run(store: Path, seed: int, *, kill_at: int = 0, delay: float = 0.0) -> list[dict[str, object]]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    args = [sys.executable, str(CHILD), str(store), str(seed), str(kill_at)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(REPO))
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first, proc.stderr.read().decode() if proc.stderr else ""
    if not kill_at:
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    try:
        rest, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    return [json.loads(line) for line in rest.decode().splitlines(keepends=True) if line.endswith("\n")]


def _check(store: Path, acks: list[dict[str, object]]) -> None:
    latest: dict[str, str] = {}
    for a in acks:
        latest[str(a["atom"])] = str(a["digest"])
    report = aether.verify(store)
    assert report.ok, [str(p) for p in report.problems]
    with aether.open(store, embedder=aether.HashingEmbedder(dim=16)) as mem:
        tmp = store / "blobs" / "tmp"
        assert not tmp.exists() or not list(tmp.iterdir()), "a torn temp file survived the open"
        for aid, digest in latest.items():
            # The last acknowledged payload is in the history (a write committed just before the
            # kill, never acknowledged, may be newer); every payload a version names reads back.
            versions = mem.history(aid)
            assert digest in {v.payload_digest for v in versions}
            for v in versions:
                assert v.payload_digest is not None
                got = b"".join(blobs_of(mem._engine).chunks(v.payload_digest))
                assert hashlib.sha256(got).hexdigest() == v.payload_digest
            cur = mem.get(aid)
            assert cur is not None and hashlib.sha256(mem.payload(aid)).hexdigest() == cur.payload_digest
        mem.compact()
    report = aether.verify(store)
    assert report.ok and not any("no version names" in str(w) for w in report.warnings), report.warnings


def test_kill_inside_a_payload_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(7)
    store = tmp_path / "s"
    acks: list[dict[str, object]] = []
    for kill_at in (1, 2, 3, 5, 8, 13, rng.randrange(14, 40), rng.randrange(40, 90)):
        acks += _run(store, rng.randrange(1 << 30), kill_at=kill_at)
        _check(store, acks)
    assert acks, "the child never acknowledged a write"


@pytest.mark.slow
def test_timer_kills_during_payload_writes(tmp_path: Path) -> None:
    rng = random.Random(11)
    store = tmp_path / "s"
    acks: list[dict[str, object]] = []
    for _ in range(6):
        acks += _run(store, rng.randrange(1 << 30), delay=rng.uniform(0.2, 1.5))
        _check(store, acks)
