"""Calendar buckets of ``valid_from``: the unit a partition is built from and named by."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

_UNIT = {"day": "D", "week": "W", "month": "M", "quarter": "M", "year": "Y"}


def bucket_keys(valid_from: np.ndarray, period: str) -> np.ndarray:
    """Integer bucket key of each ``valid_from`` (microseconds UTC); keys ascend with time."""
    try:
        unit = _UNIT[period]
    except KeyError:
        raise ConfigError(f"unknown bucket period {period!r}") from None
    t = np.asarray(valid_from, np.int64).astype("datetime64[us]")
    keys = t.astype(f"datetime64[{unit}]").astype(np.int64)
    if period == "quarter":
        keys = np.floor_divide(keys, 3)
    return keys


def bucket_label(key: int, period: str) -> str:
    """Human label of a bucket key: ``2024-05``, ``2024-Q2``, ``2024``, ``2024-05-17``, ``W2024-05-13``."""
    if period == "quarter":
        month: Any = np.datetime64(int(key) * 3, "M")
        y, m = str(month).split("-")
        return f"{y}-Q{(int(m) - 1) // 3 + 1}"
    unit = _UNIT[period]
    when: Any = np.datetime64(int(key), unit)  # type: ignore[call-overload]
    text = str(when.astype(f"datetime64[{'D' if unit == 'W' else unit}]"))
    return f"W{text}" if period == "week" else text
