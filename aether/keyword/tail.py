"""The keyword index's in-memory tail, and BM25 computed exactly as tantivy computes it.

A write adds its rows' analysed terms to the tail at once; a background thread adds them to the
tantivy writer and commits (an fsync, 20-150 ms on disk), then drops them from the tail. A search
never waits for that commit. While the tail holds rows, a search scores with the statistics a
committed index would have -- documents ``N``, document frequencies ``df`` and the average field
length, each the committed index's plus the tail's -- so its results equal those of the
committed index (up to float32 rounding: tantivy scores in float32, this module in float64).

tantivy's BM25 (``query/bm25.rs``, ``fieldnorm/code.rs``): ``k1 = 1.2``, ``b = 0.75``,
``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``, a term contributes
``idf * (k1 + 1) * tf / (tf + k1 * (1 - b + b * dl / avgdl))``, where ``dl`` is the document's
token count quantised to one byte (exact up to 24, then 8 steps per doubling) and ``avgdl`` is
the exact mean token count.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

K1 = 1.2
B = 0.75


def _fieldnorm_table() -> list[int]:
    # tantivy's one-byte length code: bytes below 24 are the length itself; above, 3 mantissa
    # bits and an exponent (the decoding rule in tantivy's fieldnorm/code.rs, computed).
    out = []
    for b in range(256):
        if b < 24:
            out.append(b)
            continue
        x = b - 24
        bits, shift = x & 7, x >> 3
        out.append(24 + (bits if shift == 0 else (bits | 8) << (shift - 1)))
    return out


FIELDNORMS = _fieldnorm_table()


def fieldnorm(length: int) -> int:
    """The token count tantivy scores a document with (its quantised length)."""
    return FIELDNORMS[bisect.bisect_right(FIELDNORMS, length) - 1]


def idf(n_docs: int, df: int) -> float:
    return math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))


@dataclass(frozen=True)
class Stats:
    """Corpus statistics BM25 scores with."""

    n_docs: int
    total_tokens: float
    df: dict[str, int]

    @property
    def avgdl(self) -> float:
        return self.total_tokens / self.n_docs if self.n_docs else 0.0


def score(terms: Sequence[str], tf: Counter[str] | dict[str, int], length: int, st: Stats) -> float:
    """BM25 of one document (its term counts and token count) for the query ``terms``."""
    avg = st.avgdl
    if avg <= 0:
        return 0.0
    norm = K1 * (1.0 - B + B * fieldnorm(length) / avg)
    s = 0.0
    for t in terms:
        f = tf.get(t, 0)
        if f:
            s += idf(st.n_docs, st.df.get(t, 0)) * (K1 + 1.0) * f / (f + norm)
    return s


def growth_bound(terms: Sequence[str], committed: Stats, combined: Stats) -> float:
    """An upper bound on ``combined score / committed score`` for any committed document.

    Per term the idf changes by ``idf_T / idf_c``; the length factor ``tf / (tf + K)`` grows by
    at most ``avgdl_T / avgdl_c`` (when the average length grows; it shrinks otherwise). A tiny
    margin covers float32 rounding in tantivy's scores.
    """
    rho = 1.0
    for t in terms:
        dfc = committed.df.get(t, 0)
        if dfc == 0:
            continue  # no committed document holds the term: it adds nothing to their scores
        rho = max(rho, idf(combined.n_docs, combined.df.get(t, 0)) / idf(committed.n_docs, dfc))
    if committed.avgdl > 0:
        rho *= max(1.0, combined.avgdl / committed.avgdl)
    return rho * (1.0 + 1e-5)


@dataclass
class Tail:
    """Analysed rows not yet in the committed tantivy index: ``row -> (term counts, tokens)``."""

    rows: dict[int, tuple[Counter[str], int]] = field(default_factory=dict)
    vids: dict[int, int] = field(default_factory=dict)  # row -> version_id
    tokens: int = 0
    df: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: int, vid: int, tokens: list[str]) -> None:
        tf = Counter(tokens)
        self.rows[row] = (tf, len(tokens))
        self.vids[row] = vid
        self.tokens += len(tokens)
        self.df.update(tf.keys())

    def drop_through(self, vid: int) -> None:
        """Forget the rows with ``version_id <= vid`` (now in the committed index)."""
        for row in [r for r, v in self.vids.items() if v <= vid]:
            tf, n = self.rows.pop(row)
            del self.vids[row]
            self.tokens -= n
            self.df.subtract(tf.keys())
        self.df = +self.df  # drop zero counts

    def copy(self) -> Tail:
        """A snapshot for one search (the background commit may shrink the live tail meanwhile)."""
        return Tail(dict(self.rows), dict(self.vids), self.tokens, Counter(self.df))

    def matching(self, terms: Iterable[str]) -> list[int]:
        """Tail rows that hold any of ``terms``."""
        want = set(terms)
        return [r for r, (tf, _) in self.rows.items() if not want.isdisjoint(tf)]


def combined_stats(terms: Sequence[str], n_docs: int, total_tokens: float, df_committed: dict[str, int],
                   tail: Tail) -> tuple[Stats, Stats]:
    """The committed index's statistics for ``terms`` and those of committed index + tail."""
    committed = Stats(n_docs, total_tokens, df_committed)
    both = Stats(n_docs + len(tail), total_tokens + tail.tokens,
                 {t: df_committed.get(t, 0) + tail.df.get(t, 0) for t in terms})
    return committed, both


def scores_of(terms: Sequence[str], docs: Sequence[tuple[Counter[str] | dict[str, int], int]],
              st: Stats) -> np.ndarray:
    """BM25 of several documents, rounded to float32 as tantivy's are (so that exact ties stay ties
    and near-ties order as tantivy orders them)."""
    return np.asarray([score(terms, tf, n, st) for tf, n in docs], np.float32).astype(np.float64)
