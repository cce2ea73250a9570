"""Ed25519 keys, the libp2p peer ID they imply, and a fingerprint people can compare aloud.

One key is one identity: its public half is the libp2p peer ID (``12D3KooW…``, a multihash of the
protobuf-encoded key) and signs every p2pvoix envelope. Randomness is the caller's: keys are made
from a 32-byte seed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

# libp2p's PublicKey protobuf: field 1 KeyType = Ed25519 (1), field 2 Data = 32 bytes.
_PROTOBUF_ED25519_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
# Identity multihash (code 0x00) of those 36 bytes; keys this short are not hashed by libp2p.
_MULTIHASH_PREFIX = bytes([0x00, 0x24])
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@dataclass(frozen=True, order=True)
class PublicKey:
    """A 32-byte Ed25519 public key."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != PUBLIC_KEY_SIZE:
            raise EnvelopeError(EnvelopeReason.BAD_KEY, "an Ed25519 public key is 32 bytes")

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True if ``signature`` is this key's signature of ``message``."""
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            nacl.signing.VerifyKey(self.raw).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True

    @functools.cached_property
    def peer_id(self) -> str:
        """The libp2p peer ID in its usual base58 text form (computed once: it names audio
        streams on the per-frame path)."""
        return _b58encode(_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX + self.raw)

    @functools.cached_property
    def fingerprint(self) -> str:
        """16 characters in four groups: short enough to read aloud, 80 bits to compare."""
        digest = hashlib.sha256(b"p2pvoix/fingerprint/v1\x00" + self.raw).digest()[:10]
        text = base64.b32encode(digest).decode().lower()
        return "-".join(text[i : i + 4] for i in range(0, 16, 4))

    @classmethod
    def from_peer_id(cls, peer_id: str) -> PublicKey:
        """The key inside an Ed25519 peer ID; raises ``EnvelopeError`` for anything else."""
        try:
            raw = _b58decode(peer_id)
        except ValueError as exc:
            raise EnvelopeError(EnvelopeReason.BAD_KEY, f"peer ID: {exc}") from None
        prefix = _MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX
        if len(raw) != len(prefix) + PUBLIC_KEY_SIZE or not raw.startswith(prefix):
            raise EnvelopeError(EnvelopeReason.BAD_KEY, "not an Ed25519 peer ID")
        return cls(raw[len(prefix) :])

    def __repr__(self) -> str:
        return f"PublicKey({self.peer_id})"


class SigningKey:
    """An Ed25519 private key made from a 32-byte seed."""

    __slots__ = ("_key", "public")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.public = PublicKey(bytes(self._key.verify_key))

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature

    def __repr__(self) -> str:  # never print the seed
        return f"SigningKey({self.public.peer_id})"


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_BASE58[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    if not isinstance(text, str) or not text or len(text) > 128:
        raise ValueError("empty or too long")
    number = 0
    for char in text:
        index = _BASE58.find(char)
        if index < 0:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + index
    pad = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * pad + body
