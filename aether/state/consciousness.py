"""The seed's agent state: :class:`ConsciousnessState`, its level, validation and continuity hash.

Decisions where the seed's code and the seed's tests disagree (the tests win):

* ``validate()`` does not require ``personality_traits``, ``learning_patterns`` or a
  ``continuity_hash``: ``TestConsciousnessState.test_validate_state`` validates a state whose
  hash was never computed, and the integration test persists a state with no traits or
  patterns. A hash that is present must, however, be 32 hex characters and match the
  state (a wrong hash is a failed integrity check, an absent one is not).
* The continuity hash is BLAKE2b with a 16-byte digest (32 hex characters, the length the
  seed's test expects of its MD5), over the seed's continuity fields: ``agent_id``,
  ``consciousness_level``, ``personality_traits``, ``learning_patterns``, ``previous_state_id``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from .._time import to_us
from ..errors import AetherError, InvalidInputError

_HEX32 = re.compile(r"[0-9a-f]{32}")
#: Longest agent id accepted (it names a directory on disk).
MAX_AGENT_ID = 200


class ConsciousnessLevel(str, Enum):
    """How developed an agent's state is (the seed names ``BASIC``; the others are ordered after it)."""

    BASIC = "basic"
    ENHANCED = "enhanced"
    ADVANCED = "advanced"


