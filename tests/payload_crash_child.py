"""Crash child for ``tests/test_payload_crash.py``: writes payload atoms until it is SIGKILLed.

``payload_crash_child.py STORE SEED [KILL_AT]``: opens the store, then loops adding atoms with
random payloads (some larger than a blob chunk, some repeated, so deduplicated) and an occasional
correction that replaces a payload, printing one JSON line per acknowledged write. With
``KILL_AT > 0`` it kills itself at its ``KILL_AT``-th blob-area storage call (a frame write,
an fsync, the rename), so the kill lands inside a payload write deterministically.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import time
from typing import Any


def _install_kill(kill_at: int) -> None:
    from aether.storage import blobs

    calls = {"n": 0}
    real_fsync, real_replace, real_dir = blobs.fsync_fd, blobs.replace, blobs.fsync_dir

    def hook(real: Any) -> Any:
        def f(*a: Any) -> Any:
            calls["n"] += 1
            if calls["n"] >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(10)
            return real(*a)

        return f

    blobs.fsync_fd = hook(real_fsync)  # type: ignore[assignment]
    blobs.replace = hook(real_replace)  # type: ignore[assignment]
    blobs.fsync_dir = hook(real_dir)  # type: ignore[assignment]


def main(argv: list[str]) -> None:
    import aether

    store, seed = argv[0], int(argv[1])
    rng = random.Random(seed)
    mem = aether.open(store, embedder=aether.HashingEmbedder(dim=16), checkpoint_bytes=1 << 14)
    if len(argv) > 2 and int(argv[2]) > 0:
        _install_kill(int(argv[2]))
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    atoms: list[str] = []
    pool = [rng.randbytes(rng.randrange(1, 4000)) for _ in range(3)]  # repeated payloads (dedup)
    i = 0
    while True:
        i += 1
        sizes = [0, 10, 5000, 1_200_000, 2_500_000]
        data = rng.choice(pool) if rng.random() < 0.3 else rng.randbytes(rng.choice(sizes))
        if atoms and rng.random() < 0.25:
            aid = rng.choice(atoms)
            a = mem.correct(aid, payload=data)
        else:
            a = mem.add(f"payload {seed}-{i}", payload=data, content_type="application/octet-stream")
            atoms.append(a.atom_id)
        assert a.payload_digest == hashlib.sha256(data).hexdigest()
        out.write(json.dumps({"atom": a.atom_id, "digest": a.payload_digest, "size": len(data)}) + "\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
