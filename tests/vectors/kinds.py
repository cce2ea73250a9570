"""Message kinds used by the crypto test vectors (a test kind, and the real profile kind)."""

from p2pvoix.crypto.envelope import KindSpec
from p2pvoix.crypto.schema import Int, Schema, Text
from p2pvoix.identity.profile import PROFILE

NOTE = KindSpec(
    name="test.note",
    body=Schema(required={"text": Text(max=200), "n": Int()}),
    room=True,
    time=True,
    max_size=1024,
)

__all__ = ["NOTE", "PROFILE"]
