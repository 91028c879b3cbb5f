"""A LangGraph ``BaseStore`` over an aether store, with as-of replay (``pip install 'aether[langgraph]'``).

:class:`AetherStore` implements ``batch`` / ``abatch`` over ``GetOp``, ``PutOp`` (``value=None``
deletes), ``SearchOp`` and ``ListNamespacesOp``, so every ``BaseStore`` method (``get``, ``put``,
``search``, ``list_namespaces``, ``delete`` and their async twins) works. Beyond LangGraph,
:meth:`AetherStore.as_of` gives a read-only view of the store as it was at a past transaction time:
what the agent knew then.

How items map onto aether (only the public facade is used):

* an item is one atom with a deterministic id (a hash of namespace and key). Its content is the
  value as JSON (readable with ``aether get``), its tags name its namespace (``langgraph.p1`` =
  ``"a"``, ``langgraph.p2`` = ``"a.b"``... LangGraph forbids periods in labels, so the joined path is
  unambiguous), so a namespace prefix is one tag filter. A put is a new version of that atom and a
  delete is ``Memory.delete``: history keeps every value, which is what ``as_of`` reads.
* with an ``IndexConfig``, each text the config selects (``fields``, or the put's ``index``) is one more
  atom carrying its embedding; a query search ranks items by their best text (max pooling), as
  LangGraph's own ``InMemoryStore`` does. Embeddings come from ``index["embed"]``; without it the
  aether store's own model embeds texts and queries.
* ``created_at`` survives updates; ``updated_at`` is the transaction time of the put, so
  ``store.as_of(item.updated_at)`` replays the store right after that write.
* TTL is valid time: an item with a ``ttl`` is valid until ``last access + ttl``; reads with
  ``refresh_ttl`` push that end forward (one transaction per batch); an expired item is no longer
  valid, so reads and listings omit it at once. Nothing is swept: its versions stay in history
  (``Memory.compact(retain=...)`` drops old versions).

Search without a query returns items most recently updated first (ties by namespace, then key), like
LangGraph's Postgres store; filters support ``$eq $ne $gt $gte $lt $lte`` and nested equality with the
semantics of ``InMemoryStore``.

Cost: ``get`` is a key lookup; a query search reads texts best first and stops once it has the page
(plus ties); a search without a query and ``list_namespaces`` read every item under the namespace
prefix, so they grow with it (about 17 ms for 300 items, 220 ms for 3,000, on a 2-core machine).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

import aether

from ..api import Memory
from ..errors import (
    ConfigError,
    InvalidInputError,
    MissingDependencyError,
    ReadOnlyError,
    StoreNotFoundError,
)
from ..models import MemoryAtom

try:
    from langchain_core.embeddings import Embeddings
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        IndexConfig,
        InvalidNamespaceError,
        Item,
        ListNamespacesOp,
        MatchCondition,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        TTLConfig,
        ensure_embeddings,
        get_text_at_path,
        tokenize_path,
        validate_op_namespace,
    )
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("AetherStore needs langgraph: pip install 'aether[langgraph]'") from _exc

__all__ = ["AetherStore"]

_KIND = "langgraph"  # tag: "item" or "text"
_ITEM = "langgraph.item"  # tag of a text atom: its item's atom id
_GEN = "langgraph.gen"  # tag of a text atom: the put that wrote it
_META = "langgraph"  # metadata key of an item atom
_TIE = 1e-6  # similarity scores closer than this are ties


def _utcnow() -> datetime:
    """The store's notion of now for valid time (TTL); tests replace it to step through expiry."""
    return datetime.now(UTC)


def _prefix_tag(depth: int) -> str:
    return f"langgraph.p{depth}"


def _ns_tags(namespace: tuple[str, ...]) -> dict[str, str]:
    return {_prefix_tag(i): ".".join(namespace[:i]) for i in range(1, len(namespace) + 1)}


def _item_id(namespace: tuple[str, ...], key: str) -> str:
    digest = hashlib.blake2b(json.dumps([list(namespace), key]).encode(), digest_size=16).hexdigest()
    return f"langgraph:{digest}"


def _text_id(item_id: str, i: int) -> str:
    return f"{item_id}:t{i}"


