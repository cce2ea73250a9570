"""What the node, the audio mesh and the relays ask of a room state: pure functions of it.

The media path calls ``may_play`` for every peer it would play or forward: a node plays and forwards
audio only from identities the log says are unmuted members of the stage of a live room.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room import permissions
from p2pvoix.room.ops import Op
from p2pvoix.room.reasons import RoomRejected
from p2pvoix.room.state import STAGE, Hand, Invitation, Role, RoomState
from p2pvoix.room.succession import seniority, succession_order

__all__ = [
    "StageMember", "can", "hand_queue", "invitations", "is_banned", "may_play", "role_of",
    "sequencer", "stage", "succession_order", "who_may_sequence",
]


@dataclass(frozen=True)
class StageMember:
    identity: PublicKey
    role: Role
    muted: bool
    locked: bool


def role_of(state: RoomState, identity: PublicKey) -> Role:
    return state.role_of(identity)


def is_banned(state: RoomState, identity: PublicKey) -> bool:
    return identity in state.banned


def may_play(state: RoomState, identity: PublicKey) -> bool:
    """May this peer's audio be played or forwarded now: an unmuted stage member, room live."""
    return (
        not state.ended
        and state.role_of(identity) in STAGE
        and identity not in state.muted
    )


def stage(state: RoomState) -> tuple[StageMember, ...]:
    """Owner, moderators by seniority, then speakers in the order they came up."""
    people = list(seniority(state))
    people += [who for who, _ in sorted(state.speakers.items(), key=lambda i: (i[1], i[0]))]
    return tuple(
        StageMember(who, state.role_of(who), who in state.muted, state.muted.get(who, False))
        for who in people
    )


def hand_queue(state: RoomState, now_ms: int) -> tuple[Hand, ...]:
    """Raised hands in arrival order (the log's order), without the expired ones."""
    return tuple(hand for who, hand in state.hands.items() if state.hand_active(who, now_ms))


def invitations(state: RoomState, now_ms: int) -> tuple[Invitation, ...]:
    return tuple(inv for who, inv in state.invited.items() if state.invitation_active(who, now_ms))


def sequencer(state: RoomState) -> PublicKey:
    return state.sequencer


def who_may_sequence(state: RoomState) -> tuple[PublicKey, ...]:
    """Whose entries may come next: the sequencer, then its successors (by takeover), in order."""
    return (state.sequencer, *succession_order(state))


def can(state: RoomState, actor: PublicKey, op: Op, target: PublicKey | None = None,
        now_ms: int | None = None) -> bool:
    """Would the table allow ``actor`` to ``op`` ``target`` now (ignoring the op's parameters)?"""
    at = state.time_ms if now_ms is None else now_ms
    if state.ended:
        return False
    try:
        permissions.check(state, permissions.Request(actor, op, target, at))
    except RoomRejected:
        return False
    return True
