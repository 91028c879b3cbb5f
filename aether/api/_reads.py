"""The facade's reads: ``get``, ``history``, payloads, and the searches (``search``, ``search_many``, ``explain``,
``search_space``) with their bitemporal filters."""

from __future__ import annotations

import math
import time as _time_mod
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from .._time import TimeLike, from_us
from .._timing import current as _timings
from .._timing import phase as _phase
from ..engine import search as _search
from ..engine.store import Engine
from ..engine.validate import check_tags
from ..errors import AtomNotFoundError, InvalidInputError, NoPayloadError
from ..models import Hit, MemoryAtom, SearchPlan
from ..retrieval.fusion import DEFAULT_RRF_K as _DEFAULT_RRF_K
from ..retrieval.hybrid import RANKING_OPTIONS as _RANKING_OPTIONS
from ..retrieval.hybrid import check_options as _check_options
from ..retrieval.hybrid import resolve_mode as _resolve_mode
from ..retrieval.hybrid import run as _run_keyword
from ..retrieval.hybrid import wants_run as _wants_run
from ..storage.blobs import BlobReader
from ._base import _MemoryBase
from ._helpers import _during, _opt_time, _with_where

#: The plan note of a hybrid search with vector queries only (as ``aether.retrieval.hybrid.run`` writes it).
_VECTOR_HYBRID_NOTE = "vector query: no keyword half; hybrid returns the dense hits and scores"




def _query_vectors(engine: Engine, queries: list[Any]) -> np.ndarray:
    """``engine.query_vectors(queries)``, with one float vector of the right size checked and
    normalised in place of the general path (its arithmetic is ``as_unit_vectors``'s, so the
    result is the same array; ~20 us of numpy calls less per search). Anything else -- texts,
    batches, wrong shapes, non-finite, zero or overflowing vectors -- goes the general way, which
    raises for bad input."""
    if len(queries) == 1:
        q = queries[0]
        if type(q) is np.ndarray and q.ndim == 1 and q.dtype.kind == "f" and q.shape[0] == engine.embedder.dim:
            arr = q.astype(np.float32, copy=False).reshape(1, -1)
            sq = np.einsum("ij,ij->i", arr, arr)
            s = float(sq[0])
            if 1e-30 < s < math.inf:  # finite and not tiny: every element finite (NaN fails both)
                return np.ascontiguousarray(arr / np.sqrt(sq)[:, None], dtype=np.float32)
    return engine.query_vectors(queries)


def _vector_only(queries: list[Any], options: Mapping[str, Any]) -> bool:
    """No text query and no re-ranking option: a hybrid search that is exactly the dense one."""
    for q in queries:
        if isinstance(q, str):
            return False
    return all(options.get(o) is None for o in _RANKING_OPTIONS)


