"""What every part of :class:`aether.Memory` builds on: the engine, the payload limit, the write and time checks."""

from __future__ import annotations

from .._time import TimeLike, to_us
from ..engine.store import Engine


class _MemoryBase:
    """The state the facade's parts share (set by ``Memory.__init__``), and the two checks a ``View`` overrides."""

    _engine: Engine
    _max_payload_bytes: int

    def _check_write(self) -> None:
        self._engine.check_writable()

    def _valid_at(self, valid_at: TimeLike | None) -> int:
        return self._engine.clock() if valid_at is None else to_us(valid_at, name="valid_at")
