"""Embedders: the protocol, the default sentence-transformers model, and the hashing embedder for tests."""

from __future__ import annotations

import os
import re

from ..errors import ConfigError
from .base import Embedder, as_unit_vectors, embed_queries
from .hashing import HashingEmbedder, PrecomputedEmbedder
from .sentence import DEFAULT_MODEL, SentenceTransformerEmbedder

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "HashingEmbedder",
    "PrecomputedEmbedder",
    "SentenceTransformerEmbedder",
    "as_unit_vectors",
    "embed_queries",
    "embedder_for",
    "embedder_from_identity",
]


def embedder_for(name: str) -> Embedder:
    """An embedder by user-facing name: a model manifest name, ``hashing`` or ``hashing:DIM``."""
    m = re.fullmatch(r"hashing(?::(\d+))?", name.strip().lower())
    if m:
        return HashingEmbedder(dim=int(m.group(1) or 64))
    return SentenceTransformerEmbedder(name)


def embedder_from_identity(identity: str) -> Embedder:
    """Rebuild the embedder a store was written with, from its recorded identity."""
    m = re.fullmatch(r"hashing:v1:dim=(\d+)", identity)
    if m:
        return HashingEmbedder(dim=int(m.group(1)))
    m = re.fullmatch(r"sentence-transformers:(.+?)(:int8)?:dim=(\d+)", identity)
    if m:
        if m.group(2):
            return SentenceTransformerEmbedder(m.group(1), backend="onnx-int8")
        # The store records the float model: $AETHER_EMBED_BACKEND may pick torch or ONNX for it, not int8.
        env = (os.environ.get("AETHER_EMBED_BACKEND") or "auto").lower()
        return SentenceTransformerEmbedder(m.group(1), backend="auto" if env == "onnx-int8" else None)
    m = re.fullmatch(r"(precomputed.*):dim=(\d+)", identity)
    if m:
        return PrecomputedEmbedder(int(m.group(2)), m.group(1))
    raise ConfigError(f"cannot rebuild an embedder for model identity {identity!r}; pass embedder=")
