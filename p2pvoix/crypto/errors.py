"""The one error type for bytes that fail to decode or verify, with its reason codes."""

from __future__ import annotations

from enum import StrEnum

from p2pvoix.errors import Rejected


class EnvelopeReason(StrEnum):
    """Why a signed message was refused; the codes are part of docs/protocol/envelope.md."""

    TOO_LARGE = "too-large"
    MALFORMED = "malformed"  # not CBOR, truncated, trailing bytes, indefinite length, tags, floats
    NOT_CANONICAL = "not-canonical"  # valid CBOR but not the one deterministic encoding
    TOO_DEEP = "too-deep"
    MISSING_FIELD = "missing-field"
    UNKNOWN_FIELD = "unknown-field"
    BAD_FIELD = "bad-field"  # a field of the wrong type, length or range
    UNKNOWN_KIND = "unknown-kind"
    UNKNOWN_VERSION = "unknown-version"
    BAD_KEY = "bad-key"  # a public key that is not 32 bytes or not a valid Ed25519 point
    BAD_SIGNATURE = "bad-signature"
    WRONG_ROOM = "wrong-room"
    WRONG_SIGNER = "wrong-signer"


class EnvelopeError(Rejected):
    """A message failed strict decoding or verification."""

    def __init__(self, reason: EnvelopeReason, detail: str = "") -> None:
        super().__init__(reason, detail)
