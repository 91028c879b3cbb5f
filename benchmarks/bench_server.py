"""Server figures: search latency and throughput over loopback HTTP against the in-process API, and
batch ingest with vectors, in the same run.

Run: .venv/bin/python benchmarks/bench_server.py [--n 10000] [--dim 384] [--queries 400] [--seconds 4]
     [--ingest 60000] [--batch 10000] [--clients 1,8,32] [--no-access-log]

1. A store of ``--n`` pre-embedded atoms (``PrecomputedEmbedder``) is built under a temp ROOT.
2. In-process: ``Memory.search(vector, k=10)`` sequentially (p50/p99) and from 1/8/32 threads (throughput).
3. ``aether serve ROOT`` starts in a subprocess on 127.0.0.1; ``aether.connect`` clients do the same: one
   client sequentially (p50/p99), then 1/8/32 concurrent clients (threads, one connection each) for
   ``--seconds`` each. The server's own ``/metrics`` split the time: engine (``aether_search_duration_seconds``,
   phases ``embed`` + ``index`` + ``materialize``),
   server total (``aether_request_duration_seconds``) and the rest (client, HTTP, loopback).
4. Batch ingest: ``add_columns`` of ``--ingest`` rows with a numpy matrix of vectors in ``--batch``-row
   requests (one durable transaction each; the client sends them raw on ``atoms/columns/binary``),
   against the same through the in-process API.
5. In-process search again (the machine is shared: the two in-process runs bracket the server figures).

Step 3 also interleaves blocks of in-process queries (a read-only open next to the server) with remote
ones, and runs each concurrency level in-process right after the server's, so that the comparisons see
the same machine load.

Every loop is bounded by a count and a time limit; the server binds loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import aether

REPO = Path(__file__).resolve().parents[1]


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sequential(fn: Any, queries: np.ndarray, limit_s: float) -> list[float]:
    lat: list[float] = []
    deadline = time.perf_counter() + limit_s
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        lat.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return lat


def concurrent(make: Any, queries: np.ndarray, n_threads: int, seconds: float) -> tuple[float, list[float]]:
    """``n_threads`` workers (each with its own client from ``make()``) for ``seconds``: (searches/s, latencies)."""
    stop = threading.Event()
    lats: list[list[float]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads + 1)

    def work(i: int) -> None:
        fn, close = make()
        try:
            start.wait()
            j = i
            while not stop.is_set():
                t0 = time.perf_counter()
                fn(queries[j % len(queries)])
                lats[i].append(time.perf_counter() - t0)
                j += n_threads
        except BaseException as exc:  # reported below; a benchmark must not hide failures
            errors.append(exc)
        finally:
            close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n_threads)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    flat = [x for xs in lats for x in xs]
    return len(flat) / elapsed, flat


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric_sum_count(text: str, name: str, labels: str) -> tuple[float, float]:
    s = c = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum{{") and labels in line:
            s += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count{{") and labels in line:
            c += float(line.rsplit(" ", 1)[1])
    return s, c


def engine_sum_count(text: str) -> tuple[float, float]:
    """Seconds inside ``Memory.search`` (its three phases) and the number of searches."""
    total = 0.0
    for ph in ("embed", "index", "materialize"):
        total += metric_sum_count(text, "aether_search_duration_seconds", f'op="search",phase="{ph}"')[0]
    return total, metric_sum_count(text, "aether_search_duration_seconds", 'op="search",phase="index"')[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--ingest", type=int, default=60_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--no-access-log", action="store_true")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="aether-bench-server-"))
    root = tmp / "root"
    out: dict[str, Any] = {"n": args.n, "dim": args.dim, "k": 10, "cpus": os.cpu_count(),
                           "load_avg_start": os.getloadavg()}
    emb = aether.PrecomputedEmbedder(args.dim, "bench")
    try:
        # ------------------------------------------------------------------ build
        vecs = unit(rng, args.n, args.dim)
        with aether.open(root / "bench", embedder=emb) as mem:
            for s in range(0, args.n, 10_000):
                e = min(args.n, s + 10_000)
                mem.add_columns([f"memory {i}" for i in range(s, e)], vectors=vecs[s:e],
                                tags=[{"topic": i % 10} for i in range(s, e)])
        for name in ("ingest", "ingest-local"):  # empty stores with the bench's model, for the ingest runs
            aether.open(root / name, embedder=emb).close()
        queries = unit(rng, args.queries, args.dim)

        def inproc(label: str) -> None:
            with aether.open(root / "bench", embedder=emb) as mem:
                for q in queries[:50]:  # warm-up: index pages, caches
                    mem.search(q, k=10)
                lat = sequential(lambda q: mem.search(q, k=10), queries, 60)
                out[f"{label}_p50_ms"], out[f"{label}_p99_ms"] = pct(lat, 50), pct(lat, 99)
                for c in clients:
                    rate, _ = concurrent(lambda: (lambda q: mem.search(q, k=10), lambda: None), queries, c,
                                         args.seconds)
                    out[f"{label}_qps_{c}"] = rate
            print(f"{label}: p50 {out[f'{label}_p50_ms']:.3f} ms p99 {out[f'{label}_p99_ms']:.3f} ms; "
                  + ", ".join(f"{c} threads {out[f'{label}_qps_{c}']:.0f}/s" for c in clients), flush=True)

        inproc("inproc")

        # ------------------------------------------------------------------ server
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "aether", "serve", str(root), "--port", str(port), "--log-level", "warning",
               "--model", "hashing:64"]
        if args.no_access_log:
            cmd.append("--no-access-log")
        log = (tmp / "server.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=REPO,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start: " + (tmp / "server.log").read_text()[-2000:])
                time.sleep(0.2)
            remote = aether.connect(url, namespace="bench")
            for q in queries[:50]:
                remote.search(q, k=10)
            m0 = httpx.get(url + "/metrics", timeout=10).text
            cpu0 = proc_cpu(proc.pid)
            lat = sequential(lambda q: remote.search(q, k=10), queries, 60)
            cpu1 = proc_cpu(proc.pid)
            m1 = httpx.get(url + "/metrics", timeout=10).text
            # CPU the server process spent per search (all its threads): what a loaded machine inflates least.
            out["server_cpu_ms_per_search"] = 1000 * (cpu1 - cpu0) / len(lat) if cpu0 is not None else None
            out["server_p50_ms"], out["server_p99_ms"] = pct(lat, 50), pct(lat, 99)
            es0, ec0 = engine_sum_count(m0)
            es1, ec1 = engine_sum_count(m1)
            rs0, rc0 = metric_sum_count(m0, "aether_request_duration_seconds", 'route="/v1/namespaces/{ns}/search"')
            rs1, rc1 = metric_sum_count(m1, "aether_request_duration_seconds", 'route="/v1/namespaces/{ns}/search"')
            out["server_engine_mean_ms"] = 1000 * (es1 - es0) / max(1.0, ec1 - ec0)
            out["server_request_mean_ms"] = 1000 * (rs1 - rs0) / max(1.0, rc1 - rc0)
            out["client_observed_mean_ms"] = 1000 * float(np.mean(lat))
            # The same request with a pre-encoded body on the client's bare transport (no encoding of the
            # query, no parsing of the reply): the client library's share is the difference.
            from aether.client._http import StdlibTransport

            body = [json.dumps({"query": aether.client._wire.enc_vector(q), "k": 10}).encode() for q in queries]
            raw = StdlibTransport(url, headers={}, timeout=30)
            i = iter(range(10**9))
            rawlat = sequential(lambda q: raw.request("POST", "/v1/namespaces/bench/search",
                                                      content=body[next(i) % len(body)],
                                                      headers={"content-type": "application/json"}), queries, 60)
            raw.close()
            out["raw_http_p50_ms"] = pct(rawlat, 50)
            cpu = out["server_cpu_ms_per_search"]
            print(f"server, 1 client: p50 {out['server_p50_ms']:.3f} ms p99 {out['server_p99_ms']:.3f} ms "
                  f"(client-observed mean {out['client_observed_mean_ms']:.3f} ms = server request "
                  f"{out['server_request_mean_ms']:.3f} ms, of which engine {out['server_engine_mean_ms']:.3f} ms; "
                  f"bare transport p50 {out['raw_http_p50_ms']:.3f} ms; server CPU "
                  f"{'n/a' if cpu is None else f'{cpu:.3f} ms'} per search)", flush=True)
            # Interleaved: blocks of in-process (a read-only open next to the server) and remote queries in
            # turn, so that both see the same machine load (the sequential phases above do not).
            with aether.open(root / "bench", embedder=emb, read_only=True) as ro:
                for q in queries[:50]:
                    ro.search(q, k=10)
                lin: list[float] = []
                lrem: list[float] = []
                for b in range(0, len(queries), 25):
                    block = queries[b:b + 25]
                    lin += sequential(lambda q: ro.search(q, k=10), block, 30)
                    lrem += sequential(lambda q: remote.search(q, k=10), block, 30)
                out["interleaved_inproc_p50_ms"], out["interleaved_server_p50_ms"] = pct(lin, 50), pct(lrem, 50)
                out["interleaved_inproc_p99_ms"], out["interleaved_server_p99_ms"] = pct(lin, 99), pct(lrem, 99)
                print(f"interleaved, 1 client: in-process p50 {out['interleaved_inproc_p50_ms']:.3f} ms "
                      f"(p99 {out['interleaved_inproc_p99_ms']:.3f}), server p50 "
                      f"{out['interleaved_server_p50_ms']:.3f} ms (p99 {out['interleaved_server_p99_ms']:.3f})",
                      flush=True)
                for c in clients:
                    def make() -> Any:
                        r = aether.connect(url, namespace="bench")
                        return (lambda q: r.search(q, k=10)), r.close

                    rate, clat = concurrent(make, queries, c, args.seconds)
                    irate, _ = concurrent(lambda: (lambda q: ro.search(q, k=10), lambda: None), queries, c,
                                          args.seconds)
                    out[f"server_qps_{c}"], out[f"interleaved_inproc_qps_{c}"] = rate, irate
                    out[f"server_p50_ms_{c}"], out[f"server_p99_ms_{c}"] = pct(clat, 50), pct(clat, 99)
                    print(f"server, {c} clients: {rate:.0f} searches/s, p50 {out[f'server_p50_ms_{c}']:.2f} ms "
                          f"p99 {out[f'server_p99_ms_{c}']:.2f} ms (in-process, {c} threads, right after: "
                          f"{irate:.0f}/s)", flush=True)

            # ------------------------------------------------------------------ ingest
            ivecs = unit(rng, args.ingest, args.dim)
            texts = [f"ingested memory {i} about topic {i % 97}" for i in range(args.ingest)]
            sink = aether.connect(url, namespace="ingest")
            t0 = time.perf_counter()
            for s in range(0, args.ingest, args.batch):
                e = min(args.ingest, s + args.batch)
                sink.add_columns(texts[s:e], vectors=ivecs[s:e])
            dt = time.perf_counter() - t0
            out["server_ingest_per_s"] = args.ingest / dt
            print(f"server ingest: {args.ingest} atoms in {dt:.2f} s = {out['server_ingest_per_s']:.0f}/s "
                  f"({args.batch}-row requests, raw float32 vectors)", flush=True)
            sink.close()
            remote.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        with aether.open(root / "ingest-local", embedder=emb) as mem:
            t0 = time.perf_counter()
            for s in range(0, args.ingest, args.batch):
                e = min(args.ingest, s + args.batch)
                mem.add_columns(texts[s:e], vectors=ivecs[s:e])
            dt = time.perf_counter() - t0
        out["inproc_ingest_per_s"] = args.ingest / dt
        print(f"in-process ingest: {args.ingest} atoms in {dt:.2f} s = {out['inproc_ingest_per_s']:.0f}/s", flush=True)

        inproc("inproc_again")
        out["load_avg_end"] = os.getloadavg()
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
