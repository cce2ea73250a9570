"""Declarative shapes for message bodies: every field typed and bounded, nothing unknown accepted.

A ``Schema`` checks a decoded CBOR map and raises ``EnvelopeError`` naming the field path; the layer
that owns a message kind then builds its frozen dataclass from the checked map.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason


class Spec:
    """One field's shape."""

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    @staticmethod
    def _bad(path: str, why: str) -> EnvelopeError:
        return EnvelopeError(EnvelopeReason.BAD_FIELD, f"{path}: {why}")


@dataclass(frozen=True)
class Int(Spec):
    min: int = 0
    max: int = 2**63 - 1

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(path, "not an integer")
        if not self.min <= value <= self.max:
            raise self._bad(path, f"{value} outside [{self.min}, {self.max}]")


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise self._bad(path, "not a boolean")


@dataclass(frozen=True)
class Bytes(Spec):
    size: int | None = None  # exact length, when set
    max: int = 1024

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bytes):
            raise self._bad(path, "not a byte string")
        if self.size is not None and len(value) != self.size:
            raise self._bad(path, f"{len(value)} bytes, expected {self.size}")
        if len(value) > self.max:
            raise self._bad(path, f"{len(value)} bytes > {self.max}")


@dataclass(frozen=True)
class Text(Spec):
    """UTF-8 text in NFC with no control characters (names and titles are shown to people)."""

    max: int = 256
    min: int = 0

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise self._bad(path, "not text")
        if not self.min <= len(value) <= self.max:
            raise self._bad(path, f"length {len(value)} outside [{self.min}, {self.max}]")
        if unicodedata.normalize("NFC", value) != value:
            raise self._bad(path, "not in Unicode NFC")
        if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value):
            raise self._bad(path, "contains control or format characters")


@dataclass(frozen=True)
class OneOf(Spec):
    values: tuple[Any, ...]

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or value not in self.values:
            raise self._bad(path, f"{value!r} not one of {list(self.values)}")


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    max: int = 64
    unique: bool = False

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise self._bad(path, "not a list")
        if len(value) > self.max:
            raise self._bad(path, f"{len(value)} items > {self.max}")
        for index, item in enumerate(value):
            self.item.check(item, f"{path}[{index}]")
        if self.unique:
            seen = [repr(item) for item in value]
            if len(set(seen)) != len(seen):
                raise self._bad(path, "duplicate items")


@dataclass(frozen=True)
class Schema(Spec):
    """A map with exactly these required fields and possibly these optional ones."""

    required: Mapping[str, Spec] = field(default_factory=dict)
    optional: Mapping[str, Spec] = field(default_factory=dict)

    def check(self, value: Any, path: str = "body") -> None:
        if not isinstance(value, dict):
            raise self._bad(path, "not a map")
        for name in value:
            if name not in self.required and name not in self.optional:
                raise EnvelopeError(EnvelopeReason.UNKNOWN_FIELD, f"{path}.{name}")
        for name, spec in self.required.items():
            if name not in value:
                raise EnvelopeError(EnvelopeReason.MISSING_FIELD, f"{path}.{name}")
            spec.check(value[name], f"{path}.{name}")
        for name, spec in self.optional.items():
            if name in value:
                spec.check(value[name], f"{path}.{name}")

    def __hash__(self) -> int:
        return hash((tuple(self.required), tuple(self.optional)))


EMPTY = Schema()
