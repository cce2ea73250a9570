"""Room logs and states for fuzzing the authority: the vector log, and a state with every table full."""

from __future__ import annotations

from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.room import Accepted, RoomLog
from p2pvoix.room.state import Hand, Invitation, Replay, RoomState
from tests.fuzz import corpus


def vector_log() -> RoomLog:
    """A fresh log holding the genesis and the eight vector entries (owner sequencing, epoch 0)."""
    log = RoomLog(corpus.genesis())
    now = corpus.authority_time()
    for entry in corpus.entries():
        assert isinstance(log.receive(entry, now), Accepted)
    return log


def crowded_state(rows: int = 24) -> RoomState:
    """The vector log's state with ``rows`` more identities in every table (roles kept apart)."""
    state = vector_log().state.copy()
    people = [SigningKey(bytes([0x40, i]) * 16).public for i in range(rows * 4)]
    moderators, speakers, banned, audience = (people[i::4] for i in range(4))
    at = state.time_ms - 1000
    for n, key in enumerate(moderators, start=100):
        state.moderators[key] = n
    for n, key in enumerate(speakers, start=200):
        state.speakers[key] = n
        state.muted[key] = n % 2 == 0
    for n, key in enumerate(banned, start=300):
        state.banned[key] = n
    inviter: PublicKey = state.owner
    for n, key in enumerate(audience):
        state.invited[key] = Invitation(key, inviter, at + n)
        state.hands[key] = Hand(key, 400 + n, at + n)
        state.raises[key] = at + n
        state.replay[key] = Replay(at + n, at + n)
    return state
