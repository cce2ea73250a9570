"""Room sync: how a joining node gets the room's state from any peer (docs/protocol/session.md §2).

The reply is not trusted as a whole: the genesis must be signed by the room key the joiner already
has, the checkpoint by the same key, and every entry and presence record by its signer; the joiner
feeds them to its own log and roster, which verify everything again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pvoix.crypto import cbor
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.errors import Rejected

PROTOCOL = "/p2pvoix/sync/1.0.0"
MAX_ENTRIES = 2000
MAX_PRESENCE = 2000
MAX_REPLY = 2 * 1024 * 1024 - 64
_DIGEST = 32


class SyncReason:
    MALFORMED = "sync-malformed"


@dataclass(frozen=True)
class SyncRequest:
    after: bytes | None  # digest of the last entry the asker has, or None for everything
    # False: reply without presence records (catching up with the sequencer wants entries only;
    # a roster runs to 2000 records, and every joiner resyncs twice with that one node)
    roster: bool = True


@dataclass(frozen=True)
class SyncReply:
    genesis: bytes
    checkpoint: bytes | None
    entries: tuple[bytes, ...]
    presence: tuple[bytes, ...]
    more: bool  # entries were cut at MAX_ENTRIES: ask again after the last one


def encode_request(request: SyncRequest) -> bytes:
    value: dict[str, Any] = {"v": 1}
    if request.after is not None:
        value["after"] = request.after
    if not request.roster:
        value["roster"] = False
    return cbor.encode(value)


def decode_request(data: bytes) -> SyncRequest:
    value = _decode(data, 128)
    after = value.get("after")
    if set(value) - {"v", "after", "roster"} or not _version_1(value.get("v")):
        raise Rejected(SyncReason.MALFORMED, "unknown request fields or version")
    if after is not None and (not isinstance(after, bytes) or len(after) != _DIGEST):
        raise Rejected(SyncReason.MALFORMED, "after is not a digest")
    if "roster" in value and value["roster"] is not False:
        raise Rejected(SyncReason.MALFORMED, "roster, when present, is false")
    return SyncRequest(after, roster="roster" not in value)


def encode_reply(reply: SyncReply) -> bytes:
    return cbor.encode({
        "v": 1,
        "genesis": reply.genesis,
        "checkpoint": reply.checkpoint,
        "entries": list(reply.entries[:MAX_ENTRIES]),
        "presence": list(reply.presence[:MAX_PRESENCE]),
        "more": reply.more or len(reply.entries) > MAX_ENTRIES,
    })


def decode_reply(data: bytes) -> SyncReply:
    value = _decode(data, MAX_REPLY)
    if set(value) != {"v", "genesis", "checkpoint", "entries", "presence", "more"} or \
            not _version_1(value["v"]):
        raise Rejected(SyncReason.MALFORMED, "unknown reply fields or version")
    genesis, checkpoint = value["genesis"], value["checkpoint"]
    entries, presence, more = value["entries"], value["presence"], value["more"]
    if not isinstance(genesis, bytes) or not (checkpoint is None or isinstance(checkpoint, bytes)):
        raise Rejected(SyncReason.MALFORMED, "genesis or checkpoint")
    for items, limit in ((entries, MAX_ENTRIES), (presence, MAX_PRESENCE)):
        if not isinstance(items, list) or len(items) > limit or \
                not all(isinstance(item, bytes) for item in items):
            raise Rejected(SyncReason.MALFORMED, "entries or presence")
    if not isinstance(more, bool):
        raise Rejected(SyncReason.MALFORMED, "more")
    return SyncReply(genesis, checkpoint, tuple(entries), tuple(presence), more)


def _decode(data: bytes, max_size: int) -> dict[str, Any]:
    try:
        value = cbor.decode(data, max_size=max_size)
    except EnvelopeError as exc:
        raise Rejected(SyncReason.MALFORMED, f"{exc.reason}: {exc.detail}") from None
    if not isinstance(value, dict):
        raise Rejected(SyncReason.MALFORMED, "not a map")
    return value


def _version_1(v: Any) -> bool:
    """Version 1 exactly: CBOR true is not 1 (Python's True == 1 would let it pass)."""
    return type(v) is int and v == 1
