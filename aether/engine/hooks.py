"""The store-hooks protocol: where a layer above the engine (security) joins its open, commits and checkpoints.

The engine calls these at fixed points and knows nothing of what they do; ``aether.open`` passes
the security layer's implementation (:class:`aether.security.engine_hooks.SecurityHooks`: key
check, keyring, erasures, scrubbed segments, the hash-chained log). :class:`NoHooks`, the default,
does nothing beyond writing rows as they are. The same pattern as :class:`aether.storage.codec.Codec`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from ..errors import KeyRequiredError
from ..storage.rows import seal_rows

if TYPE_CHECKING:
    from .store import Engine


class StoreHooks(Protocol):
    """Calls the engine makes into the layer that guards its data; each runs under the write lock or during open."""

    def on_create(self, engine: Engine, body: dict[str, Any]) -> None:
        """A new store's manifest ``body`` is about to be saved (describe the encryption in it)."""

    def on_load(self, engine: Engine, body: dict[str, Any]) -> None:
        """The manifest was read; nothing else yet (check the key here; may replace ``engine.codec``)."""

    def after_replay(self, engine: Engine) -> None:
        """Segments and WAL are loaded and replayed."""

    def apply_extra(self, engine: Engine, header: dict[str, Any]) -> None:
        """One committed record was applied (record kinds beyond inserts and closings)."""

    def after_append(self, engine: Engine, header: dict[str, Any]) -> None:
        """The WAL record of ``header`` is durable."""

    def segment_table(self, engine: Engine, start: int, end: int, *, only: np.ndarray | None = None) -> pa.Table:
        """Rows ``[start, end)`` (or the positions ``only`` among them) as a sealed segment table."""
        ...

    def before_manifest(self, engine: Engine, body: dict[str, Any]) -> None:
        """A checkpoint or compaction is about to save the manifest ``body``."""

    def after_compaction(self, engine: Engine, *, table_replaced: bool) -> None:
        """A compaction purged the erased rows (``table_replaced``: an in-memory table was rebuilt)."""

    def on_close(self, engine: Engine) -> None:
        """The store is closing (or abandoned at interpreter exit)."""


class NoHooks:
    """No security layer: rows are written as they are; an encrypted store is refused."""

    def on_create(self, engine: Engine, body: dict[str, Any]) -> None:
        return None

    def on_load(self, engine: Engine, body: dict[str, Any]) -> None:
        if (body.get("encryption") or {}).get("mode", "none") != "none":
            raise KeyRequiredError(f"store {engine.path} is encrypted: open it with aether.open and its key")

    def after_replay(self, engine: Engine) -> None:
        return None

    def apply_extra(self, engine: Engine, header: dict[str, Any]) -> None:
        return None

    def after_append(self, engine: Engine, header: dict[str, Any]) -> None:
        return None

    def segment_table(self, engine: Engine, start: int, end: int, *, only: np.ndarray | None = None) -> pa.Table:
        batch = engine.table.batch_range(start, end)
        if only is not None:
            batch = batch.take(np.asarray(only, np.int64) - start)
        return seal_rows(batch.to_arrow(), engine.codec)

    def before_manifest(self, engine: Engine, body: dict[str, Any]) -> None:
        return None

    def after_compaction(self, engine: Engine, *, table_replaced: bool) -> None:
        return None

    def on_close(self, engine: Engine) -> None:
        return None
