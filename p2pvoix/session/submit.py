"""Submitting an action to the sequencer (docs/protocol/session.md §5).

Actions could travel by gossip alone, but a direct request gives the actor an answer — the new
entry, or why it was refused — so a user sees "not permitted" instead of silence. The request is
the signed action itself; the reply says whether it was sequenced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pvoix.crypto import cbor
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.errors import Rejected

PROTOCOL = "/p2pvoix/act/1.0.0"
MAX_REPLY = 4096


@dataclass(frozen=True)
class SubmitReply:
    ok: bool
    reason: str  # empty when ok; a room reason code otherwise, or "not-sequencer"
    entry: bytes | None  # the entry that includes the action, when ok
    sequencer: bytes | None = None  # who to ask instead, when this node is not the sequencer


def encode_reply(reply: SubmitReply) -> bytes:
    return cbor.encode({"ok": reply.ok, "reason": reply.reason, "entry": reply.entry,
                        "seq": reply.sequencer})


def decode_reply(data: bytes) -> SubmitReply:
    try:
        value: Any = cbor.decode(data, max_size=MAX_REPLY)
    except EnvelopeError as exc:
        raise Rejected("submit-malformed", exc.reason) from None
    if not isinstance(value, dict) or set(value) != {"ok", "reason", "entry", "seq"}:
        raise Rejected("submit-malformed", "fields")
    ok, reason, entry, sequencer = value["ok"], value["reason"], value["entry"], value["seq"]
    if not isinstance(ok, bool) or not isinstance(reason, str) or len(reason) > 64:
        raise Rejected("submit-malformed", "ok or reason")
    if entry is not None and not isinstance(entry, bytes):
        raise Rejected("submit-malformed", "entry")
    if sequencer is not None and (not isinstance(sequencer, bytes) or len(sequencer) != 32):
        raise Rejected("submit-malformed", "sequencer")
    return SubmitReply(ok, reason, entry, sequencer)