@dataclass
class _Record:
    """An item as read from its atom."""

    atom: MemoryAtom
    namespace: tuple[str, ...]
    key: str
    created_at: datetime
    updated_at: datetime
    texts: int
    gen: str
    ttl: float | None
    value: dict[str, Any] = field(default_factory=dict)

    def item(self) -> Item:
        return Item(value=self.value, key=self.key, namespace=self.namespace, created_at=self.created_at,
                    updated_at=self.updated_at)

    def search_item(self, score: float | None) -> SearchItem:
        return SearchItem(namespace=self.namespace, key=self.key, value=self.value, created_at=self.created_at,
                          updated_at=self.updated_at, score=score)

    def order(self) -> tuple[float, tuple[str, ...], str]:
        return (-self.updated_at.timestamp(), self.namespace, self.key)


def _record(atom: MemoryAtom) -> _Record | None:
    meta = atom.metadata.get(_META)
    if not isinstance(meta, dict) or atom.tags.get(_KIND) != "item":
        return None
    tx = atom.tx_from
    assert tx is not None  # a stored version always has its transaction time
    created = meta.get("created_at")
    updated = meta.get("updated_at")
    return _Record(
        atom=atom,
        namespace=tuple(meta["namespace"]),
        key=meta["key"],
        created_at=datetime.fromisoformat(created) if created else tx,
        updated_at=datetime.fromisoformat(updated) if updated else tx,
        texts=int(meta.get("texts", 0)),
        gen=str(meta.get("gen", "")),
        ttl=meta.get("ttl"),
        value=json.loads(atom.content.inline),
    )


def _value_json(value: dict[str, Any]) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # not JSON, NaN or infinity, a cycle
        raise InvalidInputError(f"a stored value must be JSON: {exc}") from None


def _tie_sorted(scored: list[tuple[float, _Record]]) -> list[tuple[float, _Record]]:
    """Best score first; ties (within ``_TIE``) by recency, then namespace and key.

    Equal texts give equal vectors, but their float32 scores can differ in the last bits when the
    planner computes them on different paths (a sealed partition, the write tail), so exact
    equality would break such ties at random.
    """
    by_score = sorted(scored, key=lambda sr: -sr[0])
    group = 0
    groups: list[int] = []
    head = None
    for score, _ in by_score:
        if head is None or head - score > _TIE:
            head = score
            group += 1
        groups.append(group)
    order = sorted(range(len(by_score)), key=lambda i: (groups[i], by_score[i][1].order()))
    return [by_score[i] for i in order]


# ---------------------------------------------------------------------------- filters (InMemoryStore's semantics)


def _compare(value: Any, want: Any) -> bool:
    if isinstance(want, dict):
        if any(k.startswith("$") for k in want):
            return all(_operator(value, op, arg) for op, arg in want.items())
        if not isinstance(value, dict):
            return False
        return all(_compare(value.get(k), v) for k, v in want.items())
    if isinstance(want, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(want)
            and all(_compare(v, w) for v, w in zip(value, want, strict=True))
        )
    return bool(value == want)


def _operator(value: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(value == arg)
    if op == "$ne":
        return bool(value != arg)
    if op not in ("$gt", "$gte", "$lt", "$lte"):
        raise InvalidInputError(f"unsupported filter operator {op!r}; use $eq $ne $gt $gte $lt $lte")
    try:
        a, b = float(value), float(arg)
    except (TypeError, ValueError):
        return False  # a missing or non-numeric field matches no range (as in SQL), instead of raising
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]


