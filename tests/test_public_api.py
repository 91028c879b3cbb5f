"""The public surface: everything in __all__ exists, and every error derives from AetherError."""

from __future__ import annotations

import inspect

import aether
import aether.errors as errors


def test_all_names_exist_and_are_sorted() -> None:
    assert sorted(set(aether.__all__)) == sorted(aether.__all__)
    for name in aether.__all__:
        assert hasattr(aether, name), name


def test_contract_names_present() -> None:
    for name in ("open", "Memory", "MemoryAtom", "MemoryModality", "MemoryContent", "Hit", "HashingEmbedder",
                 "AetherError", "StoreLockedError", "ModelMismatchError"):
        assert name in aether.__all__


def test_error_tree() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, aether.AetherError), cls
        assert cls.__doc__ and "\n" not in cls.__doc__.strip(), f"{cls.__name__} needs a one-line docstring"
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the tree in errors.py"
    assert issubclass(aether.InvalidInputError, ValueError)
    assert issubclass(aether.NaiveDatetimeError, ValueError)
