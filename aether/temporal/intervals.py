"""How a write changes the current versions of one atom (DESIGN.md, "Bitemporal rules").

Versions are never edited. A write closes the current versions it touches and
re-inserts the parts of their valid intervals that it does not cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclass(frozen=True)
class Piece(Generic[K]):
    """A current version: ``key`` identifies it, ``[valid_from, valid_to)`` is its valid interval."""

    key: K
    valid_from: int
    valid_to: int


def plan_put(current: list[Piece[K]], valid_from: int, valid_to: int) -> tuple[list[K], list[Piece[K]]]:
    """Versions to close and remainders to re-insert for a put of ``[valid_from, valid_to)``.

    A remainder keeps the key of the version it was cut from (its content is copied).
    """
    close: list[K] = []
    keep: list[Piece[K]] = []
    for p in current:
        if p.valid_from < valid_to and valid_from < p.valid_to:
            close.append(p.key)
            if p.valid_from < valid_from:
                keep.append(Piece(p.key, p.valid_from, valid_from))
            if valid_to < p.valid_to:
                keep.append(Piece(p.key, valid_to, p.valid_to))
    return close, keep


def plan_retract(current: list[Piece[K]], at: int) -> tuple[list[K], list[Piece[K]]]:
    """The fact stopped being true at ``at``: cut every current version there."""
    close: list[K] = []
    keep: list[Piece[K]] = []
    for p in current:
        if p.valid_to > at:
            close.append(p.key)
            if p.valid_from < at:
                keep.append(Piece(p.key, p.valid_from, at))
    return close, keep
