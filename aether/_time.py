"""Time conversions: every time inside aether is an int64 count of microseconds since the UTC epoch."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from .errors import InvalidInputError, InvalidIntervalError, NaiveDatetimeError

#: Open end of an interval, and "latest" for as-of queries.
OPEN: int = int(np.iinfo(np.int64).max)
#: Smallest representable instant (the ISO year 1, so datetimes can render it).
MIN_US: int = -62135596800 * 1_000_000
#: Largest representable instant (9999-12-31T23:59:59.999999Z), below ``OPEN``.
MAX_US: int = 253402300799 * 1_000_000 + 999_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TimeLike = datetime | str

Clock = Callable[[], int]


def now_us() -> int:
    """Wall-clock time now, in microseconds."""
    return time.time_ns() // 1000


def to_us(value: TimeLike, *, name: str = "time") -> int:
    """Convert an aware datetime or an ISO-8601 string with an offset to microseconds.

    Raises
    ------
    NaiveDatetimeError
        If the value has no timezone.
    InvalidInputError
        If the value is not a datetime or a parseable string.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise InvalidInputError(f"{name}: {value!r} is not an ISO-8601 time") from exc
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{name}: expected a timezone-aware datetime or ISO-8601 string, got {value!r}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise NaiveDatetimeError(f"{name}: {value.isoformat()} has no timezone; aether needs aware times")
    try:
        delta = value - _EPOCH
    except OverflowError:
        delta = None
    us = None if delta is None else (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    # Only instants a UTC datetime can show are accepted: e.g. datetime.max at -14:00 is in
    # year 10000 UTC, and a version stored there could never be rendered again.
    if us is None or not MIN_US <= us <= MAX_US:
        raise InvalidIntervalError(f"{name}: {value.isoformat()} is outside the representable range (UTC years 1-9999)")
    return us


def from_us(us: int) -> datetime | None:
    """Microseconds to an aware UTC datetime; the open sentinel becomes ``None``."""
    if us >= OPEN:
        return None
    return _EPOCH + timedelta(microseconds=int(us))


def from_us_strict(us: int) -> datetime:
    """Like :func:`from_us` but for values that can never be open."""
    out = from_us(us)
    assert out is not None
    return out


def opt_to_us(value: TimeLike | None, default: int, *, name: str) -> int:
    """``None`` means the default (``OPEN`` for an open end)."""
    return default if value is None else to_us(value, name=name)


def check_interval(valid_from: int, valid_to: int) -> None:
    """Reject an empty or inverted valid interval."""
    if valid_from < MIN_US or valid_to > OPEN:
        raise InvalidIntervalError("valid time is outside the representable range")
    if valid_to <= valid_from:
        raise InvalidIntervalError(
            f"valid_to ({from_us(valid_to)}) must be after valid_from ({from_us(valid_from)})"
        )


def iso(us: int) -> str | None:
    """ISO-8601 rendering of microseconds, ``None`` for open."""
    dt = from_us(us)
    return None if dt is None else dt.isoformat()
