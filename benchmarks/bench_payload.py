"""Payload write and read throughput, and peak memory, against a plain file copy measured in the same run.

``python benchmarks/bench_payload.py [--mb 256] [--key]`` writes one random (incompressible) and one
text-like (compressible) payload of ``--mb`` MiB through ``Memory.add(payload=path)`` and streams each
back with ``Memory.open_payload``; the baseline is ``shutil.copyfile`` + fsync of the same file and a
plain read of it. Peak memory is the growth of the process's max RSS over the payload write and read
(after the store is open and has written a small payload; a fresh child per step, so steps do not
hide each other's peaks).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _step(kind: str, src: str, store: str, key: bool) -> dict[str, float]:
    import aether

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if kind == "copy":
        dst = Path(store) / "copy.bin"
        shutil.copyfile(src, dst)
        with open(dst, "rb+") as fh:
            os.fsync(fh.fileno())
        with open(dst, "rb") as fh:
            while fh.read(1 << 20):
                pass
        out = {"write_read_s": time.perf_counter() - t0}
    else:
        mem = aether.open(store, embedder=aether.HashingEmbedder(dim=16), key=os.urandom(32) if key else None)
        mem.add("warm-up", payload=b"x" * 4096)  # the store's own start-up memory is not the payload's
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        a = mem.add("bench", payload=src)
        t1 = time.perf_counter()
        with mem.open_payload(a.atom_id) as r:
            while r.read(1 << 20):
                pass
        t2 = time.perf_counter()
        mem.close()
        blobs = sum(p.stat().st_size for p in (Path(store) / "blobs").rglob("*") if p.is_file())
        out = {"write_s": t1 - t0, "read_s": t2 - t1, "write_read_s": t2 - t0, "blob_bytes": blobs}
    out["peak_rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--key", action="store_true", help="an encrypted store (AES-256-GCM)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, src, store, key = args.child
        print(json.dumps(_step(kind, src, store, key == "1")))
        return
    with tempfile.TemporaryDirectory() as d:
        rnd, txt = Path(d) / "random.bin", Path(d) / "text.bin"
        with open(rnd, "wb") as fh:
            for _ in range(args.mb):
                fh.write(os.urandom(1 << 20))
        line = b"2024-03-01T12:00:00Z INFO request served path=/v1/search status=200 ms=12\n"
        with open(txt, "wb") as fh:
            for _ in range(args.mb):
                fh.write((line * ((1 << 20) // len(line) + 1))[: 1 << 20])
        results = {}
        for name, src in (("random", rnd), ("text", txt)):
            for kind in ("copy", "aether"):
                store = Path(d) / f"{name}-{kind}"
                store.mkdir()
                cmd = [sys.executable, __file__, "--child", kind, str(src), str(store), "1" if args.key else "0"]
                res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
                results[f"{name}/{kind}"] = res
                shutil.rmtree(store)
        mb = args.mb
        for name in ("random", "text"):
            c, a = results[f"{name}/copy"], results[f"{name}/aether"]
            print(f"{name:6s} {mb} MiB: aether write {mb / a['write_s']:.0f} MiB/s, read {mb / a['read_s']:.0f} MiB/s, "
                  f"write+read {a['write_read_s'] / c['write_read_s']:.2f}x the plain copy's time; "
                  f"on disk {a['blob_bytes'] / (mb << 20):.3f} of the size; "
                  f"peak RSS growth {a['peak_rss_growth_mb']:.0f} MiB (copy: {c['peak_rss_growth_mb']:.0f} MiB)")


if __name__ == "__main__":
    main()
