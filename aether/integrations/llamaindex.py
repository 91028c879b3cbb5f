"""A LlamaIndex vector store over an aether store (``pip install 'aether[llamaindex]'``).

>>> from llama_index.core import Document, StorageContext, VectorStoreIndex
>>> from aether.integrations.llamaindex import AetherVectorStore
>>> store = AetherVectorStore("./memory")          # doctest: +SKIP
>>> index = VectorStoreIndex.from_documents(
...     [Document(text="Alice lives in Paris")],
...     storage_context=StorageContext.from_defaults(vector_store=store))  # doctest: +SKIP
>>> index.as_retriever(vector_store_kwargs={"as_of": store.last_commit}).retrieve("where?")  # doctest: +SKIP

Nodes arrive embedded by LlamaIndex, so a new store is created on the first :meth:`add` with the
nodes' dimension (an aether store of precomputed vectors). A node written again under its id is
a correction (queries show only the new version; ``as_of=`` before it still sees the old one);
deletes retract, so history keeps what the agent knew. ``valid_at=`` and ``as_of=`` can be given to
:meth:`query` directly or through ``index.as_retriever(vector_store_kwargs={"as_of": ...})``.

Only the public facade (``aether.open``, ``Memory``) is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import api as _api
from ..embed import PrecomputedEmbedder
from ..errors import AtomNotFoundError, InvalidInputError, MissingDependencyError, StoreNotFoundError
from ..models import Hit, MemoryAtom

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as exc:  # the optional extra is not installed
    raise MissingDependencyError(
        "the LlamaIndex integration needs llama-index-core: pip install 'aether[llamaindex]'"
    ) from exc

__all__ = ["AetherVectorStore", "matches_filters"]

#: Model identity of stores this adapter creates: vectors come from LlamaIndex, aether embeds nothing.
IDENTITY = "precomputed:llamaindex"
#: Metadata keys of ``node_to_metadata_dict`` that hold the serialised node, not user metadata.
_NODE_KEYS = ("_node_content", "_node_type")
#: Longest tag key aether accepts; longer metadata keys are filtered in Python only.
_MAX_TAG_KEY = 256
#: Candidates per half of a hybrid search (aether's own default depth).
_HYBRID_DEPTH = 100


# ---------------------------------------------------------------------- filters
def _compare(op: FilterOperator, value: Any, actual: Any) -> bool:
    """One filter condition, with the semantics of LlamaIndex's reference (``SimpleVectorStore``)."""
    if op == FilterOperator.IS_EMPTY:
        return actual is None or actual == "" or actual == []
    if actual is None:  # a missing key matches only the negative operators
        return op in (FilterOperator.NE, FilterOperator.NIN)
    try:
        if op == FilterOperator.EQ:
            return bool(actual == value)
        if op == FilterOperator.NE:
            return bool(actual != value)
        if op == FilterOperator.GT:
            return bool(actual > value)
        if op == FilterOperator.GTE:
            return bool(actual >= value)
        if op == FilterOperator.LT:
            return bool(actual < value)
        if op == FilterOperator.LTE:
            return bool(actual <= value)
        if op == FilterOperator.IN:
            return actual in value
        if op == FilterOperator.NIN:
            return actual not in value
        if op == FilterOperator.CONTAINS:
            return value in actual
        if op == FilterOperator.ANY:
            return any(v in actual for v in value)
        if op == FilterOperator.ALL:
            return all(v in actual for v in value)
        if op == FilterOperator.TEXT_MATCH:
            return isinstance(actual, str) and isinstance(value, str) and value in actual
        if op == FilterOperator.TEXT_MATCH_INSENSITIVE:
            return isinstance(actual, str) and isinstance(value, str) and value.lower() in actual.lower()
    except TypeError:
        # Mixed types (a str field compared with > to a number): this node does not match, rather
        # than one odd node making every query fail.
        return False
    raise InvalidInputError(f"unsupported filter operator {op!r}")


