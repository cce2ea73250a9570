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

from typing import Any, NoReturn

import cbor2

from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason

MAX_DEPTH = 8
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
# The tags cbor2 decodes by itself. Each is refused as it is met: some decoders cost far more than
# the bytes that ask for them (tag 35 compiles a regular expression, which ``re`` then caches; tag
# 36 parses a MIME message), and no tag is in the data model anyway.
_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261,
                  1004, 43000, 55799)


class _Tagged(Exception):
    pass


def _refuse_tag(*_: Any) -> NoReturn:
    raise _Tagged


_NO_TAGS = {tag: _refuse_tag for tag in _SEMANTIC_TAGS}


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
            semantic_decoders=_NO_TAGS,
            tag_hook=_refuse_tag,
        )
    except cbor2.CBORDecodeError as exc:
        if isinstance(exc.__cause__, _Tagged):
            raise EnvelopeError(EnvelopeReason.MALFORMED, "tags are not allowed") from None
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
