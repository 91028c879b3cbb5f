"""A deterministic, dependency-free embedder for tests: hashed word and character features."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Feature hashing of words and character trigrams into ``dim`` signed buckets.

    Identical text always gives the identical vector on every machine, and texts that share
    words are close, which is what tests of search need. It is not a semantic model.

    Parameters
    ----------
    dim
        Output dimension (>= 2).
    """

    def __init__(self, dim: int = 64) -> None:
        if not isinstance(dim, int) or dim < 2:
            raise InvalidInputError("HashingEmbedder dim must be an int >= 2")
        self._dim = dim

    @property
    def identity(self) -> str:
        return f"hashing:v1:dim={self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = [w.lower() for w in _WORD.findall(text)]
        feats = [("w:" + w, 1.0) for w in words]
        joined = " ".join(words) if words else text
        feats += [("c:" + joined[i : i + 3], 0.3) for i in range(max(1, len(joined) - 2))]
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat, weight in self._features(text):
                h = hashlib.blake2b(feat.encode("utf-8", "surrogatepass"), digest_size=8).digest()
                bucket = int.from_bytes(h[:4], "little") % self._dim
                sign = 1.0 if h[4] & 1 else -1.0
                out[row, bucket] += sign * weight
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:  # every feature cancelled out: fall back to one fixed direction
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return out


class PrecomputedEmbedder:
    """For users who bring their own vectors: fixes ``dim`` and a model identity, embeds nothing.

    Parameters
    ----------
    dim
        Dimension of the vectors you will pass.
    identity
        A name for the model that produced them (stored in the manifest and checked on open).
    """

    def __init__(self, dim: int, identity: str = "precomputed") -> None:
        if not isinstance(dim, int) or dim < 1:
            raise InvalidInputError("dim must be a positive int")
        self._dim = dim
        self._identity = identity if identity.startswith("precomputed") else f"precomputed:{identity}"

    @property
    def identity(self) -> str:
        return f"{self._identity}:dim={self._dim}" if ":dim=" not in self._identity else self._identity

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise InvalidInputError(
            "this store holds precomputed vectors: pass vector=/vectors= (its embedder embeds no text)"
        )