def matches_filters(filters: MetadataFilters | None, metadata: dict[str, Any]) -> bool:
    """Whether ``metadata`` satisfies ``filters`` (nested ``MetadataFilters`` included; AND, OR, NOT)."""
    if filters is None or not filters.filters:
        return True
    results = (
        matches_filters(f, metadata)
        if isinstance(f, MetadataFilters)
        else _compare(f.operator, f.value, metadata.get(f.key))
        for f in filters.filters
    )
    cond = filters.condition or FilterCondition.AND
    if cond == FilterCondition.AND:
        return all(results)
    if cond == FilterCondition.OR:
        return any(results)
    if cond == FilterCondition.NOT:
        return not any(results)
    raise InvalidInputError(f"unsupported filter condition {cond!r}")


def _pushdown(filters: MetadataFilters | None) -> dict[str, str]:
    """Conditions aether can apply as tag filters: string equalities joined by AND (the rest run in Python)."""
    if filters is None or (filters.condition or FilterCondition.AND) != FilterCondition.AND:
        return {}
    out: dict[str, str] = {}
    for f in filters.filters:
        if (
            isinstance(f, MetadataFilter) and f.operator == FilterOperator.EQ and isinstance(f.value, str)
            and _taggable_key(f.key)
        ):
            if out.get(f.key, f.value) != f.value:
                return {}  # contradictory equalities: let the Python check return nothing
            out[f.key] = f.value
    return out


def _taggable_key(key: Any) -> bool:
    return isinstance(key, str) and 0 < len(key) <= _MAX_TAG_KEY and key not in _NODE_KEYS


def _tags(metadata: dict[str, Any]) -> dict[str, Any]:
    """Scalar metadata entries, stored as aether tags so that equality filters run inside the engine."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if not _taggable_key(key) or not isinstance(value, str | bool | int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            continue
        out[key] = value
    return out


def _filter_view(metadata: dict[str, Any]) -> dict[str, Any]:
    """What filters see: the flat metadata dict LlamaIndex's stores filter on (user keys and doc ids)."""
    return {k: v for k, v in metadata.items() if k not in _NODE_KEYS}


