"""Input validation for writes: every check runs before anything is written."""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import InvalidContentError, InvalidInputError, InvalidTagError
from ..models import MemoryModality

#: Default largest content accepted, in UTF-8 bytes (configurable per store).
DEFAULT_MAX_CONTENT_BYTES = 1 << 20
_MAX_TAG_KEY = 256


def check_content(content: Any, limit: int) -> str:
    if not isinstance(content, str):
        raise InvalidContentError(f"content must be a str, got {type(content).__name__}")
    if not content.strip():
        raise InvalidContentError("content is empty")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidContentError("content is not valid Unicode (lone surrogate)") from None
    if size > limit:
        raise InvalidContentError(f"content is {size} bytes; the limit is {limit} (max_content_bytes)")
    return content


def check_tags(tags: Any) -> dict[str, Any]:
    """Tags are a flat ``str -> str | int | float | bool`` mapping (they are filtered on)."""
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise InvalidTagError(f"tags must be a dict, got {type(tags).__name__}")
    out: dict[str, Any] = {}
    for k, v in tags.items():
        if not isinstance(k, str) or not k or len(k) > _MAX_TAG_KEY:
            raise InvalidTagError(f"tag key {k!r} must be a non-empty str of at most {_MAX_TAG_KEY} chars")
        _check_unicode(k, "tag key")
        if isinstance(v, bool | int | str):
            if isinstance(v, str):
                _check_unicode(v, "tag value")
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**63:
                raise InvalidTagError(f"tag {k!r}: integer out of range")
            out[k] = v
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise InvalidTagError(f"tag {k!r}: value must be finite")
            out[k] = v
        else:
            raise InvalidTagError(f"tag {k!r}: value must be str, int, float or bool, got {type(v).__name__}")
    return out


def _check_unicode(s: str, what: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTagError(f"{what} is not valid Unicode") from None


def check_json(value: Any, what: str) -> str:
    """Metadata must be JSON (no NaN); returns its canonical encoding."""
    if not value and (value is None or isinstance(value, dict)):
        return "{}"
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a dict")
    try:
        out = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        out.encode("utf-8")  # a lone surrogate would otherwise fail later, inside the WAL write
        return out
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidInputError(f"{what} is not JSON-serialisable: {exc}") from None


def check_modality(modality: Any) -> str:
    try:
        return MemoryModality(modality).value
    except ValueError:
        raise InvalidInputError(
            f"unknown modality {modality!r}; one of {[m.value for m in MemoryModality]}"
        ) from None


def check_quality(q: Any) -> float:
    if isinstance(q, bool) or not isinstance(q, int | float) or not math.isfinite(q) or not 0.0 <= q <= 1.0:
        raise InvalidInputError(f"quality_score must be a number in [0, 1], got {q!r}")
    return float(q)


def check_subject(s: Any) -> str:
    if not isinstance(s, str) or not s or len(s) > 256:
        raise InvalidInputError("subject must be a non-empty str of at most 256 chars")
    _check_unicode(s, "subject")
    return s


def check_atom_id(a: Any) -> str:
    if not isinstance(a, str) or not a or len(a) > 256:
        raise InvalidInputError("atom_id must be a non-empty str of at most 256 chars")
    _check_unicode(a, "atom_id")
    return a
