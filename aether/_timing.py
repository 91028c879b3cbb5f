"""Where a search spends its time: an opt-in record of named phases (a floor module: imports nothing).

A caller that wants the split (the server's metrics) opens :func:`record` around a search; the
engine and the facade mark their phases with :func:`phase`. Without an open record a phase costs
one context-variable read, so searches nobody times pay nothing measurable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[dict[str, float] | None] = ContextVar("aether_timings", default=None)


@contextmanager
def record() -> Iterator[dict[str, float]]:
    """Collect the seconds each phase of the searches run inside takes, by phase name."""
    out: dict[str, float] = {}
    token = _current.set(out)
    try:
        yield out
    finally:
        _current.reset(token)


def current() -> dict[str, float] | None:
    """The open record, if any."""
    return _current.get()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the time spent inside to phase ``name`` of the open record (nothing when none is open)."""
    out = _current.get()
    if out is None:
        yield
        return
    t = time.perf_counter()
    try:
        yield
    finally:
        out[name] = out.get(name, 0.0) + time.perf_counter() - t