def _minmax(x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return x.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.ones(len(x), np.float64)
    return (x.astype(np.float64) - lo) / (hi - lo)


# ---------------------------------------------------------------------- the store
class AetherVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store backed by an aether bitemporal memory (``stores_text=True``).

    Parameters
    ----------
    path
        Store directory (``None``: in memory). An existing store is opened now; otherwise one is
        created on the first :meth:`add`, with the dimension of the nodes' embeddings.
    memory
        An open :class:`aether.Memory` to use instead (not closed by :meth:`close`).
    **open_kwargs
        Passed to :func:`aether.open` (``key=``, ``clock=``...). ``embedder=`` gives the store a model
        that embeds text, which must be the model LlamaIndex embeds with; hybrid queries then run
        inside aether (``mode="hybrid"``).

    Notes
    -----
    Query modes: ``DEFAULT`` (dense, ``query_embedding``), ``TEXT_SEARCH`` (BM25 over the text,
    ``query_str``; needs ``aether[hybrid]``) and ``HYBRID`` (both, weighted: ``alpha`` is the dense
    weight, default 0.5; ``hybrid_top_k`` overrides ``similarity_top_k``). ``MetadataFilters``
    (every operator, AND/OR/NOT, nested) filter on the node metadata and the document ids; string
    equalities run inside aether as tag filters, the rest in Python on the fetched candidates.
    """

    stores_text: bool = True
    flat_metadata: bool = False

    _memory: Any = PrivateAttr(default=None)
    _path: Any = PrivateAttr(default=None)
    _open_kwargs: dict[str, Any] = PrivateAttr(default_factory=dict)
    _owns: bool = PrivateAttr(default=True)

    def __init__(self, path: str | None = None, *, memory: _api.Memory | None = None, **open_kwargs: Any) -> None:
        super().__init__(stores_text=True)
        if memory is not None and (path is not None or open_kwargs):
            raise InvalidInputError("give memory= or path/open options, not both")
        self._path = path
        self._open_kwargs = dict(open_kwargs)
        self._owns = memory is None
        self._memory = memory
        has_model = "embedder" in open_kwargs or "model" in open_kwargs
        if memory is None and (path is not None or has_model):
            # An existing store, or one given a model, opens now; a new one waits for the first add,
            # which tells its dimension.
            try:
                self._memory = _api.open(path, **{"create": has_model, **self._open_kwargs})
            except StoreNotFoundError:
                self._memory = None

    @classmethod
    def class_name(cls) -> str:
        return "AetherVectorStore"

    @property
    def client(self) -> Any:
        """The :class:`aether.Memory` (``None`` until the first add creates a new store)."""
        return self._memory

    @property
    def memory(self) -> _api.Memory | None:
        """The :class:`aether.Memory` (``None`` until the first add creates a new store)."""
        return self._memory

    @property
    def last_commit(self) -> Any:
        """Transaction time of the latest write; pass it later as ``as_of=`` to see the store as it was."""
        return None if self._memory is None else self._memory.last_commit

    def close(self) -> None:
        """Close the store if this object opened it (idempotent)."""
        if self._owns and self._memory is not None:
            self._memory.close()

    def _ensure(self, dim: int) -> _api.Memory:
        if self._memory is None:
            kwargs = {"embedder": PrecomputedEmbedder(dim, IDENTITY), **self._open_kwargs}
            self._memory = _api.open(self._path, **kwargs)
        mem: _api.Memory = self._memory
        if mem.embedder.dim != dim:
            raise InvalidInputError(f"the nodes' embeddings have dimension {dim}; this store holds {mem.embedder.dim}")
        return mem

    def _embeds_text(self) -> bool:
        return self._memory is not None and not self._memory.embedder.identity.startswith("precomputed")

    def _node(self, atom: MemoryAtom) -> BaseNode:
        return metadata_dict_to_node(dict(atom.metadata), text=atom.content.inline)

    # ------------------------------------------------------------------ writes
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store embedded nodes in one transaction; returns their ids.

        A node whose id is current already is corrected for the whole valid period of its current
        version. Keyword arguments ``valid_from`` / ``valid_to`` say when the facts hold (default:
        from now, open-ended).
        """
        if not nodes:
            return []
        valid_from = add_kwargs.get("valid_from")
        valid_to = add_kwargs.get("valid_to")
        vectors: list[list[float]] = []
        for node in nodes:
            if node.embedding is None:
                raise InvalidInputError(f"node {node.node_id} has no embedding; embed it before adding")
            if vectors and len(node.embedding) != len(vectors[0]):
                raise InvalidInputError(f"node {node.node_id}: embeddings of dimensions {len(vectors[0])} and "
                                        f"{len(node.embedding)} in one add")
            vectors.append(node.embedding)
        mem = self._ensure(len(vectors[0]))
        items: list[dict[str, Any]] = []
        current: dict[str, MemoryAtom | None] = {}
        for node in nodes:
            metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
            if node.node_id not in current:
                current[node.node_id] = mem.get(node.node_id)
            prev = current[node.node_id]
            vf = valid_from if valid_from is not None or prev is None else prev.valid_from
            items.append({
                "content": node.get_content(metadata_mode=MetadataMode.NONE), "atom_id": node.node_id,
                "metadata": metadata, "tags": _tags(_filter_view(metadata)), "valid_from": vf, "valid_to": valid_to,
            })
        mem.add_many(items, vectors=np.asarray(vectors, dtype=np.float32))
        return [node.node_id for node in nodes]

    def _retract(self, atom_ids: Sequence[str]) -> None:
        mem = self._memory
        for atom_id in atom_ids:
            try:
                mem.retract(atom_id)
            except AtomNotFoundError:  # retracted meanwhile
                continue

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Retract every node of the document ``ref_doc_id`` (history keeps them for ``as_of`` queries)."""
        if self._memory is None:
            return
        # Each pass retracts what a tag-filtered scan finds; the loop ends when one finds nothing,
        # so a scan that missed a node (approximate index) is caught by the next.
        for _ in range(1000):
            found = [a.atom_id for a in self._scan(tags={"ref_doc_id": ref_doc_id})]
            if not found:
                return
            self._retract(found)

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Retract the nodes with these ids and/or matching ``filters``."""
        if self._memory is None:
            return
        self._retract([n.node_id for n in self.get_nodes(node_ids, filters)])

    def clear(self) -> None:
        """Retract every node (a retraction, not an erase: ``as_of`` queries still see the past)."""
        if self._memory is None:
            return
        for _ in range(1000):
            found = [a.atom_id for a in self._scan()]
            if not found:
                return
            self._retract(found)

    # ------------------------------------------------------------------ reads
    def _scan(self, *, tags: dict[str, Any] | None = None, valid_at: Any = None, as_of: Any = None) -> list[MemoryAtom]:
        """Every version visible at (valid_at, as_of) with these tags. The facade has no scan, so this is
        a dense search with k as large as the store."""
        mem = self._memory
        if mem is None:
            return []
        probe = np.zeros(mem.embedder.dim, np.float32)
        probe[0] = 1.0
        k = 1024
        while True:  # widen until the search returns fewer than it was asked for: then it returned all
            hits = mem.search(probe, k=k, mode="dense", tags=tags or None, valid_at=valid_at, as_of=as_of)
            if len(hits) < k:
                return [h.atom for h in hits]
            k *= 4

    def get_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        *,
        valid_at: Any = None,
        as_of: Any = None,
    ) -> list[BaseNode]:
        """Nodes by id and/or filters, as true at ``valid_at`` and known ``as_of`` (defaults: now, latest)."""
        if self._memory is None:
            return []
        if node_ids is not None:
            atoms = []
            for node_id in node_ids:
                try:
                    atom = self._memory.get(node_id, valid_at=valid_at, as_of=as_of)
                except (AtomNotFoundError, InvalidInputError):
                    atom = None
                if atom is not None:
                    atoms.append(atom)
        else:
            atoms = self._scan(tags=_pushdown(filters), valid_at=valid_at, as_of=as_of)
        return [self._node(a) for a in atoms if matches_filters(filters, _filter_view(a.metadata))]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Top-k nodes for a LlamaIndex query (modes DEFAULT, TEXT_SEARCH, HYBRID; metadata filters).

        Keyword arguments ``valid_at`` and ``as_of`` query the past (from a retriever:
        ``as_retriever(vector_store_kwargs={"as_of": t})``); other keyword arguments are ignored.
        """
        mode = query.mode or VectorStoreQueryMode.DEFAULT
        if mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.HYBRID):
            raise InvalidInputError(f"query mode {mode.value!r} is not supported (default, text_search, hybrid)")
        k = query.hybrid_top_k if mode == VectorStoreQueryMode.HYBRID and query.hybrid_top_k else query.similarity_top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError("similarity_top_k must be a positive int")
        if mode != VectorStoreQueryMode.TEXT_SEARCH and query.query_embedding is None:
            raise InvalidInputError(f"a {mode.value} query needs query_embedding")
        if mode != VectorStoreQueryMode.DEFAULT and not (query.query_str and query.query_str.strip()):
            raise InvalidInputError(f"a {mode.value} query needs query_str")
        if self._memory is None:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if query.query_embedding is not None:
            self._ensure(len(query.query_embedding))
        when = {"valid_at": kwargs.get("valid_at"), "as_of": kwargs.get("as_of")}
        tags = _pushdown(query.filters)
        # An empty list means no restriction: VectorStoreIndex.as_retriever passes node_ids=[] for a store
        # that keeps the text (its index struct then lists no nodes), as other text-storing stores read it.
        doc_ids = set(query.doc_ids) if query.doc_ids else None
        node_ids = set(query.node_ids) if query.node_ids else None
        if doc_ids is not None and len(doc_ids) == 1 and "ref_doc_id" not in tags:
            tags["ref_doc_id"] = next(iter(doc_ids))

        def keep(atom: MemoryAtom) -> bool:
            view = _filter_view(atom.metadata)
            if node_ids is not None and atom.atom_id not in node_ids:
                return False
            if doc_ids is not None and view.get("ref_doc_id") not in doc_ids:
                return False
            return matches_filters(query.filters, view)

        post = query.filters is not None or doc_ids is not None or node_ids is not None
        run = self._runner(query, mode, tags or None, when)
        fetch = max(4 * k, 64) if post else k
        while True:  # fetch deeper until k candidates pass the Python-side filters, or all were seen
            scored = run(fetch)
            chosen = [(a, s) for a, s in scored if keep(a)][:k]
            if len(chosen) >= k or len(scored) < fetch:
                break
            fetch *= 4
        return VectorStoreQueryResult(
            nodes=[self._node(a) for a, _ in chosen],
            similarities=[float(s) for _, s in chosen],
            ids=[a.atom_id for a, _ in chosen],
        )

    def _runner(
        self, query: VectorStoreQuery, mode: VectorStoreQueryMode, tags: dict[str, Any] | None, when: dict[str, Any]
    ) -> Callable[[int], list[tuple[MemoryAtom, float]]]:
        """A function from a candidate count to (atom, score) pairs, best first, for this query."""
        mem = self._memory

        def pairs(hits: list[Hit]) -> list[tuple[MemoryAtom, float]]:
            return [(h.atom, h.score) for h in hits]

        if mode == VectorStoreQueryMode.DEFAULT:
            vec = np.asarray(query.query_embedding, np.float32)
            return lambda n: pairs(mem.search(vec, n, mode="dense", tags=tags, **when))
        if mode == VectorStoreQueryMode.TEXT_SEARCH:
            text = query.query_str
            return lambda n: pairs(mem.search(text, n, mode="keyword", tags=tags, **when))
        alpha = 0.5 if query.alpha is None else query.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
            raise InvalidInputError("alpha (the dense weight) must be in [0, 1]")
        if self._embeds_text():
            # The store's model embeds the query text itself: aether's own weighted hybrid search.
            text = query.query_str
            return lambda n: pairs(mem.search(text, n, mode="hybrid", fusion="weighted", dense_weight=alpha,
                                              tags=tags, **when))
        return lambda n: self._hybrid(query, n, float(alpha), tags, when)

    def _hybrid(
        self, query: VectorStoreQuery, k: int, alpha: float, tags: dict[str, Any] | None, when: dict[str, Any]
    ) -> list[tuple[MemoryAtom, float]]:
        """Weighted hybrid for a store of precomputed vectors (aether cannot embed the query text).

        The same fusion as aether's ``fusion="weighted"``: ``alpha * minmax(cosine) + (1 - alpha) *
        minmax(bm25)`` over the union of both halves' top candidates. A candidate missing from a half
        that returned fewer than it was asked for scores 0 there (BM25: no query term) or cannot exist
        (dense: every selected node was returned); missing from a full half, it gets that half's lowest
        score, an upper bound of its own.
        """
        mem = self._memory
        depth = max(k, _HYBRID_DEPTH)
        vec = np.asarray(query.query_embedding, np.float32)
        dense = mem.search(vec, depth, mode="dense", tags=tags, **when)
        kw = mem.search(query.query_str, depth, mode="keyword", tags=tags, **when)
        atoms: dict[str, MemoryAtom] = {}
        for h in [*dense, *kw]:
            atoms.setdefault(h.atom_id, h.atom)
        if not atoms:
            return []
        ids = list(atoms)
        d_of = {h.atom_id: h.score for h in dense}
        k_of = {h.atom_id: h.score for h in kw}
        d_floor = min(d_of.values()) if dense else 0.0
        k_floor = min(k_of.values()) if len(kw) >= depth else 0.0
        d = np.array([d_of.get(i, d_floor) for i in ids], np.float64)
        b = np.array([k_of.get(i, k_floor) for i in ids], np.float64)
        fused = alpha * _minmax(d) + (1.0 - alpha) * _minmax(b)
        order = np.argsort(-fused, kind="stable")[:k]
        return [(atoms[ids[i]], float(fused[i])) for i in order]
