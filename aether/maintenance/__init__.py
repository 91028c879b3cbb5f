"""Maintenance above the engine core: re-indexing a store to a new embedding model.

It drives the engine through its public methods (write lock, checkpoints, ``install_generation``)
and may use the derived indexes and the batch engines, which the engine core never imports.
Compaction and erasure live beside the engine (``aether.engine.compact``, ``aether.security.erase``).
"""
