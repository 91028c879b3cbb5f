"""The embedder interface and the checks every embedding goes through."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidVectorError


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors.

    ``identity`` names the model and everything that changes its vectors; it is stored
    in the store's manifest so that a store is never searched with another model's vectors.
    """

    @property
    def identity(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed search queries, using the embedder's query variant when it has one."""
    fn = getattr(embedder, "embed_queries", None)
    return fn(texts) if fn is not None else embedder.embed(texts)


def as_unit_vectors(vectors: object, dim: int) -> np.ndarray:
    """Validate user vectors, returning an ``(n, dim)`` float32 array of unit rows.

    Raises
    ------
    InvalidVectorError
        On a wrong shape, a non-finite value or a zero vector.
    """
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"not a numeric vector: {exc}") from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InvalidVectorError(f"expected vectors of dimension {dim}, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        raise InvalidVectorError("vector contains NaN or infinity")
    sq = np.einsum("ij,ij->i", arr, arr)
    # float32 squares overflow above ~1e19 and underflow below ~1e-19 (a tiny but non-zero vector
    # would look like zero): such rows are normalised in float64 instead.
    ok = np.isfinite(sq) & (sq > 1e-30)
    if ok.all():
        out = arr / np.sqrt(sq)[:, None]
        return np.ascontiguousarray(out, dtype=np.float32)
    wide = arr.astype(np.float64)
    norms = np.linalg.norm(wide, axis=1)
    if arr.shape[0] and (norms == 0).any():
        raise InvalidVectorError("zero vector has no direction; cosine similarity is undefined")
    return np.ascontiguousarray(wide / norms[:, None], dtype=np.float32)
