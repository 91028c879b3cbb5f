"""The public facade: ``aether.open()`` returns a :class:`Memory`.

The facade's jobs, one module each: ``_writes`` (new versions, payloads, bulk loads), ``_corrections``
(correct, retract, delete), ``_reads`` (get, history, payloads, searches), ``_maintenance`` (checkpoint,
erase, compact, reindex), combined in ``_memory`` (``Memory``, ``View``); ``_open`` wires the engine's
plug-ins; ``_helpers`` holds the argument checks they share.
"""

from .._timing import record as search_timings
from ..engine.compact import CompactResult
from ..maintenance.reindex import ReindexResult
from ..security.erase import EraseResult
from ._helpers import ITEM_FIELDS, ITEM_KEYS, UNSET

# Package-internal helpers that other aether modules (ingest, seed) and tests import from here.
from ._helpers import _during as _during
from ._helpers import _new_atom_ids as _new_atom_ids
from ._helpers import _valid_interval as _valid_interval
from ._memory import Memory, View
from ._open import open
from ._reads import _query_vectors as _query_vectors

__all__ = [
    "ITEM_FIELDS", "ITEM_KEYS", "UNSET", "CompactResult", "EraseResult", "Memory", "ReindexResult", "View", "open",
    "search_timings",
]
