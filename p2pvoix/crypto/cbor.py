"""Canonical CBOR: the one deterministic encoding every signed byte string uses.

Only a small data model is allowed, so that a value has exactly one encoding (RFC 8949 §4.2.1, core
deterministic encoding): integers in [-2**63, 2**64), byte strings, UTF-8 text, arrays, maps with
text keys, true, false and null. No floats (their encodings are not unique across implementations),
no tags, no indefinite lengths, no duplicate keys.

Strict decoding re-encodes what it read and compares bytes: any encoding that is valid CBOR but not
the canonical one (a long-form integer, unsorted keys) is refused, so a signature covers exactly one
byte string.
"""

from __future__ import annotations

from typing import Any

import cbor2

from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason

MAX_DEPTH = 8
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically; raises ``TypeError``/``ValueError`` outside the data model."""
    _check_model(value, depth=0, local=True)
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes, *, max_size: int) -> Any:
    """Decode one canonical CBOR item that fills ``data`` exactly, or raise ``EnvelopeError``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EnvelopeError(EnvelopeReason.MALFORMED, "not a byte string")
    data = bytes(data)
    if len(data) > max_size:
        raise EnvelopeError(EnvelopeReason.TOO_LARGE, f"{len(data)} bytes > {max_size}")
    if not data:
        raise EnvelopeError(EnvelopeReason.MALFORMED, "empty")
    try:
        value = cbor2.loads(
            data,
            max_depth=MAX_DEPTH + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except cbor2.CBORDecodeError as exc:
        reason = EnvelopeReason.TOO_DEEP if "depth" in str(exc) else EnvelopeReason.MALFORMED
        raise EnvelopeError(reason, str(exc)) from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        raise EnvelopeError(EnvelopeReason.MALFORMED, f"{type(exc).__name__}: {exc}") from None
    try:
        _check_model(value, depth=0, local=False)
    except EnvelopeError:
        raise
    # cbor2 reads to the end of one item: a second item or trailing garbage shows up only here.
    if cbor2.dumps(value, canonical=True) != data:
        raise EnvelopeError(EnvelopeReason.NOT_CANONICAL, "not the deterministic encoding")
    return value


def _check_model(value: Any, *, depth: int, local: bool) -> None:
    """Refuse anything outside the data model: a local bug raises TypeError, a remote one Rejected."""

    def fail(reason: EnvelopeReason, message: str) -> None:
        if local:
            raise TypeError(message) if reason is EnvelopeReason.MALFORMED else ValueError(message)
        raise EnvelopeError(reason, message)

    if depth > MAX_DEPTH:
        fail(EnvelopeReason.TOO_DEEP, f"nesting deeper than {MAX_DEPTH}")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            fail(EnvelopeReason.MALFORMED, "integer out of 64-bit range")
        return
    if isinstance(value, bytes | str):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_model(item, depth=depth + 1, local=local)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                fail(EnvelopeReason.MALFORMED, "map keys must be text")
            _check_model(item, depth=depth + 1, local=local)
        return
    fail(EnvelopeReason.MALFORMED, f"{type(value).__name__} is not allowed")
