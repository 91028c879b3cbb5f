"""Crash soak: SIGKILL a writer over and over for a while; report iterations and losses (must be 0).

Usage::

    .venv/bin/python benchmarks/soak_crash.py --minutes 10 [--seed 1] [--per-store 12] [--checkpoint-bytes 2048]

Each iteration starts ``tests/crash_child.py`` on the store, which writes random transactions
(add, add_many, correct, retract, delete) with a tiny ``checkpoint_bytes`` so checkpoints
(segment write, manifest replace, WAL rotation) happen every few commits. Half the kills come
from the parent after a random delay, half from the child itself inside a storage call (often
after a torn, partial write). After each kill the store is reopened read-only (and every third
time as the writer) and every acknowledged transaction is checked, plus the store's invariants.
Exits non-zero on the first lost or half-applied transaction.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.crash_child import Harness, run_iteration


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-store", type=int, default=12, help="iterations before starting a fresh store")
    ap.add_argument("--checkpoint-bytes", type=int, default=2048)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    deadline = time.time() + args.minutes * 60
    totals = {"iterations": 0, "timer_kills": 0, "io_kills": 0, "acknowledged": 0, "unacked_committed": 0, "lost": 0}
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="aether-soak-") as tmp:
        i = 0
        h = Harness(Path(tmp) / "s0", checkpoint_bytes=args.checkpoint_bytes)
        hs = [h]
        try:
            while time.time() < deadline:
                if i and i % args.per_store == 0:
                    h = Harness(Path(tmp) / f"s{i}", checkpoint_bytes=args.checkpoint_bytes)
                    hs.append(h)
                run_iteration(h, rng, mode="io" if i % 2 else "timer")
                i += 1
                if i % 10 == 0:
                    print(f"  {i} iterations, {sum(len(x.acks) for x in hs)} acknowledged, "
                          f"{time.time() - t0:.0f}s", flush=True)
        except AssertionError as exc:
            print(f"FAILED at iteration {i} (seed {args.seed}): {exc}", flush=True)
            totals["lost"] = max(1, h.lost)
        for x in hs:
            totals["iterations"] += x.iterations
            totals["timer_kills"] += x.kills_timer
            totals["io_kills"] += x.kills_io
            totals["acknowledged"] += len(x.acks)
            totals["unacked_committed"] += x.unacked_durable
    print("soak:", " ".join(f"{k}={v}" for k, v in totals.items()), f"elapsed={time.time() - t0:.0f}s")
    return 1 if totals["lost"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
