"""Why the room core refuses a message: one stable code per cause (docs/protocol/authority.md).

Every refusal of remote input is a ``RoomRejected`` carrying one of these codes. The boundary that
receives it (``RoomLog``, ``Sequencer``) counts it in a ``RejectionCounter`` and returns it; the state
is left exactly as it was.
"""

from __future__ import annotations

from enum import StrEnum

from p2pvoix.crypto.errors import EnvelopeError, EnvelopeReason
from p2pvoix.errors import Rejected


class RoomReason(StrEnum):
    """Rejection codes; the text values are part of the protocol and of the node's counters."""

    FORGED = "forged"  # a signature or key that does not verify, or the wrong signer for the kind
    MALFORMED = "malformed"  # not a well-formed message of a room kind, or an op's wrong parameters
    OVERSIZED = "oversized"
    WRONG_ROOM = "wrong-room"  # signed for another room
    UNKNOWN_OP = "unknown-op"
    NOT_PERMITTED = "not-permitted"  # the permission table says no
    BANNED = "banned"  # the actor is banned from this room
    REPLAYED = "replayed"  # an action no newer than the actor's last included action
    STALE = "stale"  # an action signed too long before the entry (or submission) that carries it
    FUTURE = "future"  # a time too far ahead of the including entry or of our clock
    RATE_LIMITED = "rate-limited"
    HANDS_CLOSED = "hands-closed"
    STAGE_FULL = "stage-full"
    MUTE_LOCKED = "mute-locked"
    NO_CHANGE = "no-change"  # the action would change nothing (hand already up, already muted…)
    ROOM_ENDED = "room-ended"
    NOT_SEQUENCER = "not-sequencer"  # an ordinary entry not signed by the current sequencer
    BAD_TAKEOVER = "bad-takeover"  # a takeover by the wrong successor, or too early
    OUT_OF_SEQUENCE = "out-of-sequence"  # wrong position for its parent, or time going backwards
    UNKNOWN_PARENT = "unknown-parent"  # its parent was refused, or too many entries wait for theirs
    DUPLICATE = "duplicate"  # already stored; harmless, counted to size gossip overhead
    BEFORE_CHECKPOINT = "before-checkpoint"  # at or below the checkpoint this node builds on
    BAD_CHECKPOINT = "bad-checkpoint"  # unreadable snapshot, or one that contradicts the entries
    SUPERSEDED = "superseded"  # a valid checkpoint older than the one this node builds on


class RoomRejected(Rejected):
    """A peer's room message was refused for ``reason``."""

    def __init__(self, reason: RoomReason, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.code = reason


_FROM_ENVELOPE = {
    EnvelopeReason.TOO_LARGE: RoomReason.OVERSIZED,
    EnvelopeReason.BAD_KEY: RoomReason.FORGED,
    EnvelopeReason.BAD_SIGNATURE: RoomReason.FORGED,
    EnvelopeReason.WRONG_SIGNER: RoomReason.FORGED,
    EnvelopeReason.WRONG_ROOM: RoomReason.WRONG_ROOM,
}


def from_envelope_error(error: EnvelopeError) -> RoomRejected:
    """The room code for an envelope failure; the envelope's own code stays in the detail."""
    reason = _FROM_ENVELOPE.get(EnvelopeReason(error.reason), RoomReason.MALFORMED)
    detail = f"{error.reason}: {error.detail}" if error.detail else error.reason
    return RoomRejected(reason, detail)
