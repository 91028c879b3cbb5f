"""Crash safety: SIGKILL the writer mid-ingest (and mid-checkpoint), reopen, lose nothing acknowledged.

The child process (``tests/crash_child.py``) prints each acknowledged transaction; the parent
kills it at random moments or lets it kill itself inside a storage call (optionally after a
torn, partial write), then reopens the store read-only and as the writer and checks every
acknowledged transaction, all-or-nothing ``add_many`` batches and the store's invariants.
A longer soak: ``.venv/bin/python benchmarks/soak_crash.py --minutes 10``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.crash_child import Harness, run_iteration


def _run(tmp_path: Path, seed: int, iterations: int, per_store: int) -> list[Harness]:
    rng = random.Random(seed)
    done: list[Harness] = []
    h = Harness(tmp_path / "s0")
    for i in range(iterations):
        if i and i % per_store == 0:  # a fresh store now and then keeps segment counts small
            done.append(h)
            h = Harness(tmp_path / f"s{i}")
        run_iteration(h, rng, mode="io" if i % 2 else "timer")
    done.append(h)
    return done


def test_sigkill_once_loses_nothing(tmp_path: Path) -> None:
    """One kill of each kind: the quick version of the harness (the core issue's SIGKILL test)."""
    hs = _run(tmp_path, seed=7, iterations=2, per_store=2)
    assert sum(len(h.acks) for h in hs) > 0
    assert all(h.lost == 0 for h in hs)


@pytest.mark.slow
def test_sigkill_many_iterations_loses_nothing(tmp_path: Path) -> None:
    hs = _run(tmp_path, seed=20261129, iterations=16, per_store=6)
    acks = sum(len(h.acks) for h in hs)
    iters = sum(h.iterations for h in hs)
    print(
        f"crash iterations={iters} (timer kills={sum(h.kills_timer for h in hs)}, "
        f"io kills={sum(h.kills_io for h in hs)}) acknowledged={acks} "
        f"committed-but-unacknowledged={sum(h.unacked_durable for h in hs)} lost=0"
    )
    assert iters == 16
    assert acks > 30
    assert all(h.lost == 0 for h in hs)
