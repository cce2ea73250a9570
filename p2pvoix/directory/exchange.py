"""The directory exchange: a new peer asks what live rooms we know (docs/protocol/discovery.md §5).

Gossip only carries announcements when hosts republish them, so a node that just joined would
wait up to a republish interval to see anything. Asking each newly connected peer for its
directory fills the list at once. The reply is untrusted: every announcement in it is verified
like any other before it enters the directory.
"""

from __future__ import annotations

from typing import Any

from p2pvoix.crypto import cbor
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.errors import Rejected

PROTOCOL = "/p2pvoix/directory/1.0.0"
MAX_ROOMS = 256
MAX_REPLY = MAX_ROOMS * 2048 + 64
REQUEST = cbor.encode({"v": 1})


class ExchangeReason:
    MALFORMED = "exchange-malformed"


def check_request(data: bytes) -> None:
    try:
        value: Any = cbor.decode(data, max_size=64)
    except EnvelopeError as exc:
        raise Rejected(ExchangeReason.MALFORMED, str(exc)) from None
    if not _version_1(value, {"v"}):
        raise Rejected(ExchangeReason.MALFORMED, "unknown request")


def encode_reply(announcements: list[bytes]) -> bytes:
    return cbor.encode({"v": 1, "rooms": announcements[:MAX_ROOMS]})


def decode_reply(data: bytes) -> list[bytes]:
    try:
        value: Any = cbor.decode(data, max_size=MAX_REPLY)
    except EnvelopeError as exc:
        raise Rejected(ExchangeReason.MALFORMED, str(exc)) from None
    rooms = value["rooms"] if _version_1(value, {"v", "rooms"}) else None
    if not isinstance(rooms, list) or len(rooms) > MAX_ROOMS:
        raise Rejected(ExchangeReason.MALFORMED, "not a room list")
    if not all(isinstance(item, bytes) and len(item) <= 2048 for item in rooms):
        raise Rejected(ExchangeReason.MALFORMED, "a room record is not bytes or too large")
    return rooms


def _version_1(value: Any, fields: set[str]) -> bool:
    """A map of exactly ``fields`` with ``"v": 1`` (``true`` equals 1 in Python, not on the wire)."""
    return (isinstance(value, dict) and set(value) == fields
            and type(value["v"]) is int and value["v"] == 1)
