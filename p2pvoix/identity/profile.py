"""The signed profile record: a display name bound to an identity key."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from p2pvoix.crypto.envelope import Envelope, KindSpec, open_envelope, seal
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.schema import Schema, Text
from p2pvoix.errors import UsageError

MAX_NAME_LENGTH = 64

PROFILE = KindSpec(
    name="profile",
    body=Schema(required={"name": Text(max=MAX_NAME_LENGTH)}),
    time=True,
    max_size=512,
)


class BadDisplayName(UsageError):
    """That display name cannot be used. Use 1 to 64 printable characters."""


@dataclass(frozen=True)
class Profile:
    """Who an identity says it is; ``updated_ms`` orders two profiles of one identity."""

    key: PublicKey
    name: str
    updated_ms: int
    envelope: Envelope

    @classmethod
    def create(cls, key: SigningKey, name: str, now_ms: int) -> Profile:
        return cls.from_envelope(seal(PROFILE, key, {"name": clean_name(name)}, time=now_ms))

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Profile:
        assert envelope.time is not None  # PROFILE has time=True
        return cls(envelope.signer, envelope.body["name"], envelope.time, envelope)

    @classmethod
    def decode(cls, data: bytes, signer: PublicKey | None = None) -> Profile:
        """Verify a profile received or read from disk; raises ``EnvelopeError``."""
        return cls.from_envelope(open_envelope(data, PROFILE, signer=signer))


def clean_name(name: str) -> str:
    """NFC, surrounding space stripped; raises ``BadDisplayName`` if nothing printable is left."""
    name = unicodedata.normalize("NFC", " ".join(name.split()))
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise BadDisplayName(f"{len(name)} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in name):
        raise BadDisplayName("it contains control characters")
    return name
