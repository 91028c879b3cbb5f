"""A LangChain ``VectorStore`` over an aether store (``pip install 'aether[langchain]'``).

>>> from langchain_core.embeddings import DeterministicFakeEmbedding
>>> from aether.integrations.langchain import AetherVectorStore
>>> store = AetherVectorStore(embedding=DeterministicFakeEmbedding(size=16))
>>> ids = store.add_texts(["Alice lives in Paris"], metadatas=[{"user": "alice"}], ids=["alice-home"])
>>> store.similarity_search("where does alice live?", k=1, filter={"user": "alice"})[0].id
'alice-home'

What LangChain sees is an ordinary vector store; what aether adds is time. A document written
again under an existing id is a *correction*: searches show only the new text, while
``as_of=`` (a transaction time, e.g. ``store.last_commit`` before the correction) still finds
what the store believed then. ``delete`` retracts: the fact stops being true now, its history
stays. ``valid_at=`` asks what was true in the world at another time.

Only the public facade (``aether.open``, ``Memory``) is used.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import api as _api
from ..embed import as_unit_vectors, embed_queries
from ..errors import (
    AtomNotFoundError,
    ConfigError,
    InvalidInputError,
    MissingDependencyError,
    ModelMismatchError,
)
from ..models import Hit, MemoryAtom

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as exc:  # the optional extra is not installed
    raise MissingDependencyError(
        "the LangChain integration needs langchain-core: pip install 'aether[langchain]'"
    ) from exc

__all__ = ["AetherEmbeddings", "AetherVectorStore", "LangChainEmbedder"]

#: Search keyword arguments passed through to :meth:`aether.Memory.search`.
_SEARCH_KWARGS = frozenset({
    "valid_at", "as_of", "valid_during", "tags", "mode", "fusion", "rrf_k", "dense_weight",
    "ranking", "relevance", "recency", "importance", "half_life", "recency_axis", "diversity",
})
#: Longest tag key aether accepts (``aether.engine.validate``); longer metadata keys are not mirrored as tags.
_MAX_TAG_KEY = 256
#: Candidate vectors kept for MMR re-ranking, keyed by (atom id, version id).
_MMR_CACHE = 4096


class LangChainEmbedder:
    """A LangChain ``Embeddings`` as an aether :class:`~aether.Embedder`.

    The dimension is measured once by embedding a probe text (unless ``dim`` is given). The
    identity names the class and its ``model``/``model_name`` attribute, so that a store written
    with one model refuses another (``ModelMismatchError``) when it is reopened.

    Parameters
    ----------
    embeddings
        Any LangChain embedding model.
    dim
        Its output dimension, if known (saves the probe call).
    """

    def __init__(self, embeddings: Embeddings, *, dim: int | None = None) -> None:
        if not isinstance(embeddings, Embeddings):
            raise InvalidInputError(f"embedding must be a LangChain Embeddings, got {type(embeddings).__name__}")
        self.embeddings = embeddings
        if dim is None:
            dim = len(embeddings.embed_query("aether dimension probe"))
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"embedding dimension must be a positive int, got {dim!r}")
        self._dim = dim
        cls = type(embeddings)
        name = f"{cls.__module__}.{cls.__qualname__}"
        model = getattr(embeddings, "model", None) or getattr(embeddings, "model_name", None)
        if isinstance(model, str) and model:
            name += f"/{model}"
        self._identity = f"langchain:{name}:dim={dim}"

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), np.float32)
        return as_unit_vectors(self.embeddings.embed_documents(list(texts)), self._dim)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        # LangChain distinguishes query from document embeddings (instruction-tuned models do).
        if not texts:
            return np.zeros((0, self._dim), np.float32)
        return as_unit_vectors([self.embeddings.embed_query(t) for t in texts], self._dim)


class AetherEmbeddings(Embeddings):
    """An aether :class:`~aether.Embedder` seen as a LangChain ``Embeddings`` (the store's own model)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [] if not texts else np.asarray(self.embedder.embed(texts), np.float32).tolist()

    def embed_query(self, text: str) -> list[float]:
        return np.asarray(embed_queries(self.embedder, [text]), np.float32)[0].tolist()


def _tags_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar entries of a document's metadata, mirrored as aether tags so ``filter=`` can use them."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or len(key) > _MAX_TAG_KEY:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            continue
        if isinstance(value, str | bool | int | float):
            out[key] = value
    return out


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class AetherVectorStore(VectorStore):
    """A LangChain vector store backed by an aether bitemporal memory.

    Parameters
    ----------
    path
        Store directory; ``None`` gives an in-memory store. Ignored when ``memory`` is given.
    embedding
        A LangChain ``Embeddings``; it becomes the store's model (an aether embedder of its
        dimension). Without it, the store's own model (all-MiniLM-L6-v2 for a new store).
    memory
        An open :class:`aether.Memory` to use instead of opening ``path`` (it is not closed by
        :meth:`close`). With ``embedding`` too, both must be the same model.
    aether_fields
        Add the version's times to each returned document's metadata under the ``"_aether"`` key
        (``valid_from``, ``valid_to``, ``tx_from``, ``tx_to``, ``version_id``). Off by default, so that
        metadata round-trips exactly.
    **open_kwargs
        Passed to :func:`aether.open` (``key=``, ``read_only=``, ``clock=``...).

    Notes
    -----
    Extra search keyword arguments (``similarity_search*``, ``max_marginal_relevance_search*``,
    ``as_retriever(search_kwargs=...)``): ``valid_at``, ``as_of``, ``valid_during``, ``tags``, and
    ``mode`` (``"dense"``, the default here, ``"keyword"`` or ``"hybrid"``) with ``fusion``,
    ``rrf_k``, ``dense_weight``, and aether's re-ranking (``ranking``, ``relevance``, ``recency``,
    ``importance``, ``half_life``, ``recency_axis``, ``diversity``); see :meth:`aether.Memory.search`.
    ``filter`` is a dict of ``key == value`` conditions on metadata: scalar metadata values are
    stored as aether tags, and ``filter`` becomes a tag filter.

    Scores from ``similarity_search_with_score`` are cosine similarities in dense mode (higher is
    better); relevance scores are the cosine clamped to ``[0, 1]``.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        embedding: Embeddings | None = None,
        memory: _api.Memory | None = None,
        aether_fields: bool = False,
        **open_kwargs: Any,
    ) -> None:
        self._embedding = embedding
        self._aether_fields = bool(aether_fields)
        self._mmr_cache: OrderedDict[tuple[str, int | None], np.ndarray] = OrderedDict()
        self._mmr_lock = threading.Lock()  # the async methods run the sync ones on executor threads
        if memory is not None:
            if open_kwargs:
                raise InvalidInputError(f"memory= is already open; unexpected options {sorted(open_kwargs)}")
            if embedding is not None:
                own = LangChainEmbedder(embedding, dim=memory.embedder.dim)
                if own.identity != memory.embedder.identity:
                    raise ModelMismatchError(
                        f"embedding is {own.identity} but the memory's model is {memory.embedder.identity}"
                    )
            self._memory = memory
            self._owns = False
        else:
            if embedding is not None:
                if "embedder" in open_kwargs or "model" in open_kwargs:
                    raise InvalidInputError("give embedding= or embedder=/model=, not both")
                open_kwargs["embedder"] = LangChainEmbedder(embedding)
            try:
                self._memory = _api.open(path, **open_kwargs)
            except ConfigError as exc:
                if embedding is None and "langchain:" in str(exc):
                    raise ConfigError(f"{exc}: this store was written through LangChain; pass embedding= "
                                      "(the same model)") from None
                raise
            self._owns = True

    # ------------------------------------------------------------------ plumbing
    @property
    def memory(self) -> _api.Memory:
        """The aether store behind this vector store."""
        return self._memory

    @property
    def embeddings(self) -> Embeddings:
        """The LangChain embedding model (the store's own model, wrapped, when none was given)."""
        if self._embedding is not None:
            return self._embedding
        inner = self._memory.embedder
        if isinstance(inner, LangChainEmbedder):
            return inner.embeddings
        return AetherEmbeddings(inner)

    @property
    def last_commit(self) -> Any:
        """Transaction time of the latest write: pass it later as ``as_of=`` to see the store as it was."""
        return self._memory.last_commit

    def close(self) -> None:
        """Close the store if this object opened it (idempotent)."""
        if self._owns:
            self._memory.close()

    def __enter__(self) -> AetherVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _doc(self, atom: MemoryAtom) -> Document:
        metadata = dict(atom.metadata)
        if self._aether_fields:
            metadata["_aether"] = {
                "valid_from": _iso(atom.valid_from),
                "valid_to": _iso(atom.valid_to),
                "tx_from": _iso(atom.tx_from),
                "tx_to": _iso(atom.tx_to),
                "version_id": atom.version_id,
            }
        return Document(page_content=atom.content.inline, metadata=metadata, id=atom.atom_id)

    # ------------------------------------------------------------------ writes
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        valid_from: Any = None,
        valid_to: Any = None,
        tags: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts in one transaction; returns their ids.

        An id that already names a current document writes a correction of it (for the whole valid
        period of the current version, unless ``valid_from`` is given): searches then show only the
        new version, and an ``as_of`` search before this call still shows the old one.

        Parameters
        ----------
        texts, metadatas, ids
            As in LangChain; ``None`` ids get fresh UUIDs.
        valid_from, valid_to
            When the facts hold in the world (default: from now, open-ended).
        tags
            Extra aether tags for every text (scalar metadata values are tags already).
        """
        if kwargs:
            raise InvalidInputError(f"add_texts: unexpected arguments {sorted(kwargs)}")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInputError(f"{len(texts)} texts but {len(metadatas)} metadatas")
        if ids is not None and len(ids) != len(texts):
            raise InvalidInputError(f"{len(texts)} texts but {len(ids)} ids")
        # add_documents passes the documents' ids, None where a document has none.
        given: list[str | None] = list(ids) if ids is not None else [None] * len(texts)
        out_ids = [str(uuid.uuid4()) if i is None else i for i in given]
        extra = dict(tags) if tags else {}
        items: list[dict[str, Any]] = []
        current: dict[str, MemoryAtom | None] = {}
        for i, (text, doc_id) in enumerate(zip(texts, out_ids, strict=True)):
            metadata = dict(metadatas[i]) if metadatas is not None and metadatas[i] is not None else {}
            if not isinstance(doc_id, str):
                raise InvalidInputError(f"document {i}: id must be a str, got {type(doc_id).__name__}")
            if doc_id not in current:
                current[doc_id] = self._memory.get(doc_id)
            vf = valid_from
            prev = current[doc_id]
            if vf is None and prev is not None:
                # Rewriting the current version's whole valid period makes this a correction, not a
                # change that starts now: the old text is no longer believed for any time.
                vf = prev.valid_from
            items.append({
                "content": text, "atom_id": doc_id, "metadata": metadata,
                "tags": {**_tags_from_metadata(metadata), **extra}, "valid_from": vf, "valid_to": valid_to,
            })
        if items:
            self._memory.add_many(items)
        return out_ids

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | None = None,
        memory: _api.Memory | None = None,
        **kwargs: Any,
    ) -> AetherVectorStore:
        """A new store (in memory unless ``path`` or ``memory`` is given) holding ``texts``.

        Keyword arguments other than the ones named go to the constructor (``aether_fields``,
        :func:`aether.open` options).
        """
        store = cls(path, embedding=embedding, memory=memory, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def delete(self, ids: list[str] | None = None, *, at: Any = None, **kwargs: Any) -> bool:
        """Retract the documents: they stop being true at ``at`` (default now); history keeps them.

        Unknown ids are ignored. ``ids=None`` retracts every document that is current now.
        """
        if kwargs:
            raise InvalidInputError(f"delete: unexpected arguments {sorted(kwargs)}")
        targets = self._all_current_ids() if ids is None else list(ids)
        for doc_id in targets:
            if not isinstance(doc_id, str) or not 0 < len(doc_id) <= 256:
                continue  # not a valid atom id, so no stored document has it
            try:
                # Also ends a fact only valid in the future (the engine closes it entirely).
                self._memory.retract(doc_id, at)
            except AtomNotFoundError:
                continue
        return True

    def _all_current_ids(self) -> list[str]:
        """Every document true now. The facade has no scan, so this is a search wide enough to return all of them."""
        probe = np.zeros(self._memory.embedder.dim, np.float32)
        probe[0] = 1.0
        k = 1024
        while True:  # widen until the search returns fewer than it was asked for: then it returned all
            hits = self._memory.search(probe, k=k, mode="dense")
            if len(hits) < k:
                return [h.atom_id for h in hits]
            k *= 4

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The current version of each id that exists, in the order given (missing ids are skipped)."""
        out: list[Document] = []
        for doc_id in ids:
            try:
                atom = self._memory.get(doc_id)
            except InvalidInputError:  # not a valid id, so not a stored one
                continue
            if atom is not None:
                out.append(self._doc(atom))
        return out

    # ------------------------------------------------------------------ search
    def _search_kwargs(self, filter: Mapping[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(kwargs) - _SEARCH_KWARGS
        if unknown:
            raise InvalidInputError(
                f"unexpected search arguments {sorted(unknown)}; aether takes {sorted(_SEARCH_KWARGS)}"
            )
        out = dict(kwargs)
        if filter:
            if not isinstance(filter, Mapping):
                raise InvalidInputError("filter must be a dict of metadata key == value conditions")
            tags = dict(out.get("tags") or {})
            for key, value in filter.items():
                if isinstance(value, Mapping | list | tuple | set):
                    raise InvalidInputError(f"filter {key!r}: only key == scalar value conditions are supported")
                if key in tags and tags[key] != value:
                    raise InvalidInputError(f"filter {key!r} contradicts tags[{key!r}]")
                tags[key] = value
            out["tags"] = tags
        out.setdefault("mode", "dense")  # cosine scores, which the relevance function assumes
        return out

    def _hits(self, query: str | np.ndarray, k: int, filter: Any, kwargs: dict[str, Any]) -> list[Hit]:
        return self._memory.search(query, k, **self._search_kwargs(filter, kwargs))

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents most similar to ``query`` with their scores (cosine in dense mode)."""
        return [(self._doc(h.atom), h.score) for h in self._hits(query, k, filter, kwargs)]

    def similarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents most similar to ``query``, best first (no score threshold)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents most similar to a query vector."""
        return [self._doc(h.atom) for h in self._hits(np.asarray(embedding, np.float32), k, filter, kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """:meth:`similarity_search_by_vector` with cosine scores."""
        hits = self._hits(np.asarray(embedding, np.float32), k, filter, kwargs)
        return [(self._doc(h.atom), h.score) for h in hits]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # aether scores are cosine similarities; LangChain's cosine relevance is 1 - cosine distance,
        # i.e. the similarity itself, clamped to the documented [0, 1].
        return lambda score: min(1.0, max(0.0, float(score)))

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        if kwargs.get("mode", "dense") != "dense":
            raise InvalidInputError("relevance scores are cosine similarities: they need mode='dense'")
        return super()._similarity_search_with_relevance_scores(query, k, **kwargs)

    def _vectors_of(self, atoms: list[MemoryAtom]) -> np.ndarray:
        """Document vectors for MMR: Hit carries no vector, so contents are embedded again (cached)."""
        keys = [(a.atom_id, a.version_id) for a in atoms]
        with self._mmr_lock:
            known = {key: self._mmr_cache[key] for key in keys if key in self._mmr_cache}
        missing = [i for i, key in enumerate(keys) if key not in known]
        if missing:  # embedded outside the lock: a slow model must not serialise other searches
            vecs = self._memory.embedder.embed([atoms[i].content.inline for i in missing])
            for i, v in zip(missing, np.asarray(vecs, np.float32), strict=True):
                known[keys[i]] = v
        with self._mmr_lock:
            for key in keys:
                self._mmr_cache[key] = known[key]
                self._mmr_cache.move_to_end(key)
            while len(self._mmr_cache) > _MMR_CACHE:
                self._mmr_cache.popitem(last=False)
        return np.stack([known[key] for key in keys])

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents chosen among the ``fetch_k`` nearest for relevance and diversity (MMR).

        ``lambda_mult`` is 1 for pure relevance, 0 for maximal diversity.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError("k must be a positive int")
        if not 0.0 <= lambda_mult <= 1.0:
            raise InvalidInputError("lambda_mult must be in [0, 1]")
        q = as_unit_vectors(embedding, self._memory.embedder.dim)[0]
        hits = self._hits(q, max(k, fetch_k), filter, kwargs)
        if not hits:
            return []
        atoms = [h.atom for h in hits]
        order = _mmr(q, self._vectors_of(atoms), k, lambda_mult)
        return [self._doc(atoms[i]) for i in order]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search_by_vector` for a text query."""
        q = embed_queries(self._memory.embedder, [query])[0]
        return self.max_marginal_relevance_search_by_vector(
            np.asarray(q, np.float32).tolist(), k, fetch_k, lambda_mult, filter, **kwargs
        )


def _mmr(query: np.ndarray, vectors: np.ndarray, k: int, lambda_mult: float) -> list[int]:
    """Greedy maximal marginal relevance over unit vectors: indices into ``vectors``, in pick order."""
    rel = vectors @ query
    chosen = [int(np.argmax(rel))]
    redundancy = vectors @ vectors[chosen[0]]  # max similarity of each candidate to the chosen set
    while len(chosen) < min(k, len(vectors)):
        score = lambda_mult * rel - (1.0 - lambda_mult) * redundancy
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    return chosen