class _Reads(_MemoryBase):
    def get(
        self, atom_id: str, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None
    ) -> MemoryAtom | None:
        """The version of ``atom_id`` true at ``valid_at`` as the store knew it at ``as_of``, or ``None``."""
        row = self._engine.get_row(atom_id, self._valid_at(valid_at), _opt_time(as_of, "as_of"))
        return None if row is None else _search.atoms_at(self._engine, [row])[0]

    def history(self, atom_id: str) -> list[MemoryAtom]:
        """Every version of ``atom_id`` (closed ones included), ordered by ``tx_from``."""
        return _search.atoms_at(self._engine, self._engine.history_rows(atom_id))

    def _filters(
        self, valid_at: TimeLike | None, as_of: TimeLike | None, valid_during: Any, tags: Any
    ) -> _search.Filters:
        snap = self._engine.snapshot
        during = _during(valid_during)
        if during is not None and valid_at is not None:
            raise InvalidInputError("give valid_at or valid_during, not both")
        return _search.Filters(
            as_of=self._engine.resolve_as_of(_opt_time(as_of, "as_of"), snap),
            valid_at=None if during is not None else self._valid_at(valid_at),
            valid_during=during,
            tags=check_tags(tags) or None,
        )

    def search_many(
        self,
        queries: Sequence[str | np.ndarray] | np.ndarray,
        *,
        k: int = 10,
        valid_at: TimeLike | None = None,
        as_of: TimeLike | None = None,
        valid_during: tuple[TimeLike | None, TimeLike | None] | None = None,
        tags: Mapping[str, Any] | None = None,
        mode: str | None = None,
        fusion: str | None = None,
        rrf_k: int = 60,
        dense_weight: float | None = None,
        ranking: str | None = None,
        relevance: float | None = None,
        recency: float | None = None,
        importance: float | None = None,
        half_life: timedelta | float | None = None,
        recency_axis: str | None = None,
        diversity: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for a batch of queries (texts or an ``(m, dim)`` array)."""
        hits, _ = self._search(queries, k, valid_at, as_of, valid_during, _with_where(tags, where),
                               mode=mode, fusion=fusion, rrf_k=rrf_k, dense_weight=dense_weight, ranking=ranking,
                               relevance=relevance, recency=recency, importance=importance, half_life=half_life,
                               recency_axis=recency_axis, diversity=diversity)
        return hits

    def _search(self, *args: Any, **kwargs: Any) -> tuple[list[list[Hit]], SearchPlan | None]:
        # A re-index swaps the table and embedder in place: retry a query that overlapped the swap
        # (engine.gen_seq odd, or changed), so that no result mixes two generations.
        eng = self._engine
        while True:
            seq = eng.gen_seq
            if seq & 1:
                _time_mod.sleep(0.0005)
                continue
            try:
                out = self._search_once(*args, **kwargs)
            except Exception:
                if eng.gen_seq != seq:
                    continue
                raise
            if eng.gen_seq == seq:
                return out

    def _search_once(
        self, queries: Any, k: int, valid_at: Any, as_of: Any, valid_during: Any, tags: Any,
        *, mode: str | None = None, want: str = "hits", **fusion: Any,
    ) -> tuple[list[list[Hit]], SearchPlan | None]:
        """Hits (``want="hits"``: no plan is built) or the plan (``want="plan"``: no hits are built)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError("k must be a positive int")
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            qlist: list[Any] = list(queries)
        else:
            qlist = list(queries)
        f = self._filters(valid_at, as_of, valid_during, tags)
        eng = self._engine
        snap = eng.snapshot
        extra: dict[str, Any] = {}
        mode, fusion["fusion"] = _resolve_mode(mode, fusion.get("fusion"))
        timing = _timings()
        t0 = _time_mod.perf_counter()
        embed0 = timing.get("embed", 0.0) if timing is not None else 0.0
        if mode == "hybrid" and _vector_only(qlist, fusion):
            # Nothing to fuse: hybrid with vector queries is the dense search (what the keyword
            # module's run() does too, after the same option checks), without its per-call setup.
            _check_options(mode, fusion["fusion"], fusion.get("rrf_k", _DEFAULT_RRF_K), fusion.get("dense_weight"),
                           None)
            extra["notes"] = [_VECTOR_HYBRID_NOTE]
            results, buckets, selected = _search.plan_and_search(eng, snap, _query_vectors(eng, qlist), k, f)
        elif not _wants_run(mode, fusion):
            results, buckets, selected = _search.plan_and_search(eng, snap, _query_vectors(eng, qlist), k, f)
        else:  # keyword (BM25), hybrid or a re-ranking: aether.retrieval.hybrid, under the same filters
            results, buckets, selected, extra = _run_keyword(eng, snap, qlist, k, f, mode=mode, plan=want == "plan",
                                                             **fusion)
        if timing is not None:  # the index phase: the search less the query embedding inside it
            t1 = _time_mod.perf_counter()
            timing["index"] = timing.get("index", 0.0) + (t1 - t0) - (timing.get("embed", 0.0) - embed0)
        if want == "hits":
            if timing is None:
                return _search.hits_for(eng, results), None  # one columnar read for all hits, no re-validation
            with _phase("materialize"):
                return _search.hits_for(eng, results), None
        plan = SearchPlan(
            valid_at=from_us(f.valid_at) if f.valid_at is not None else None,
            valid_during=(from_us(f.valid_during[0]), from_us(f.valid_during[1])) if f.valid_during else None,
            as_of=from_us(f.as_of),
            tags=f.tags,
            k=k,
            total_rows=snap.n,
            selected_rows=selected,
            buckets_total=len(buckets),
            buckets_pruned=sum(1 for b in buckets if b.strategy == "pruned"),
            buckets=buckets,
            mode=mode,
            **extra,
        )
        return [], plan

    def search(
        self,
        query: str | np.ndarray,
        k: int = 10,
        *,
        valid_at: TimeLike | None = None,
        as_of: TimeLike | None = None,
        valid_during: tuple[TimeLike | None, TimeLike | None] | None = None,
        tags: Mapping[str, Any] | None = None,
        mode: str | None = None,
        fusion: str | None = None,
        rrf_k: int = 60,
        dense_weight: float | None = None,
        ranking: str | None = None,
        relevance: float | None = None,
        recency: float | None = None,
        importance: float | None = None,
        half_life: timedelta | float | None = None,
        recency_axis: str | None = None,
        diversity: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``k`` memories most similar to ``query``, best first.

        Parameters
        ----------
        query
            Text (embedded with the store's model) or a vector of dimension ``embedder.dim``.
        valid_at
            World time the facts must hold at (default now). Exclusive with ``valid_during``.
        as_of
            Transaction time: search what the store believed then (default the latest commit).
        valid_during
            ``(start, end)``: facts whose valid interval overlaps ``[start, end)``; ``None`` ends are open.
        tags
            ``key == value`` filters, all of which must match.
        mode
            ``"dense"`` (embedding similarity), ``"keyword"`` (BM25 over the content; text queries
            only) or ``"hybrid"`` (both, fused). Every mode applies the same time and tag filters.
            Keyword and hybrid need ``pip install 'aether[hybrid]'``. Default (``None``): hybrid with
            ``fusion="adaptive"`` (``aether.retrieval.hybrid.DEFAULT_MODE``; the measurement is there),
            and dense when tantivy is not installed. A hybrid search with a vector query returns the
            dense hits and their cosine scores. What ``Hit.score`` is in each mode: :class:`aether.Hit`.
        fusion
            Hybrid only: ``"rrf"`` (reciprocal rank fusion, the default of an explicit ``mode="hybrid"``;
            ``score = sum 1/(rrf_k + rank)``), ``"weighted"`` (``dense_weight * dense + (1 - dense_weight)
            * bm25``, each min-max scaled over the union of both halves' candidates, each candidate scored
            by both) or ``"adaptive"`` (the same with a per-query weight from how sharply each half's list
            singles out its best hit; ``dense_weight`` is then its base, default 0.6).
        ranking, relevance, recency, importance, half_life, recency_axis
            Agent-memory re-ranking of the filtered candidates (``aether.retrieval.ranking``): a preset
            (``"generative_agents"``, ``"recent"``, ``"relevance"``) and/or weights of relevance, recency
            (``0.5 ** (age / half_life)``, age in ``recency_axis`` ``"valid"`` or ``"tx"`` time up to
            ``valid_at``; half-life a timedelta or seconds, default 7 days) and importance
            (``quality_score``). Re-ranking only reorders what the time and tag filters let through.
        diversity
            MMR lambda in [0, 1] (1: plain ranking; lower: more diverse hits).
        where
            ``field == value`` filters on the top-level scalar fields of STRUCTURED atoms (all must
            match; other atoms never match). Combines with ``tags``.
        """
        if isinstance(query, np.ndarray) and query.ndim == 2:
            raise InvalidInputError("search takes one query; use search_many for a batch")
        return self._search([query], k, valid_at, as_of, valid_during, _with_where(tags, where),
                            mode=mode, fusion=fusion, rrf_k=rrf_k, dense_weight=dense_weight, ranking=ranking,
                            relevance=relevance, recency=recency, importance=importance, half_life=half_life,
                            recency_axis=recency_axis, diversity=diversity)[0][0]

    def explain(
        self,
        query: str | np.ndarray,
        k: int = 10,
        *,
        valid_at: TimeLike | None = None,
        as_of: TimeLike | None = None,
        valid_during: tuple[TimeLike | None, TimeLike | None] | None = None,
        tags: Mapping[str, Any] | None = None,
        mode: str | None = None,
        fusion: str | None = None,
        rrf_k: int = 60,
        dense_weight: float | None = None,
        ranking: str | None = None,
        relevance: float | None = None,
        recency: float | None = None,
        importance: float | None = None,
        half_life: timedelta | float | None = None,
        recency_axis: str | None = None,
        diversity: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> SearchPlan:
        """Run :meth:`search` and report its plan: rows selected, buckets pruned, per-bucket strategy
        (for keyword and hybrid modes also the query terms and both halves' ranked hits)."""
        plan = self._search([query], k, valid_at, as_of, valid_during, _with_where(tags, where), want="plan",
                            mode=mode, fusion=fusion, rrf_k=rrf_k, dense_weight=dense_weight, ranking=ranking,
                            relevance=relevance, recency=recency, importance=importance, half_life=half_life,
                            recency_axis=recency_axis, diversity=diversity)[1]
        assert plan is not None
        return plan

    def search_space(
        self,
        modality: str,
        query: Any,
        k: int = 10,
        *,
        valid_at: TimeLike | None = None,
        as_of: TimeLike | None = None,
        valid_during: tuple[TimeLike | None, TimeLike | None] | None = None,
        tags: Mapping[str, Any] | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``k`` atoms of ``modality`` whose payloads are closest to ``query`` in that modality's space.

        The space is the one of the payload embedder given as ``aether.open(..., embedders={modality:
        ...})`` (see :mod:`aether.spaces`); :meth:`search` searches the text space instead.

        Parameters
        ----------
        modality
            ``"image"``, ``"audio"`` or ``"video"``: a modality with a registered embedder.
        query
            Payload bytes (or a file path), embedded with that embedder, or a vector of its dimension.
        valid_at, as_of, valid_during, tags, where
            The filters of :meth:`search`, with the same meaning.

        Returns
        -------
        list[Hit]
            Best first; ``score`` is the cosine similarity in the modality's space.
        """
        from .. import spaces

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError("k must be a positive int")
        space = spaces.space_of(self._engine, modality)
        q = space.query_vector(query)
        f = self._filters(valid_at, as_of, valid_during, _with_where(tags, where))
        eng = self._engine
        space.sync(eng)
        snap = eng.snapshot
        visible = eng.mask(snap, as_of=f.as_of, valid_at=f.valid_at, valid_during=f.valid_during, tags=f.tags)
        found = space.topk(eng, q, k, visible, dedupe=f.valid_at is None)  # a range sees several versions
        return _search.hits_for(eng, [found])[0]

    def payload(self, atom_id: str, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None) -> bytes:
        """The payload bytes of the version of ``atom_id`` true at ``valid_at`` as known at ``as_of``.

        Read whole into memory; use :meth:`open_payload` to stream a large one.

        Raises
        ------
        AtomNotFoundError
            No version of the atom at those times.
        NoPayloadError
            That version has no payload.
        CorruptionError
            The stored bytes are missing or fail their checksum or digest.
        """
        from ..payloads import blobs_of

        return blobs_of(self._engine).read(self._payload_digest(atom_id, valid_at, as_of))

    def open_payload(
        self, atom_id: str, *, valid_at: TimeLike | None = None, as_of: TimeLike | None = None
    ) -> BlobReader:
        """:meth:`payload` as a binary file object read chunk by chunk (a 1 GB video needs ~1 MB of memory).

        Every chunk is checked as it is read; the digest of the whole payload is checked when the
        stream reaches its end (a ``CorruptionError`` from that last ``read``).
        """
        from ..payloads import blobs_of

        return blobs_of(self._engine).open(self._payload_digest(atom_id, valid_at, as_of))

    def _payload_digest(self, atom_id: str, valid_at: Any, as_of: Any) -> str:
        atom = self.get(atom_id, valid_at=valid_at, as_of=as_of)
        if atom is None:
            raise AtomNotFoundError(f"no version of atom {atom_id!r} at those times")
        if atom.payload_digest is None:
            raise NoPayloadError(f"atom {atom_id!r} has no payload at those times")
        return atom.payload_digest

