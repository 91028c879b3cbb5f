"""``aether.open``: the one place the engine's plug-ins are wired."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._time import Clock
from ..embed import DEFAULT_MODEL, Embedder, SentenceTransformerEmbedder, embedder_from_identity
from ..engine.store import Engine
from ..engine.validate import DEFAULT_MAX_CONTENT_BYTES
from ._memory import Memory


def _default_factory(model: str | None) -> Any:
    def factory(identity: str | None) -> Embedder:
        if identity is None:
            return SentenceTransformerEmbedder(model or DEFAULT_MODEL)
        return embedder_from_identity(identity)

    return factory


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    embedder: Embedder | None = None,
    model: str | None = None,
    read_only: bool = False,
    create: bool = True,
    max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
    checkpoint_bytes: int | None = None,
    clock: Clock | None = None,
    key: bytes | str | None = None,
    key_file: str | os.PathLike[str] | None = None,
    max_payload_bytes: int | None = None,
    embedders: Mapping[str, Any] | None = None,
) -> Memory:
    """Open (or create) a store.

    Parameters
    ----------
    path
        Store directory; ``None`` gives an in-memory store that vanishes on close.
    embedder
        The embedding model. Default: the one recorded in the store, or all-MiniLM-L6-v2 for a new store.
    model
        A model name from ``models/`` for a new store (instead of ``embedder``).
    read_only
        Open without taking the writer lock; see new commits with :meth:`Memory.refresh`.
    create
        Create the store if ``path`` does not hold one.
    max_content_bytes
        Largest content accepted (UTF-8 bytes).
    clock
        A function returning microseconds since the epoch (tests use a fake clock).
    key, key_file
        The 32-byte master key (bytes or base64 text), or a file holding it (``aether keygen``).
        Default: ``AETHER_KEY`` (base64) or ``AETHER_KEY_FILE`` from the environment. A new store
        opened with a key is encrypted (AES-256-GCM); an encrypted store needs its key.
    max_payload_bytes
        Largest payload :meth:`Memory.add` accepts (default 4 GiB); see ``aether.payloads``.
    embedders
        ``{"image": embedder, ...}``: a payload embedder per modality (``identity``, ``dim``,
        ``embed(list of bytes)``), each with its own vector space searched by :meth:`Memory.search_space`
        (see ``aether.spaces``).

    Raises
    ------
    StoreLockedError
        If another process has the store open for writing.
    KeyRequiredError
        If the store is encrypted and no key was given.
    WrongKeyError
        If the key does not open the store (nothing was read or written).
    ModelMismatchError
        If ``embedder`` differs from the store's recorded model.
    """
    if embedder is None and model is not None:
        embedder = SentenceTransformerEmbedder(model)
    kwargs: dict[str, Any] = {}
    if checkpoint_bytes is not None:
        kwargs["checkpoint_bytes"] = checkpoint_bytes
    # The one place the engine's plug-ins are wired: the security layer's hooks (key check, erasures,
    # the hash-chained log) and the derived indexes (the bucketed ANN index always, the keyword index
    # once the store has one).
    from ..index import attach_default
    from ..keyword import attach_if_present
    from ..security.engine_hooks import HOOKS

    engine = Engine(
        path,
        embedder=embedder,
        read_only=read_only,
        create=create,
        clock=clock,
        max_content_bytes=max_content_bytes,
        embedder_factory=_default_factory(model),
        codec=_codec_for(path, key, key_file),
        hooks=HOOKS,
        derived=(attach_default, attach_if_present),
        **kwargs,
    )
    try:
        mem = Memory(engine, max_payload_bytes=max_payload_bytes)
        if path is not None and not read_only and (Path(path) / "blobs").is_dir():
            from ..payloads import blobs_of

            blobs_of(engine)  # removes the temp file of a payload write that a crash cut short
        if embedders:
            from .. import spaces

            spaces.register(engine, embedders)
        return mem
    except BaseException:
        engine.close()
        raise


def _codec_for(path: Any, key: Any, key_file: Any) -> Any:
    """The security layer's AES-256-GCM codec when a key is given (or set in the environment)."""
    from ..security.codec import AeadCodec
    from ..security.keys import resolve_key

    master = resolve_key(key, key_file)
    if master is None or path is None:  # an in-memory store writes no files
        return None
    return AeadCodec(master, from_env=key is None and key_file is None)
