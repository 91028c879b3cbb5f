"""Crash harness: a writer child process killed with SIGKILL, and the checks run after it.

Run as a script, this module is the *child*: it opens a store with a tiny ``checkpoint_bytes``
(so checkpoints, segment writes, manifest replacements and WAL rotations happen every few
commits), writes random transactions (add, add_many, correct, retract, delete) and prints one
JSON line per *acknowledged* transaction (flushed), then loops until it is killed.

Kill modes
----------
``timer``
    The parent kills the child after a random delay (kills land anywhere, often mid-checkpoint).
``io``
    The child kills itself at its N-th storage call (``_fs.write_all``/``fsync_fd``/``replace``),
    optionally after writing only a random prefix of the data (a genuinely torn write). This
    hits the checkpoint windows deterministically: after a segment's temporary file, between
    rename and directory fsync, half-way through a WAL frame, while starting a new WAL file.

Imported, it gives the parent side: :func:`run_iteration` and :func:`check_store`, used by
``tests/test_crash.py`` and ``benchmarks/soak_crash.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

DIM = 16
BASE = datetime(2020, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def _us(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def _when(rng: random.Random) -> datetime:
    return BASE + timedelta(days=rng.randrange(0, 5 * 365), seconds=rng.randrange(86400))


# ---------------------------------------------------------------------------------------- child
def _install_io_kill(kill_at: int, tear: bool, rng: random.Random, mark: Path | None = None) -> None:
    """Patch the storage I/O layer so the process SIGKILLs itself at its ``kill_at``-th call
    (first writing the kind of that call to ``mark``, when given)."""
    from aether.storage import _fs

    calls = {"n": 0}
    real_write, real_fsync, real_replace = _fs.write_all, _fs.fsync_fd, _fs.replace

    def tick() -> bool:
        calls["n"] += 1
        return calls["n"] >= kill_at

    def die(kind: str = "other") -> None:
        if mark is not None:
            mark.write_text(kind)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)

    def write_all(fh: Any, data: bytes) -> None:
        if tick():
            if mark is not None:
                mark.write_text("write")
            if tear and len(data) > 1:
                fh.write(data[: rng.randrange(1, len(data))])
                fh.flush()
            die()
        real_write(fh, data)

    def fsync_fd(fd: int) -> None:
        if tick():
            die()
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        if tick():
            die()
        real_replace(src, dst)

    _fs.write_all = write_all
    _fs.fsync_fd = fsync_fd
    _fs.replace = replace


def _small_index(engine: Any) -> None:
    """Seal index partitions every few dozen rows, synchronously, so kills land in index writes too."""
    try:
        from aether.index import load_recipe, use_recipe
    except ImportError:  # a build without the bucketed index
        return
    recipe = load_recipe().with_overrides(
        partition_rows=64, tail_rows=24, background=False,
        tiers=[{"name": "flat", "max_rows": None, "factory": "Flat"}], planner={"exact_rows": 8},
    )
    use_recipe(engine, recipe)


def child_main(argv: list[str]) -> None:
    """``crash_child.py STORE SEED CHECKPOINT_BYTES [KILL_AT TEAR]`` (see the module docstring)."""
    import aether

    store, seed, ckpt = argv[0], int(argv[1]), int(argv[2])
    rng = random.Random(seed)
    mem = aether.open(store, embedder=aether.HashingEmbedder(dim=DIM), checkpoint_bytes=ckpt)
    eng = mem._engine
    _small_index(eng)
    if len(argv) > 3 and int(argv[3]) > 0:
        _install_io_kill(int(argv[3]), argv[4] == "1", rng)
    atoms = list(eng.table.atom_index)
    out = sys.stdout
    out.write(json.dumps({"ready": eng.snapshot.last_seq}) + "\n")
    out.flush()
    i = 0
    while True:
        i += 1
        kind = rng.choices(["add", "many", "correct", "retract", "delete", "compact"], [4, 3, 2, 1, 1, 0.3])[0]
        if kind != "add" and kind != "many" and not atoms:
            kind = "add"
        if kind == "compact":
            # Not a transaction: rewrites the segments and swaps the manifest (a crash window).
            if hasattr(mem, "compact"):
                mem.compact()
            continue
        rec: dict[str, Any] = {"op": kind}
        if kind == "add":
            vf = _when(rng)
            content = f"fact {seed}-{i} " + rng.choice(["alpha", "beta", "gamma", "délta 🚀", "זה"])
            vec = np.asarray([rng.gauss(0, 1) for _ in range(DIM)], np.float32) if rng.random() < 0.3 else None
            a = mem.add(content, tags={"kind": "single", "g": i % 4}, valid_from=vf, vector=vec)
            atoms.append(a.atom_id)
            rec.update(atom=a.atom_id, content=content, at=_us(vf))
        elif kind == "many":
            n = rng.randrange(2, 9)
            batch = f"{seed}-{i}"
            items = [
                {"content": f"batch {batch} item {j} " + "x" * rng.randrange(0, 300),
                 "tags": {"batch": batch, "n": n}, "valid_from": _when(rng)}
                for j in range(n)
            ]
            ids = mem.add_many(items)
            atoms.extend(ids)
            rec.update(batch=batch, n=n, ids=ids)
        elif kind == "correct":
            aid = rng.choice(atoms)
            vf = _when(rng)
            content = f"corrected {seed}-{i}"
            mem.correct(aid, content, valid_from=vf)
            rec.update(atom=aid, content=content, at=_us(vf))
        elif kind == "retract":
            aid = rng.choice(atoms)
            at = _when(rng)
            mem.retract(aid, at=at)
            rec.update(atom=aid, at=_us(at))
        else:
            aid = rng.choice(atoms)
            mem.delete(aid)
            rec.update(atom=aid)
        snap = eng.snapshot
        rec.update(seq=snap.last_seq, tx=snap.last_tx)
        out.write(json.dumps(rec) + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------- parent
@dataclass
class Harness:
    """Acknowledged transactions across all iterations on one store, and counters."""

    store: Path
    checkpoint_bytes: int = 2048
    acks: list[dict[str, Any]] = field(default_factory=list)
    iterations: int = 0
    kills_timer: int = 0
    kills_io: int = 0
    unacked_durable: int = 0
    lost: int = 0
    #: The last transaction seen in the store by a check: once seen, it must never disappear.
    seen_seq: int = 0
    verified: int = 0


def run_iteration(h: Harness, rng: random.Random, *, mode: str, max_run_s: float = 0.8) -> None:
    """Start a child on ``h.store``, let it write, kill it (``mode``: ``timer`` or ``io``), check."""
    seed = rng.randrange(1 << 30)
    args = [sys.executable, str(Path(__file__).resolve()), str(h.store), str(seed), str(h.checkpoint_bytes)]
    if mode == "io":
        args += [str(rng.randrange(1, 120)), "1" if rng.random() < 0.6 else "0"]
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(REPO))
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first:
        err = proc.stderr.read().decode() if proc.stderr else ""
        proc.wait()
        if mode == "io" and proc.returncode == -signal.SIGKILL:
            # Killed by its own I/O hook while opening (recovery or the first WAL file): fine,
            # nothing was acknowledged; the check below still runs.
            h.kills_io += 1
            h.iterations += 1
            check_store(h)
            return
        raise AssertionError(f"crash child failed to start (rc={proc.returncode}):\n{err}")
    if mode == "timer":
        time.sleep(rng.uniform(0.02, max_run_s))
        proc.send_signal(signal.SIGKILL)
        h.kills_timer += 1
    try:
        rest, err_b = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, err_b = proc.communicate()
    if proc.returncode != -signal.SIGKILL:
        raise AssertionError(f"crash child exited with {proc.returncode}, not SIGKILL:\n{err_b.decode()}")
    if mode == "io":
        h.kills_io += 1
    for line in rest.decode().splitlines(keepends=True):
        if line.endswith("\n"):  # a line cut by the kill was never acknowledged
            h.acks.append(json.loads(line))
    h.iterations += 1
    check_store(h)


def check_store(h: Harness) -> None:
    """Reopen read-only (no repair) and then as the writer; check every acknowledged transaction."""
    import aether

    emb = aether.HashingEmbedder(dim=DIM)
    report = _verify(h.store)  # the store's own checker (``aether verify``), before anything repairs it
    if report is not None:
        h.verified += 1
        assert report.ok, "aether verify: " + "; ".join(str(p) for p in report.problems)
    with aether.open(h.store, embedder=emb, read_only=True) as ro:
        _check_open_store(h, ro)
    if h.iterations % 3 == 0:  # the writer path too: repairs the torn tail, checkpoints on close
        with aether.open(h.store, embedder=emb, checkpoint_bytes=h.checkpoint_bytes) as rw:
            _check_open_store(h, rw)


def _verify(path: Path) -> Any:
    """``aether.security.verify.verify`` where this build has it (the security feature adds it)."""
    try:
        from aether.security.verify import verify
    except ImportError:
        return None
    return verify(path)


def _check_open_store(h: Harness, mem: Any) -> None:
    eng = mem._engine
    snap = eng.snapshot
    floor = max([h.seen_seq] + [a["seq"] for a in h.acks])
    # Every acknowledged (or earlier seen) transaction is there; at most one more: the one
    # that was committed when the kill came, before it could be acknowledged.
    assert snap.last_seq in (floor, floor + 1), f"store at seq {snap.last_seq}, acknowledged/seen {floor}"
    if snap.last_seq > floor:
        h.unacked_durable += 1
    h.seen_seq = snap.last_seq
    lost = 0
    for a in h.acks:
        if not _ack_present(mem, a):
            lost += 1
    h.lost = max(h.lost, lost)
    assert lost == 0, f"{lost} acknowledged transactions lost"
    check_consistency(mem)


def _ack_present(mem: Any, a: dict[str, Any]) -> bool:
    from aether._time import from_us

    eng = mem._engine
    t = eng.table
    tx = a["tx"]
    op = a["op"]
    if op in ("add", "correct"):
        got = mem.get(a["atom"], valid_at=from_us(a["at"]), as_of=from_us(tx))
        return got is not None and got.content.inline == a["content"] and _us(got.tx_from) == tx
    if op == "many":
        n = eng.snapshot.n
        rows = np.flatnonzero(t.tag_mask({"batch": a["batch"]}, n) & (t.tx_from[:n] == tx))
        return len(rows) == a["n"] and sorted(t.text(int(r))["atom_id"] for r in rows) == sorted(a["ids"])
    if op == "retract":
        return mem.get(a["atom"], valid_at=from_us(a["at"]), as_of=from_us(tx)) is None
    # delete: nothing of the atom is believed as of the delete, though its history stays
    rows = eng.atom_rows(a["atom"], eng.snapshot)
    return bool(rows) and not any(t.tx_from[r] <= tx < t.tx_to[r] for r in rows)


def check_consistency(mem: Any) -> dict[str, int]:
    """A ``verify``-style check of an open store's invariants; raises ``AssertionError``.

    Version ids strictly increase; intervals are non-empty; nothing is later than the last
    commit; vectors are finite unit rows; at every transaction time the versions an atom has
    believed have disjoint valid intervals; every ``add_many`` batch is whole; history is
    ordered by ``tx_from``; a search runs. Uses ``Memory.verify()`` too once it exists.
    """
    from aether._time import OPEN

    eng = mem._engine
    snap = eng.snapshot
    t = eng.table
    n = snap.n
    vid = t.version_id[:n]
    assert (np.diff(vid) > 0).all(), "version ids not strictly increasing"
    vf, vt, tf, tt = t.valid_from[:n], t.valid_to[:n], t.tx_from[:n], t.tx_to[:n]
    assert (vf < vt).all(), "empty valid interval"
    assert (tf < tt).all(), "empty transaction interval"
    assert (tf <= snap.last_tx).all(), "a version from the future"
    assert ((tt == OPEN) | (tt <= snap.last_tx)).all(), "a closing from the future"
    if n:
        vecs = t.vectors[:n]
        assert np.isfinite(vecs).all()
        assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-3)
    batches: dict[str, int] = {}
    for code, rows in list(t.atom_rows.items()):
        rows = [r for r in rows if r < n and not t.dead[r]]
        if not rows:
            continue
        cuts = sorted({int(tf[r]) for r in rows})
        for T in cuts:
            live = sorted((int(vf[r]), int(vt[r])) for r in rows if tf[r] <= T < tt[r])
            for (_, e1), (s2, _) in itertools.pairwise(live):
                assert e1 <= s2, f"overlapping valid intervals for atom code {code} as of {T}"
        for r in rows:
            tags = t.text(r)["tags"]
            if "batch" in tags:
                batches[str(tags["batch"])] = int(tags["n"])
        aid = t.text(rows[0])["atom_id"]
        hist = mem.history(aid)
        assert [_us(v.tx_from) for v in hist] == sorted(_us(v.tx_from) for v in hist)
    for batch, size in batches.items():
        # The rows one add_many wrote share its transaction time: all of them or none.
        # (A later correct/retract may re-split a member into pieces with later tx times.)
        rows = np.flatnonzero(t.tag_mask({"batch": batch}, n))
        first = tf[rows].min()
        whole = int((tf[rows] == first).sum())
        assert whole == size, f"add_many batch {batch} is partial: {whole} of {size} rows"
    if n:
        mem.search(np.ones(eng.embedder.dim, np.float32), k=3)
    verify = getattr(mem, "verify", None)
    if callable(verify):
        report = verify()
        ok = getattr(report, "ok", report.get("ok", True) if isinstance(report, dict) else True)
        assert ok, f"verify() reports problems: {report}"
    return {"rows": n, "seq": snap.last_seq}


# ---------------------------------------------------------------------------------------- kill points
#: Maintenance operations that :func:`kill_points_main` kills at every storage call.
KILL_POINT_OPS = ("checkpoint", "compact", "merge", "erase_subject", "reindex")


def run_maintenance(mem: Any, op: str) -> None:
    """One maintenance operation of :data:`KILL_POINT_OPS`, then a clean close."""
    if op == "checkpoint":
        mem.add("written just before the checkpoint", subject="keep")
        mem.checkpoint()
    elif op == "compact":
        mem.compact()
    elif op == "merge":
        mem.compact(merge_below=10_000)
    elif op == "erase_subject":
        mem.erase(subject="gone")
    elif op == "reindex":
        mem.reindex(embedder=aether_embedder())
    else:
        raise ValueError(op)
    mem.close()


def aether_embedder() -> Any:
    import aether

    return aether.HashingEmbedder(dim=DIM)


def kill_points_main(argv: list[str]) -> None:
    """``crash_child.py --kill-points TEMPLATE OUTDIR OP KEYHEX|-``: one copy of the template store per
    storage call of ``OP``, each killed (SIGKILL) at that call, and once more after a torn write
    where that call writes data.

    Each copy is run by a child forked from this process, which opens no store itself (so it has
    no threads when it forks). Prints one JSON line: the killed copies and how many calls ``OP`` makes.
    """
    import shutil
    import traceback

    import aether

    template, outdir, op, keyhex = Path(argv[0]), Path(argv[1]), argv[2], argv[3]
    key = None if keyhex == "-" else bytes.fromhex(keyhex)
    killed: list[str] = []
    n = 0
    finished = False
    mark = outdir / "call-kind"
    while not finished and n < 2000:
        n += 1
        for tear in (False, True):
            if tear and (not mark.exists() or mark.read_text() != "write"):
                continue  # a torn variant only where the n-th call writes data
            mark.unlink(missing_ok=True)
            dst = outdir / f"{op}-{n:04d}{'-torn' if tear else ''}"
            pid = os.fork()
            if pid == 0:  # the child: copy, open, arm the kill, run
                code = 3
                try:
                    shutil.copytree(template, dst)
                    mem = aether.open(dst, embedder=aether_embedder(), key=key)
                    _small_index(mem._engine)
                    _install_io_kill(n, tear, random.Random(n), mark)
                    run_maintenance(mem, op)
                    code = 0  # finished before its n-th storage call
                except BaseException:
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                killed.append(str(dst))
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                finished = True
                shutil.rmtree(dst, ignore_errors=True)
                break
            else:
                raise SystemExit(f"kill-point child for {op} at call {n} failed: status {status}")
    mark.unlink(missing_ok=True)
    print(json.dumps({"op": op, "calls": n - 1, "killed": killed}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--kill-points"]:
        kill_points_main(sys.argv[2:])
    else:
        child_main(sys.argv[1:])
