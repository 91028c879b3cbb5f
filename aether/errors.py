"""The one error tree of aether.

Every error aether raises on purpose derives from :class:`AetherError`, so a caller
can catch them all with one ``except``::

    AetherError
    ├── InvalidInputError (also ValueError)      bad argument; nothing was written
    │   ├── NaiveDatetimeError                   a datetime without a timezone
    │   ├── InvalidIntervalError                 valid_to <= valid_from, or out of range
    │   ├── InvalidVectorError                   wrong size, NaN/inf, or zero vector
    │   ├── InvalidContentError                  empty or oversized content
    │   ├── InvalidTagError                      a tag key or value of an unsupported type
    │   ├── InvalidPayloadError                  a payload too large, of a bad content type or kind
    │   │   ├── PayloadFileError                 a payload file that is missing or cannot be read
    │   │   └── NoPayloadError                   the atom version has no payload
    │   └── ImportFailedError                    an all-or-nothing import found bad rows; nothing written
    ├── AtomNotFoundError (also KeyError)        no such atom (or it was erased)
    ├── ReadOnlyError                            a write on a time-travel view or a read-only store
    ├── StoreError                               problems with the store on disk
    │   ├── StoreLockedError                     another process holds the writer lock
    │   ├── StoreNotFoundError                   no store at that path
    │   ├── StoreClosedError                     the store was closed
    │   ├── FormatVersionError                   written by an incompatible aether
    │   ├── ModelMismatchError                   opened with a different embedding model
    │   ├── CorruptionError                      a file failed its checksum or does not parse
    │   ├── StateConflictError                   a state snapshot does not extend its agent's chain head
    │   ├── ReindexConflictError                 segments were rewritten (compacted) during a re-index
    │   └── StorageIOError (also OSError)        a write, fsync or rename failed
    ├── SecurityError                            keys and integrity
    │   ├── KeyRequiredError                     the store is encrypted and no key was given
    │   ├── WrongKeyError                        the key does not open this store
    │   ├── TamperedError                        a hash chain or authenticated ciphertext does not verify
    │   │   └── StateTamperedError               an agent state snapshot fails its checksum, tag or chain link
    │   ├── AuthenticationError                  the server got no API key, or a wrong or revoked one (401)
    │   └── PermissionDeniedError                the API key lacks the scope or namespace (403)
    ├── EmbeddingError                           the embedding model failed or is unavailable
    ├── MissingDependencyError (also ImportError) an optional extra is not installed
    ├── RemoteError                              the server failed (5xx) or could not be reached
    └── ConfigError                              an unknown model or recipe name, a bad setting
"""

from __future__ import annotations

from typing import Any


class AetherError(Exception):
    """Root of every error aether raises on purpose."""


class InvalidInputError(AetherError, ValueError):
    """An argument is invalid; the store was not changed."""


class NaiveDatetimeError(InvalidInputError):
    """A datetime without a timezone was given where an aware one is required."""


class InvalidIntervalError(InvalidInputError):
    """A time interval is empty, inverted or outside the representable range."""


class InvalidVectorError(InvalidInputError):
    """A vector has the wrong shape, a non-finite value or zero norm."""


class InvalidContentError(InvalidInputError):
    """Content is empty, not text, or larger than the configured limit."""


class InvalidTagError(InvalidInputError):
    """A tag key or value has an unsupported type."""


class InvalidPayloadError(InvalidInputError):
    """A payload is too large, has an invalid content type or is not bytes, a path or a binary file."""


class PayloadFileError(InvalidPayloadError):
    """A payload file does not exist, is not a regular file or cannot be read; nothing was written."""


class NoPayloadError(InvalidPayloadError):
    """The atom version asked for has no payload (it is a text or structured atom)."""


class ImportFailedError(InvalidInputError):
    """An all-or-nothing import found bad rows; nothing was written (``bad`` lists them)."""

    def __init__(self, message: str, bad: list[Any] | None = None) -> None:
        super().__init__(message)
        self.bad: list[Any] = list(bad or [])


class AtomNotFoundError(AetherError, KeyError):
    """No atom with that id exists in this store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "atom not found"


class ReadOnlyError(AetherError):
    """A write was attempted on a read-only view or store."""


class StoreError(AetherError):
    """A problem with the store on disk."""


class StoreLockedError(StoreError):
    """Another process holds this store's writer lock."""


class StoreNotFoundError(StoreError):
    """No aether store exists at the given path."""


class StoreClosedError(StoreError):
    """The store has been closed."""


class FormatVersionError(StoreError):
    """The store was written in an on-disk format this aether cannot read."""


class ModelMismatchError(StoreError):
    """The embedder does not match the model identity recorded in the store."""


class CorruptionError(StoreError):
    """A file of the store failed its checksum or could not be parsed."""

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f" [{path}" + (f" @ offset {offset}" if offset is not None else "") + "]"
        super().__init__(message + where)
        self.path = path
        self.offset = offset


class StateConflictError(StoreError):
    """A state snapshot does not extend its agent's chain (a fork, a duplicate state id, a concurrent writer)."""


class ReindexConflictError(StoreError):
    """The segments being re-indexed were rewritten (e.g. compacted) meanwhile; run the re-index again."""


class StorageIOError(StoreError, OSError):
    """An operating-system I/O call (write, fsync, rename) failed."""


class SecurityError(AetherError):
    """A problem with keys, encryption or integrity."""


class KeyRequiredError(SecurityError):
    """The store is encrypted and no master key was supplied."""


class WrongKeyError(SecurityError):
    """The supplied master key does not open this store."""


class TamperedError(SecurityError):
    """Authenticated data or a hash chain failed verification."""


class StateTamperedError(TamperedError):
    """A stored agent state snapshot failed its checksum, authentication tag or chain link."""


class AuthenticationError(SecurityError):
    """The server got no API key, or a wrong or revoked one."""


class PermissionDeniedError(SecurityError):
    """The API key does not grant the scope or the namespace of the request."""


class RemoteError(AetherError):
    """The aether server failed (a 5xx) or could not be reached."""


class EmbeddingError(AetherError):
    """The embedding model could not be loaded or failed."""


class MissingDependencyError(AetherError, ImportError):
    """An optional dependency (an extra) is not installed."""


class ConfigError(AetherError):
    """An unknown model or recipe name, or an invalid setting."""