def _matches(value: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    return not flt or all(_compare(value.get(k), v) for k, v in flt.items())


def _namespace_matches(cond: MatchCondition, ns: tuple[str, ...]) -> bool:
    path = tuple(cond.path)
    if len(ns) < len(path):
        return False
    pairs = zip(ns, path, strict=False) if cond.match_type == "prefix" else zip(reversed(ns), reversed(path),
                                                                                  strict=False)
    if cond.match_type not in ("prefix", "suffix"):
        raise InvalidInputError(f"unsupported match type {cond.match_type!r}")
    return all(p == "*" or n == p for n, p in pairs)


# ---------------------------------------------------------------------------- the store


@dataclass
class _Embedded:
    """Vectors computed before a batch runs (so that ``abatch`` can await an async embedder)."""

    queries: dict[str, list[float]] = field(default_factory=dict)
    texts: dict[str, list[float]] = field(default_factory=dict)


class AetherStore(BaseStore):
    """A LangGraph store kept in an aether store: durable, versioned, and replayable as of any past write.

    Parameters
    ----------
    path
        Store directory (created if new); ``None`` for an in-memory store. Ignored when ``memory`` is given.
    index
        A LangGraph ``IndexConfig`` enabling ``query`` search: ``embed`` (a LangChain ``Embeddings``, an
        embedding function or a provider string), ``dims`` and ``fields`` (default ``["$"]``, the whole
        value). Without ``embed`` the aether store's own model embeds (``dims``, if given, must match it).
    memory
        An open :class:`aether.Memory` to use instead of opening ``path`` (it is not closed by :meth:`close`).
    ttl
        A LangGraph ``TTLConfig``: ``default_ttl`` (minutes) for puts that give none, and ``refresh_on_read``
        (default true) for reads that do not say.

    Raises
    ------
    ConfigError
        If ``index`` is inconsistent with the store (a dimension mismatch, ``embed`` without ``dims`` for a
        new store).

    Examples
    --------
    >>> from aether.integrations.langgraph import AetherStore
    >>> store = AetherStore()                       # in memory; AetherStore("./agent-store") on disk
    >>> store.put(("users", "alice"), "prefs", {"theme": "dark"})
    >>> store.get(("users", "alice"), "prefs").value
    {'theme': 'dark'}
    """

    supports_ttl: bool = True

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        index: IndexConfig | None = None,
        memory: Memory | None = None,
        ttl: TTLConfig | None = None,
    ) -> None:
        self.index_config: IndexConfig | None = dict(index) if index else None  # type: ignore[assignment]
        self.ttl_config = ttl
        embed = self.index_config.get("embed") if self.index_config else None
        self.embeddings: Embeddings | None = ensure_embeddings(embed) if embed is not None else None
        dims = self.index_config.get("dims") if self.index_config else None
        self._owned = memory is None
        self._memory = memory if memory is not None else self._open(path, dims)
        if dims is not None and self._memory.embedder.dim != dims:
            if self._owned:
                self._memory.close()
            raise ConfigError(f"index dims {dims} does not match the store's dimension {self._memory.embedder.dim}")
        self._fields: list[tuple[str, Any]] = [
            (p, tokenize_path(p) if p != "$" else p)
            for p in ((self.index_config.get("fields") if self.index_config else None) or ["$"])
        ]
        unit = [0.0] * self._memory.embedder.dim
        unit[0] = 1.0
        self._unit = unit  # the vector of every item atom: items are found by tags, never by similarity
        self._as_of: datetime | None = None
        self._lock = threading.Lock()

    def _open(self, path: str | os.PathLike[str] | None, dims: int | None) -> Memory:
        new_embedder: Any = None
        if self.embeddings is not None:
            if dims is None:
                raise ConfigError("an index with 'embed' needs 'dims' (the dimension of its vectors)")
            new_embedder = aether.PrecomputedEmbedder(dims, "langgraph")
        if path is None:
            return aether.open(embedder=new_embedder)
        try:
            return aether.open(path, create=False)
        except StoreNotFoundError:
            return aether.open(path, embedder=new_embedder)

    # ------------------------------------------------------------------ aether extras
    @property
    def memory(self) -> Memory:
        """The underlying aether store (shared with the stores :meth:`as_of` returns)."""
        return self._memory

    @property
    def last_commit(self) -> datetime | None:
        """Transaction time of the latest write (the time an :meth:`as_of` store is pinned at, for one)."""
        return self._as_of if self._as_of is not None else self._memory.last_commit

    def as_of(self, tx_time: datetime | str) -> AetherStore:
        """A read-only store showing what this one held at transaction time ``tx_time``.

        ``tx_time`` is an aware datetime or ISO-8601 string, e.g. an item's ``updated_at``: the view then
        shows the store right after that put. Items whose TTL had expired by then are omitted. Writes raise
        :class:`aether.ReadOnlyError`.
        """
        if isinstance(tx_time, str):
            try:
                tx_time = datetime.fromisoformat(tx_time.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidInputError(f"as_of: {tx_time!r} is not an ISO-8601 time") from None
        if tx_time.tzinfo is None:
            raise aether.NaiveDatetimeError("as_of needs a timezone-aware time")
        view = AetherStore.__new__(AetherStore)
        view.__dict__.update(self.__dict__)
        view._owned = False
        view._as_of = tx_time
        view._lock = threading.Lock()
        return view

    def close(self) -> None:
        """Close the aether store if this object opened it."""
        if self._owned:
            self._memory.close()

    def __enter__(self) -> AetherStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ BaseStore
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order; reads see the state before the batch, and the last put per key wins."""
        ops = self._checked(ops)
        emb = _Embedded()
        if self.embeddings is not None:
            queries, texts = self._wanted(ops)
            if queries:
                emb.queries = {q: self.embeddings.embed_query(q) for q in queries}
            if texts:
                emb.texts = dict(zip(texts, self.embeddings.embed_documents(texts), strict=True))
        return self._run(ops, emb)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`batch` for async code: embeddings are awaited, store I/O runs in a worker thread."""
        ops = self._checked(ops)
        emb = _Embedded()
        if self.embeddings is not None:
            queries, texts = self._wanted(ops)
            if queries:
                vecs = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in queries))
                emb.queries = dict(zip(queries, vecs, strict=True))
            if texts:
                emb.texts = dict(zip(texts, await self.embeddings.aembed_documents(texts), strict=True))
        return await asyncio.to_thread(self._run, ops, emb)

    # ------------------------------------------------------------------ planning
    def _checked(self, ops: Iterable[Op]) -> list[Op]:
        out = list(ops)
        for op in out:
            if not isinstance(op, GetOp | PutOp | SearchOp | ListNamespacesOp):
                raise InvalidInputError(f"unknown store operation {type(op).__name__}")
            validate_op_namespace(op)
            if isinstance(op, PutOp):
                if not op.namespace:
                    raise InvalidNamespaceError("Namespace cannot be empty.")
                if self._as_of is not None:
                    raise ReadOnlyError("a store from as_of() is read-only")
                if op.value is not None and not isinstance(op.value, Mapping):
                    raise InvalidInputError(f"a put value must be a mapping or None, got {type(op.value).__name__}")
            if isinstance(op, SearchOp | ListNamespacesOp) and (op.limit < 0 or op.offset < 0):
                raise InvalidInputError("limit and offset must be >= 0")
        return out

    def _texts_of(self, op: PutOp) -> list[str]:
        """The texts an indexed put embeds (the IndexConfig's fields, or the put's own ``index`` paths)."""
        if self.index_config is None or op.value is None or op.index is False:
            return []
        paths = self._fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
        value = dict(op.value)
        out: list[str] = []
        for _, tokens in paths:
            out.extend(get_text_at_path(value, tokens))
        return out

    def _wanted(self, ops: Sequence[Op]) -> tuple[list[str], list[str]]:
        queries = sorted({op.query for op in ops if isinstance(op, SearchOp) and op.query})
        texts: dict[str, None] = {}
        for op in self._last_puts(ops).values():
            texts.update(dict.fromkeys(self._texts_of(op)))
        return queries, list(texts)

    @staticmethod
    def _last_puts(ops: Sequence[Op]) -> dict[tuple[tuple[str, ...], str], PutOp]:
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, PutOp):
                puts[(tuple(op.namespace), str(op.key))] = op
        return puts

    # ------------------------------------------------------------------ execution
    def _run(self, ops: list[Op], emb: _Embedded) -> list[Result]:
        with self._lock:
            return self._run_locked(ops, emb)

    def _run_locked(self, ops: list[Op], emb: _Embedded) -> list[Result]:
        now = _utcnow()
        at = self._as_of
        view = self._memory.view(valid_at=at or now, as_of=at) if at is not None else self._memory.view(valid_at=now)
        results: list[Result] = []
        touched: dict[str, _Record] = {}  # items read with refresh_ttl, by atom id
        for op in ops:
            if isinstance(op, GetOp):
                rec = self._get(view, tuple(op.namespace), str(op.key))
                if rec is not None and op.refresh_ttl:
                    touched[rec.atom.atom_id] = rec
                results.append(None if rec is None else rec.item())
            elif isinstance(op, SearchOp):
                found = self._search(view, op, emb)
                if op.refresh_ttl:
                    touched.update((rec.atom.atom_id, rec) for rec, _ in found)
                results.append([rec.search_item(score) for rec, score in found])
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(view, op))
            else:
                results.append(None)
        puts = self._last_puts(ops)
        if puts or (at is None and any(r.ttl for r in touched.values())):
            self._write(view, puts, touched, emb, now)
        return results

    def _scan(self, view: Memory, tags: dict[str, Any], query: Any = None) -> list[tuple[MemoryAtom, float]]:
        """Every atom with these tags, valid at the view's time: an exhaustive search.

        The plan says how many rows the filters select; a search for that many is an exact scan of
        them (the planner never approximates when k covers the selection), so nothing is missed.
        """
        q = np.asarray(self._unit if query is None else query, dtype=np.float32) if not isinstance(query, str) \
            else query
        n = view.explain(q, 1, tags=tags, mode="dense").selected_rows
        if n == 0:
            return []
        return [(h.atom, h.score) for h in view.search(q, n, tags=tags, mode="dense")]

    def _get(self, view: Memory, namespace: tuple[str, ...], key: str) -> _Record | None:
        return self._get_id(view, _item_id(namespace, key))

    @staticmethod
    def _get_id(view: Memory, item_id: str) -> _Record | None:
        atom = view.get(item_id)
        return None if atom is None else _record(atom)

    def _records(self, view: Memory, prefix: tuple[str, ...]) -> list[_Record]:
        tags: dict[str, Any] = {_KIND: "item"}
        if prefix:
            tags[_prefix_tag(len(prefix))] = ".".join(prefix)
        recs = [r for a, _ in self._scan(view, tags) if (r := _record(a)) is not None]
        recs.sort(key=_Record.order)
        return recs

    def _search(self, view: Memory, op: SearchOp, emb: _Embedded) -> list[tuple[_Record, float | None]]:
        prefix = tuple(op.namespace_prefix)
        if not (op.query and self.index_config):
            recs = [r for r in self._records(view, prefix) if _matches(r.value, op.filter)]
            return [(r, None) for r in recs[op.offset:op.offset + op.limit]]
        if op.limit == 0:
            return []
        query: Any = emb.queries[op.query] if self.embeddings is not None else op.query
        ranked = self._ranked(view, op, prefix, query)
        kept: list[tuple[_Record, float | None]] = [(r, s) for s, r in ranked[op.offset:op.offset + op.limit]]
        if len(kept) < op.limit:
            # Items with no embedded text (index=False, or no field present) come after the ranked ones,
            # as in LangGraph's InMemoryStore. (``ranked`` is then complete: every text was scanned.)
            scored = {r.atom.atom_id for _, r in ranked}
            unscored = [r for r in self._records(view, prefix)
                        if r.atom.atom_id not in scored and _matches(r.value, op.filter)]
            kept.extend((r, None) for r in unscored[: op.limit - len(kept)])
        return kept

    def _ranked(self, view: Memory, op: SearchOp, prefix: tuple[str, ...], query: Any) -> list[tuple[float, _Record]]:
        """Items ranked by their best text's similarity, best first: at least ``offset + limit`` of them
        (with every item tied with the last), or all when there are fewer.

        Texts are read best first, in pages that grow until enough items pass the filter, so a query
        touches the items it returns rather than the whole namespace.
        """
        tags: dict[str, Any] = {_KIND: "text"}
        if prefix:
            tags[_prefix_tag(len(prefix))] = ".".join(prefix)
        q = query if isinstance(query, str) else np.asarray(query, dtype=np.float32)
        n = view.explain(q, 1, tags=tags, mode="dense").selected_rows
        need = op.offset + op.limit
        items: dict[str, _Record | None] = {}
        k = min(n, max(64, 4 * need))
        while True:
            hits = view.search(q, k, tags=tags, mode="dense") if k else []
            got: list[tuple[float, _Record]] = []
            done: set[str] = set()
            bound: float | None = None
            enough = False
            for h in hits:  # best first, so an item's first accepted text is its best (max pooling)
                if bound is not None and h.score < bound - _TIE:
                    enough = True
                    break
                item_id = str(h.atom.tags.get(_ITEM))
                if item_id in done:
                    continue
                if item_id not in items:
                    items[item_id] = self._get_id(view, item_id)
                rec = items[item_id]
                if rec is not None and h.atom.tags.get(_GEN) != rec.gen:
                    continue  # a text of an older put of this key (it may outlive an expired item)
                done.add(item_id)
                if rec is None or not _matches(rec.value, op.filter):
                    continue
                got.append((h.score, rec))
                if len(got) == need:
                    bound = h.score  # keep reading the texts tied with the last one needed
            if enough or k >= n:
                return _tie_sorted(got)
            k = min(n, k * 4)

    def _list_namespaces(self, view: Memory, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conds = list(op.match_conditions or ())
        lead: tuple[str, ...] = ()
        for c in conds:  # narrow the scan by the longest wildcard-free head of a prefix condition
            if c.match_type == "prefix":
                head: list[str] = []
                for label in c.path:
                    if label == "*":
                        break
                    head.append(label)
                if len(head) > len(lead):
                    lead = tuple(head)
        spaces = {r.namespace for r in self._records(view, lead)}
        spaces = {ns for ns in spaces if all(_namespace_matches(c, ns) for c in conds)}
        if op.max_depth is not None:
            spaces = {ns[: op.max_depth] for ns in spaces}
        return sorted(spaces)[op.offset:op.offset + op.limit]

    def _write(
        self,
        view: Memory,
        puts: dict[tuple[tuple[str, ...], str], PutOp],
        touched: dict[str, _Record],
        emb: _Embedded,
        now: datetime,
    ) -> None:
        rows: list[dict[str, Any]] = []
        drop: list[str] = []
        for (namespace, key), op in puts.items():
            old = self._get(view, namespace, key)
            item_id = _item_id(namespace, key)
            if op.value is None:
                if old is not None:
                    drop.append(item_id)
                    drop.extend(_text_id(item_id, i) for i in range(old.texts))
                continue
            value = dict(op.value)
            texts = self._texts_of(op)
            gen = uuid.uuid4().hex
            meta: dict[str, Any] = {"namespace": list(namespace), "key": key, "texts": len(texts), "gen": gen}
            if old is not None:
                meta["created_at"] = old.created_at.isoformat()
            if op.ttl is not None:
                meta["ttl"] = op.ttl
            valid_from = old.atom.valid_from if old is not None else now
            tags = {_KIND: "item", **_ns_tags(namespace)}
            rows.append({
                "atom_id": item_id,
                "content": _value_json(value),
                "tags": tags,
                "metadata": {_META: meta},
                "valid_from": valid_from,
                "valid_to": None if op.ttl is None else now + timedelta(minutes=op.ttl),
                "vector": self._unit,
            })
            for i, text in enumerate(texts):
                row: dict[str, Any] = {
                    "atom_id": _text_id(item_id, i),
                    "content": text if text.strip() else json.dumps(text),
                    "tags": {_KIND: "text", _ITEM: item_id, _GEN: gen, **_ns_tags(namespace)},
                    "valid_from": valid_from,
                }
                if self.embeddings is not None:
                    row["vector"] = emb.texts[text]
                rows.append(row)
            if old is not None:
                drop.extend(_text_id(item_id, i) for i in range(len(texts), old.texts))
        written = {r["atom_id"] for r in rows} | set(drop)
        for rec in touched.values():
            if rec.ttl is None or rec.atom.atom_id in written:
                continue
            # refresh on read: the same value, valid for another ttl from now; updated_at stays the put's
            meta = {**rec.atom.metadata[_META], "created_at": rec.created_at.isoformat(),
                    "updated_at": rec.updated_at.isoformat()}
            rows.append({
                "atom_id": rec.atom.atom_id, "content": rec.atom.content.inline, "tags": rec.atom.tags,
                "metadata": {_META: meta}, "valid_from": rec.atom.valid_from,
                "valid_to": now + timedelta(minutes=rec.ttl), "vector": self._unit,
            })
        if rows:
            self._memory.add_many(rows)
        for atom_id in drop:
            self._memory.delete(atom_id)