@dataclass
class ValidationResult:
    """Outcome of a validation: ``is_valid`` and the list of problems found."""

    is_valid: bool
    errors: list[str] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        # The seed reads both ``errors`` (a list) and ``error`` (one message).
        if self.error is None and self.errors:
            self.error = "; ".join(self.errors)


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(eq=True)
class ConsciousnessState:
    """One snapshot of an agent's state, chained to the previous one by ``previous_state_id``.

    Create it empty (``ConsciousnessState()``) and set its attributes, as in the seed.
    :class:`aether.StatePersistenceManager` persists it into the agent's snapshot chain.
    """

    state_id: str = field(default_factory=_new_id)
    agent_id: str = ""
    consciousness_level: ConsciousnessLevel = ConsciousnessLevel.BASIC
    personality_traits: dict[str, Any] = field(default_factory=dict)
    learning_patterns: dict[str, Any] = field(default_factory=dict)
    current_context: dict[str, Any] = field(default_factory=dict)
    quality_metrics: dict[str, float] = field(default_factory=dict)
    performance_metrics: dict[str, float] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=_now)
    version: str = "1.0.0"
    continuity_hash: str = ""
    previous_state_id: str | None = None

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """The seed's JSON layout as a dict."""
        level = self.consciousness_level
        return {
            "state_id": self.state_id,
            "agent_id": self.agent_id,
            "consciousness_level": level.value if isinstance(level, Enum) else level,
            "personality_traits": self.personality_traits,
            "learning_patterns": self.learning_patterns,
            "current_context": self.current_context,
            "quality_metrics": self.quality_metrics,
            "performance_metrics": self.performance_metrics,
            "timestamp": self.timestamp.isoformat(),
            "version": self.version,
            "continuity_hash": self.continuity_hash,
            "previous_state_id": self.previous_state_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConsciousnessState:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        InvalidInputError
            If a field is missing or has the wrong type.
        """
        try:
            state = cls(
                state_id=str(data["state_id"]),
                agent_id=str(data["agent_id"]),
                consciousness_level=ConsciousnessLevel(data["consciousness_level"]),
                personality_traits=dict(data["personality_traits"]),
                learning_patterns=dict(data["learning_patterns"]),
                current_context=dict(data["current_context"]),
                quality_metrics=dict(data["quality_metrics"]),
                performance_metrics=dict(data["performance_metrics"]),
                timestamp=datetime.fromisoformat(data["timestamp"]),
                version=str(data["version"]),
                continuity_hash=str(data["continuity_hash"]),
                previous_state_id=data.get("previous_state_id"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"not a serialized ConsciousnessState: {type(exc).__name__}: {exc}") from None
        return state

    def serialize(self) -> str:
        """The state as a JSON string (the seed's layout, indented).

        Raises
        ------
        InvalidInputError
            If a field holds something JSON cannot represent.
        """
        try:
            return json.dumps(self.to_dict(), indent=2, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"state {self.state_id} is not JSON-serialisable: {exc}") from None

    @classmethod
    def deserialize(cls, serialized_state: str | bytes) -> ConsciousnessState:
        """Parse the output of :meth:`serialize`.

        Raises
        ------
        InvalidInputError
            If the text is not a serialized state.
        """
        try:
            data = json.loads(serialized_state)
        except ValueError as exc:
            raise InvalidInputError(f"not a serialized ConsciousnessState: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInputError("not a serialized ConsciousnessState: expected a JSON object")
        return cls.from_dict(data)

    # ------------------------------------------------------------------ integrity
    def calculate_continuity_hash(self) -> str:
        """BLAKE2b-128 hex digest (32 characters) of the continuity fields (see the module docstring)."""
        level = self.consciousness_level
        continuity_data = {
            "agent_id": self.agent_id,
            "consciousness_level": level.value if isinstance(level, Enum) else level,
            "personality_traits": self.personality_traits,
            "learning_patterns": self.learning_patterns,
            "previous_state_id": self.previous_state_id,
        }
        try:
            text = json.dumps(continuity_data, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"state {self.state_id} is not JSON-serialisable: {exc}") from None
        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()

    def validate(self) -> ValidationResult:
        """Check the state is complete and consistent (see the module docstring for what is optional)."""
        errors: list[str] = []
        if not isinstance(self.state_id, str) or not self.state_id:
            errors.append("Missing state_id")
        if not isinstance(self.agent_id, str) or not self.agent_id:
            errors.append("Missing agent_id")
        elif len(self.agent_id) > MAX_AGENT_ID:
            errors.append(f"agent_id longer than {MAX_AGENT_ID} characters")
        if not isinstance(self.consciousness_level, ConsciousnessLevel):
            errors.append("Missing consciousness_level")
        if self.previous_state_id is not None and not isinstance(self.previous_state_id, str):
            errors.append("previous_state_id must be a str or None")
        if not isinstance(self.timestamp, datetime):
            errors.append("timestamp must be a datetime")
        else:
            try:
                to_us(self.timestamp, name="timestamp")
            except AetherError as exc:
                errors.append(str(exc))
        for name in ("personality_traits", "learning_patterns", "current_context",
                     "quality_metrics", "performance_metrics"):
            if not isinstance(getattr(self, name), dict):
                errors.append(f"{name} must be a dict")
        for name in ("quality_metrics", "performance_metrics"):
            values = getattr(self, name)
            if isinstance(values, dict) and any(
                isinstance(v, bool) or not isinstance(v, int | float) for v in values.values()
            ):
                errors.append(f"{name} values must be numbers")
        if not errors:
            try:
                self.serialize()
                expected = self.calculate_continuity_hash()
            except InvalidInputError as exc:
                errors.append(str(exc))
            else:
                if self.continuity_hash:
                    if not _HEX32.fullmatch(self.continuity_hash):
                        errors.append("continuity_hash must be 32 lowercase hex characters")
                    elif self.continuity_hash != expected:
                        errors.append("continuity_hash does not match the state")
        return ValidationResult(is_valid=not errors, errors=errors)

    # ------------------------------------------------------------------ chaining
    def successor(self) -> ConsciousnessState:
        """A new state (fresh ``state_id``, time now) that continues this one: a deep copy linked to it."""
        return ConsciousnessState(
            agent_id=self.agent_id,
            consciousness_level=self.consciousness_level,
            personality_traits=copy.deepcopy(self.personality_traits),
            learning_patterns=copy.deepcopy(self.learning_patterns),
            current_context=copy.deepcopy(self.current_context),
            quality_metrics=dict(self.quality_metrics),
            performance_metrics=dict(self.performance_metrics),
            version=self.version,
            previous_state_id=self.state_id,
        )
