"""Byte codecs applied to whole records before they reach the disk.

The plain codec stores records as they are (Parquet and the WAL frame CRC give
integrity). The security layer supplies an authenticated-encryption codec with the
same two methods, so the WAL and segment code never changes.
"""

from __future__ import annotations

from typing import Protocol


class Codec(Protocol):
    """Seals a record for disk and opens it again; ``aad`` binds it to its place."""

    encrypted: bool

    def seal(self, data: bytes, aad: bytes) -> bytes: ...

    def open(self, data: bytes, aad: bytes) -> bytes: ...


class PlainCodec:
    """No encryption: bytes pass through unchanged."""

    encrypted = False

    def seal(self, data: bytes, aad: bytes) -> bytes:
        return data

    def open(self, data: bytes, aad: bytes) -> bytes:
        return data
