"""BM25 scoring of the keyword index beyond tantivy's own ranking: query analysis, the tail's statistics,
re-scoring given rows (hybrid fusion), and the exact top-``k`` of a ranking read under a row mask."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.query import topk_rows
from . import tail as _bm25
from ._analysis import iter_contents

if TYPE_CHECKING:
    from ..engine.query import Snapshot
    from ..engine.store import Engine

#: Term queries kept per schema (the cache is cleared when it holds this many).
_TQ_CACHE = 65536
#: An English clitic after an apostrophe (straight or curly): dropped from query text.
_CLITIC = re.compile(r"(?<=\w)['\u2019](?:s|t|d|m|ll|re|ve)\b", re.IGNORECASE)
#: Analysed committed rows kept for tail-time re-scoring.
_AN_CACHE_ROWS = 100_000


class _Scoring:
    """The scoring half of :class:`~aether.keyword.index.KeywordIndex` (which sets these attributes)."""

    _tv: Any
    _an: Any
    _schema: Any
    _tq: dict[str, Any]
    _tokens: tuple[Any, float] | None
    _an_cache: dict[int, tuple[Any, int]]
    _an_table: Any
    stats: dict[str, int]

    if TYPE_CHECKING:
        def _view(self, engine: Engine) -> tuple[Any, _bm25.Tail | None]: ...

    def analyze(self, text: str) -> list[str]:
        """Distinct query terms after analysis (lowercase, stop words removed, stemmed).

        A clitic after an apostrophe (``Bruno's``, ``can't``, ``I'm``) is dropped first: the
        analyzer splits it into a one-letter term (``s``, ``t``, ``m``) that carries no meaning but
        matches every ``it's`` and ``don't`` in the store, and with a high IDF in a store of short
        utterances it outranked the query's real terms. Only queries are normalised (documents
        keep tantivy's analysis, so indexed statistics and the tail stay as they are).
        """
        return list(dict.fromkeys(self._an.analyze(_CLITIC.sub("", text))))

    def _body_query(self, terms: list[str]) -> Any:
        """The OR of the ``terms``' term queries (each built once per schema and kept)."""
        tv = self._tv
        cache = self._tq
        qs = []
        for term in terms:
            q = cache.get(term)
            if q is None:
                if len(cache) >= _TQ_CACHE:
                    cache.clear()
                q = cache[term] = tv.Query.term_query(self._schema, "body", term, index_option="freq")
            qs.append((tv.Occur.Should, q))
        return tv.Query.boolean_query(qs)

    def _total_tokens(self, searcher: Any, engine: Engine) -> float:
        """Token count of the committed index (tantivy's ``avgdl * N``, read once per searcher from
        the explanation of a one-document query on a committed row)."""
        cached = self._tokens
        if cached is not None and cached[0] is searcher:
            return cached[1]
        total = 0.0
        n = int(searcher.num_docs)
        if n:
            tv = self._tv
            t = engine.table
            for r, text in iter_contents(engine, 0, t.n):
                vid = int(t.version_id[r])
                terms = self._an.analyze(text) if not t.dead[r] else []
                if not terms:
                    continue
                q = tv.Query.boolean_query([
                    (tv.Occur.Must, tv.Query.term_query(self._schema, "body", terms[0], index_option="freq")),
                    (tv.Occur.Must, tv.Query.const_score_query(tv.Query.term_query(self._schema, "vid", vid), 0.0)),
                ])
                hits = searcher.search(q, 1, count=False).hits
                if not hits:
                    continue
                avgdl = _find_avgdl(json.loads(q.explain(searcher, hits[0][1]).to_json()))
                if avgdl is not None:
                    total = float(round(avgdl * n))
                    break
        self._tokens = (searcher, total)
        return total

    @staticmethod
    def _hit_rows(searcher: Any, hits: list[Any], vid_col: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Table rows and scores of tantivy hits (rows after the snapshot, or removed ones, dropped)."""
        scores = np.asarray([h[0] for h in hits], dtype=np.float64)
        vids_hit = np.asarray(searcher.fast_field_values("vid", [h[1] for h in hits]), dtype=np.int64)
        pos = np.searchsorted(vid_col, vids_hit)
        ok = pos < n
        ok[ok] &= vid_col[pos[ok]] == vids_hit[ok]
        return pos[ok], scores[ok]

    def _stats(self, engine: Engine, searcher: Any, terms: list[str], tail: _bm25.Tail) -> tuple[Any, Any]:
        df = {term: int(searcher.doc_freq("body", term)) for term in terms}
        return _bm25.combined_stats(terms, int(searcher.num_docs), self._total_tokens(searcher, engine), df, tail)

    def _analysed(self, engine: Engine, rows: np.ndarray) -> list[tuple[Any, int]]:
        """``(term counts, token count)`` of committed rows, from their content."""
        from collections import Counter

        t = engine.table
        cache = self._an_cache
        if t is not self._an_table:  # another table (a reload): row numbers may mean other versions
            cache.clear()
            self._an_table = t
        todo = [int(r) for r in rows if int(r) not in cache]
        if todo:
            cols = getattr(t, "text_columns", None)
            texts = cols(todo)["content"] if cols is not None else [t.text(r)["content"] for r in todo]
            if len(cache) + len(todo) > _AN_CACHE_ROWS:
                cache.clear()
            for r, txt in zip(todo, texts, strict=True):
                toks = self._an.analyze(txt or "")
                cache[r] = (Counter(toks), len(toks))
        return [cache[int(r)] for r in rows]

    def _search_tail(
        self, engine: Engine, snap: Snapshot, searcher: Any, tail: _bm25.Tail, q: Any, terms: list[str],
        mask: np.ndarray, k: int, dedupe: bool, info: dict[str, Any],
    ) -> tuple[list[tuple[int, float]], dict[str, Any]]:
        self.stats["tail_searches"] += 1
        info["strategy"] += "+tail"
        t = engine.table
        committed, both = self._stats(engine, searcher, terms, tail)
        rho = _bm25.growth_bound(terms, committed, both)
        trows = [r for r in tail.matching(terms) if r < snap.n and mask[r]]
        cand_rows: list[int] = list(trows)
        cand_sc: list[float] = _bm25.scores_of(terms, [tail.rows[r] for r in trows], both).tolist()
        seen: set[int] = set(trows)
        vid_col = t.version_id[: snap.n]
        code = t.atom_code if dedupe else None

        def best() -> list[tuple[int, float]]:
            if not cand_rows:
                return []
            return _topk(np.asarray(cand_rows, np.int64), np.asarray(cand_sc), k, code)

        limit = max(4 * k, 64)
        while True:
            info["rounds"] += 1
            hits = searcher.search(q, limit, count=False).hits
            info["examined"] = len(hits)
            rows, sc = self._hit_rows(searcher, hits, vid_col, snap.n) if hits else (np.zeros(0, np.int64), np.zeros(0))
            # In committed-score order: re-score in small batches, and stop reading once an unread hit,
            # even grown by the tail's statistics, cannot pass the current k-th best.
            out = best()
            i = 0
            while i < len(rows):
                if len(out) >= k and out[-1][1] >= rho * float(sc[i]):
                    return out, info
                batch = [int(r) for r in rows[i : i + max(k, 16)] if int(r) not in seen and mask[int(r)]]
                i += max(k, 16)
                if batch:
                    seen.update(batch)
                    cand_rows.extend(batch)
                    cand_sc.extend(_bm25.scores_of(terms, self._analysed(engine, np.asarray(batch)), both).tolist())
                    out = best()
            if len(hits) < limit:
                return out, info
            if len(out) >= k and len(sc) and out[-1][1] >= rho * float(sc[-1]):
                return out, info
            limit *= 4

    def scores_for(self, engine: Engine, text: str, rows: np.ndarray) -> np.ndarray:
        """BM25 scores of the given rows for ``text`` (0 where a row matches no term), with the
        statistics of the committed index plus the tail, as in :meth:`search`.

        Scored from the rows' analysed content (cached per row) with tantivy's BM25 arithmetic
        (:mod:`.tail`), not by a tantivy query restricted to the rows' version ids: for the
        hundred-odd rows hybrid fusion asks about, that query cost more than both halves' searches.
        """
        terms = self.analyze(text)
        if not terms or len(rows) == 0:
            return np.zeros(len(rows), np.float64)
        searcher, tail = self._view(engine)
        st, docs = self._docs(engine, searcher, tail, terms, rows)
        return _bm25.scores_of(terms, docs, st)

    def _docs(self, engine: Engine, searcher: Any, tail: _bm25.Tail | None, terms: list[str], rows: np.ndarray
              ) -> tuple[_bm25.Stats, list[tuple[Any, int]]]:
        """The statistics to score with (committed index plus tail) and ``rows``' analysed content."""
        if tail is None:
            df = {term: int(searcher.doc_freq("body", term)) for term in terms}
            return _bm25.Stats(int(searcher.num_docs), self._total_tokens(searcher, engine), df), \
                self._analysed(engine, np.asarray(rows, np.int64))
        _, st = self._stats(engine, searcher, terms, tail)
        committed_at = [int(r) for r in rows if int(r) not in tail.rows]
        analysed = iter(self._analysed(engine, np.asarray(committed_at, np.int64)))
        return st, [tail.rows[int(r)] if int(r) in tail.rows else next(analysed) for r in rows]

    def visible_scores(self, engine: Engine, text: str, rows: np.ndarray, n_visible: int
                       ) -> tuple[np.ndarray, np.ndarray]:
        """BM25 of ``rows`` with the store's statistics and with those of the visible rows alone.

        ``rows`` must be every visible row that matches a query term (a keyword ranking under the
        search's mask that ended before its depth) and ``n_visible`` the number of visible rows.
        The second array scores them as BM25 over that visible sub-collection: each term's IDF
        from how many visible rows hold it (the average length stays the store's). A term that
        every visible row holds -- a person's name under that person's tag filter -- then weighs
        almost nothing, where with the store's IDF it ranked rows by length alone.
        """
        terms = self.analyze(text)
        if not terms or len(rows) == 0:
            z = np.zeros(len(rows), np.float64)
            return z, z
        searcher, tail = self._view(engine)
        st, docs = self._docs(engine, searcher, tail, terms, rows)
        n_vis = max(int(n_visible), len(rows))
        df_vis = {term: sum(1 for tf, _ in docs if tf.get(term, 0)) for term in terms}
        vis = _bm25.Stats(n_vis, st.avgdl * n_vis, df_vis)
        return _bm25.scores_of(terms, docs, st), _bm25.scores_of(terms, docs, vis)

    def doc_freq(self, engine: Engine, term: str) -> int:
        """Documents (deleted ones included until a rebuild) holding the analysed ``term``, the
        tail's included."""
        searcher, tail = self._view(engine)
        return int(searcher.doc_freq("body", term)) + (tail.df.get(term, 0) if tail is not None else 0)


def _topk(rows: np.ndarray, scores: np.ndarray, k: int, atom_code: np.ndarray | None) -> list[tuple[int, float]]:
    """Best ``k`` ``(row, score)``, ties to the lower row (deterministic, so the tail path and the
    committed path agree on ties at the cut, where a partial sort would pick either)."""
    if atom_code is not None:
        return topk_rows(rows, scores, k, atom_code)  # a full sort already
    order = np.lexsort((rows, -scores))[:k]
    return [(int(rows[i]), float(scores[i])) for i in order]


def _find_avgdl(node: Any) -> float | None:
    """The ``avgdl`` value in a tantivy explanation tree."""
    if isinstance(node, dict):
        if str(node.get("description", "")).startswith("avgdl"):
            return float(node["value"])
        for child in node.get("details", []) or []:
            got = _find_avgdl(child)
            if got is not None:
                return got
    return None
