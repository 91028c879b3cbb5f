"""Helpers of the facade: the UNSET marker, the add_many item keys, time and tag argument checks, atom ids."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from .._time import MIN_US, OPEN, TimeLike, to_us
from ..engine.store import Engine
from ..engine.validate import check_tags
from ..errors import InvalidInputError, InvalidIntervalError

if TYPE_CHECKING:
    from ..index.bucketed import BucketedIndex


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: Marks an argument that was not given (where ``None`` has a meaning of its own).
UNSET: Final = _Unset()

#: The keys an ``add_many`` item may have, in column order (``aether import`` rows too: ingest reads these).
ITEM_FIELDS = (
    "content", "tags", "metadata", "valid_from", "valid_to", "modality", "subject",
    "quality_score", "atom_id", "vector", "content_metadata",
)
ITEM_KEYS = frozenset(ITEM_FIELDS)


@contextlib.contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """No cyclic GC passes while a bulk write builds its (acyclic) per-row objects.

    Allocating 10k+ dicts and op objects triggers repeated collections that re-scan every
    object the process holds: ~30% of bulk-ingest time. Re-enabled afterwards (unless it was off).
    """
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _IdPool:
    """Fresh atom ids drawn a few thousand at a time."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: list[str] = []

    def next(self) -> str:
        if not self._ids:
            self._ids = _new_atom_ids(4096)
            self._ids.reverse()
        return self._ids.pop()


def _checked_tags(tags: Any, seen: set[tuple[str, type, Any]]) -> dict[str, Any]:
    """``check_tags``, remembering valid one-pair dicts (bulk loads repeat a few tag values)."""
    if type(tags) is dict and len(tags) == 1:
        ((k, v),) = tags.items()
        if type(v) in (str, int, bool):  # hashable, and equal keys mean the same check result
            key = (k, type(v), v)
            if key in seen:
                return {k: v}
            out = check_tags(tags)
            seen.add(key)
            return out
    return check_tags(tags)


def _new_atom_ids(k: int) -> list[str]:
    """``k`` fresh UUID4 strings (the format of :func:`aether.models.new_atom_id`) from one ``os.urandom``."""
    if k <= 0:
        return []
    raw = np.frombuffer(os.urandom(16 * k), np.uint8).reshape(k, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.tobytes().hex()
    return [
        f"{h[j:j + 8]}-{h[j + 8:j + 12]}-{h[j + 12:j + 16]}-{h[j + 16:j + 20]}-{h[j + 20:j + 32]}"
        for j in range(0, 32 * k, 32)
    ]


def _opt_time(value: TimeLike | None, name: str) -> int | None:
    return None if value is None else to_us(value, name=name)


def _valid_interval(valid_from: Any, valid_to: Any) -> tuple[int | None, int]:
    """``valid_from`` (``None``: the commit's time) and ``valid_to`` (``None``: open) in µs, checked in order."""
    vf = _opt_time(valid_from, "valid_from")
    vt = OPEN if valid_to is None else to_us(valid_to, name="valid_to")
    if vf is not None and vt <= vf:
        raise InvalidIntervalError("valid_to must be after valid_from")
    return vf, vt


def _during(valid_during: Any) -> tuple[int, int] | None:
    if valid_during is None:
        return None
    try:
        a, b = valid_during
    except (TypeError, ValueError):
        raise InvalidInputError("valid_during must be a pair (start, end)") from None
    lo = MIN_US if a is None else to_us(a, name="valid_during[0]")
    hi = OPEN if b is None else to_us(b, name="valid_during[1]")
    if hi <= lo:
        raise InvalidIntervalError("valid_during end must be after its start")
    return lo, hi


def _with_where(tags: Any, where: Any) -> Any:
    """``tags`` plus the field tags a ``where`` filter means (see :func:`aether.payloads.where_tags`)."""
    if where is None:
        return tags
    from ..payloads import where_tags

    extra = where_tags(where)
    if tags is None:
        return extra
    if not isinstance(tags, Mapping):
        return tags  # the tag check names the error
    return {**tags, **extra}


def _vector_index(engine: Engine) -> BucketedIndex | None:
    """The store's bucketed vector index (``None`` for an engine opened without one)."""
    from ..index.bucketed import BucketedIndex

    return engine.derived.find(BucketedIndex)


def _seals(engine: Engine) -> tuple[int, float]:
    """Seal and merge builds of the bucketed vector index since open, and their seconds."""
    index = _vector_index(engine)
    return (0, 0.0) if index is None else (index.seals, index.seal_seconds)


def _tail_rows(engine: Engine) -> int:
    """Rows of the snapshot the bucketed vector index has not sealed into a partition yet."""
    index = _vector_index(engine)
    n = engine.snapshot.n
    return n if index is None else max(0, n - index.state.covered)
