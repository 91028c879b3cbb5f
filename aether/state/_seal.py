"""The snapshot crypto, in one swappable pair: :func:`seal` (zstd, then AES-256-GCM) and :func:`unseal`.

A codec follows :class:`aether.storage.codec.Codec` (``seal(data, aad)`` / ``open(data, aad)``
and an ``encrypted`` flag), so the security layer's key management can hand in its own codec
instead of :class:`AesGcmCodec`. The associated data binds each snapshot to its agent, its
state id and its plaintext header: a snapshot cannot be moved to another chain or position.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import zstandard

from ..errors import InvalidInputError, StateTamperedError, WrongKeyError
from ..storage.codec import Codec, PlainCodec

_NONCE = 12
_ZSTD_LEVEL = 3
_MAX_PLAIN = 256 << 20  # refuse to inflate a snapshot past this (a corrupt size field must not OOM us)


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key, so a wrong key is told apart from tampering."""
    return hashlib.blake2b(key, digest_size=8, person=b"aether-state-kid").hexdigest()


class AesGcmCodec:
    """AES-256-GCM with a random 96-bit nonce per record: ``nonce || ciphertext || tag``."""

    encrypted = True

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != 32:
            raise InvalidInputError("key must be 32 bytes (AES-256)")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(bytes(key))
        self.key_id = key_id(bytes(key))

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, data: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if len(data) < _NONCE + 16:
            raise StateTamperedError("encrypted snapshot body is truncated")
        try:
            return self._aead.decrypt(data[:_NONCE], data[_NONCE:], aad)
        except InvalidTag:
            raise StateTamperedError("snapshot failed AES-GCM authentication (tampered, or a wrong key)") from None


def make_codec(key: bytes | None, codec: Codec | None) -> Codec:
    """The codec for a manager: an explicit one, AES-GCM for a key, else plain."""
    if codec is not None and key is not None:
        raise InvalidInputError("give key= or codec=, not both")
    if codec is not None:
        return codec
    return AesGcmCodec(key) if key is not None else PlainCodec()


def codec_key_id(codec: Codec) -> str | None:
    kid: Any = getattr(codec, "key_id", None)
    return str(kid) if kid is not None else None


def seal(plain: bytes, aad: bytes, codec: Codec) -> bytes:
    """Compress then (if the codec encrypts) encrypt one snapshot body."""
    return codec.seal(zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(plain), aad)


def unseal(body: bytes, aad: bytes, codec: Codec, *, expect_key_id: str | None) -> bytes:
    """Inverse of :func:`seal`.

    Raises
    ------
    WrongKeyError
        If the snapshot was sealed under a different key (its recorded key id differs).
    StateTamperedError
        If authentication or decompression fails.
    """
    mine = codec_key_id(codec)
    if expect_key_id is not None and mine is not None and expect_key_id != mine:
        raise WrongKeyError(f"snapshot was encrypted with key {expect_key_id}, not {mine}")
    compressed = codec.open(body, aad)
    try:
        return zstandard.ZstdDecompressor().decompress(compressed, max_output_size=_MAX_PLAIN)
    except zstandard.ZstdError as exc:
        raise StateTamperedError(f"snapshot body does not decompress: {exc}") from None
