"""The version table's atom lookups: ``atom id -> code`` and ``code -> rows``, both built lazily."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from .table import VersionTable

#: At most this many bulk runs in ``_AtomRows`` before they are folded into its CSR arrays.
_MAX_RUNS = 4096


class _AtomIndex:
    """``atom id -> code``, a dict over ``atom_ids`` built on first use.

    Opening a store with a million atoms need not hash a million strings into a dict before
    the first write or point lookup (searches never use it).
    """

    __slots__ = ("_arrow", "_d", "_ids", "_lock", "_scans")

    def __init__(self, ids: list[str]) -> None:
        self._ids = ids
        self._d: dict[str, int] | None = {}
        self._lock = threading.Lock()
        self._arrow: pa.Array | None = None  # the ids as Arrow while the dict is not built
        self._scans = 0

    def dict(self) -> dict[str, int]:
        d = self._d
        if d is None:
            with self._lock:
                if self._d is None:
                    self._d = dict(zip(self._ids, range(len(self._ids)), strict=True))
                    self._arrow = None
                d = self._d
        return d

    def reset(self, ids: pa.Array) -> None:
        """``atom_ids`` is exactly ``ids`` (codes in order), set in bulk: build the dict on demand."""
        self._d = None
        self._arrow = ids
        self._scans = 0

    def get(self, key: str, default: Any = None) -> Any:
        arrow = self._arrow
        if self._d is None and arrow is not None and self._scans < 16:
            # A few point lookups (open-time hooks, a first get) scan the Arrow ids instead of
            # hashing them all into a dict; repeated lookups build the dict.
            self._scans += 1
            if not isinstance(key, str):
                return default
            pos = pc.index(arrow, pa.scalar(key, pa.string())).as_py()
            return default if pos is None or pos < 0 else pos
        return self.dict().get(key, default)

    def __getitem__(self, key: str) -> int:
        return self.dict()[key]

    def __setitem__(self, key: str, code: int) -> None:
        self.dict()[key] = code

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None if isinstance(key, str) else key in self.dict()

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))  # ids are unique and in code order, like the dict's keys

    def keys(self) -> list[str]:
        return list(self._ids)

    def items(self) -> list[tuple[str, int]]:
        return list(zip(list(self._ids), range(len(self._ids)), strict=True))

    def update(self, pairs: Any) -> None:
        self.dict().update(pairs)


class _AtomRows:
    """Rows of each atom code, as a read-only mapping ``code -> ascending row list``.

    Built lazily: rows bulk-loaded from segments are indexed by one stable argsort of the
    code column (CSR arrays) on first use, not by a million small Python lists at open;
    rows appended by commits afterwards go to a small dict until it is folded in.
    """

    __slots__ = ("_csr_n", "_extra", "_extra_rows", "_lock", "_order", "_run_codes", "_runs", "_starts", "_table")

    def __init__(self, table: VersionTable) -> None:
        self._table = table
        self._csr_n = 0  # rows [0, _csr_n) are in the CSR arrays
        self._order = np.zeros(0, np.int64)
        self._starts = np.zeros(1, np.int64)
        self._extra: dict[int, list[int]] = {}
        self._extra_rows = 0
        # Bulk batches of brand-new atoms: codes [c, c + m) are rows [r, r + m), one (c, m, r) per batch
        # (no per-row Python); ``_run_codes`` holds each run's first code, for bisection.
        self._runs: list[tuple[int, int, int]] = []
        self._run_codes: list[int] = []
        self._lock = threading.Lock()

    def _build(self) -> None:
        t = self._table
        n = t.n
        codes = t.atom_code[:n]
        self._order = np.argsort(codes, kind="stable").astype(np.int64)
        counts = np.bincount(codes, minlength=len(t.atom_ids)) if n else np.zeros(len(t.atom_ids), np.int64)
        starts = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        self._starts = starts
        self._csr_n = n
        self._extra = {}
        self._extra_rows = 0
        self._runs = []
        self._run_codes = []

    def stale(self) -> None:
        """Rows were bulk-appended without per-row bookkeeping: rebuild on next use."""
        with self._lock:
            self._csr_n = -1

    def add(self, codes: np.ndarray, start: int, *, fresh: bool = False) -> None:
        """Record rows ``start, start+1, ...`` with these codes (commits; the table's ``n`` already counts them).

        ``fresh``: the codes were just assigned, one per row in increasing order (new atoms only).
        """
        with self._lock:
            if self._csr_n < 0:
                return  # rebuilt from the code column (which has these rows) on next use
            extra = self._extra
            skip = max(0, self._csr_n - start)  # a reader's rebuild may already have covered them
            m = len(codes)
            if (
                fresh and skip == 0 and m >= 64 and len(self._runs) < _MAX_RUNS
                and int(codes[-1]) - int(codes[0]) == m - 1
            ):
                self._runs.append((int(codes[0]), m, start))
                self._run_codes.append(int(codes[0]))
                return
            for i, c in enumerate(codes[skip:].tolist(), start + skip):
                lst = extra.get(c)
                if lst is None:
                    extra[c] = [i]
                else:
                    lst.append(i)
            self._extra_rows += len(codes) - skip
            if self._extra_rows > max(1 << 17, self._csr_n):  # fold into the CSR arrays: keeps the dict small
                self._csr_n = -1

    def get(self, code: int | None, default: Any = None) -> Any:
        if code is None:
            return default
        with self._lock:
            if self._csr_n < 0:
                self._build()
            order, starts, more = self._order, self._starts, self._extra.get(int(code))
            more = list(more) if more else None
            if self._runs:
                j = bisect.bisect_right(self._run_codes, int(code)) - 1
                if j >= 0:
                    c0, m, r0 = self._runs[j]
                    if int(code) < c0 + m:  # the atom was new in a bulk batch: that row, then any later ones
                        more = [r0 + int(code) - c0] + (more or [])
        out: list[int] = []
        c = int(code)
        if 0 <= c < len(starts) - 1:
            a, b = starts[c], starts[c + 1]
            if b > a:
                out = order[a:b].tolist()
        if more:
            out = out + more
        return out if out else default

    def __getitem__(self, code: int) -> list[int]:
        rows = self.get(code)
        if rows is None:
            raise KeyError(code)
        result: list[int] = rows
        return result

    def items(self) -> list[tuple[int, list[int]]]:
        """Every ``(code, rows)`` pair with rows (a full walk: for checks and tools, not hot paths)."""
        out = []
        for c in range(len(self._table.atom_ids)):
            rows = self.get(c)
            if rows is not None:
                out.append((c, rows))
        return out

    def __contains__(self, code: object) -> bool:
        return isinstance(code, (int, np.integer)) and self.get(int(code)) is not None
