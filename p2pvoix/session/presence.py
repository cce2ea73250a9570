"""Who is in a room right now (docs/protocol/session.md §3).

Presence is not in the authority log — thousands of listeners coming and going must not grow it.
Each participant signs a small ``room.presence`` record (name, dial addresses, relay capacity) and
gossips it when it arrives, every ``refresh_ms`` while it stays and once more when it leaves. The
roster keeps the newest record per identity and forgets one that has not been refreshed within
its ``ttl``: a node that vanished without saying goodbye leaves the roster by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pvoix.crypto.envelope import Envelope, KindSpec, open_envelope, seal
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.schema import Bool, Int, ListOf, OneOf, Schema, Text
from p2pvoix.errors import Rejected

REFRESH_MS = 10_000
TTL_MS = 30_000
MAX_CLOCK_SKEW_MS = 30_000
# Every member's refresh reaches every member: a room of N refreshing every 10 s makes each node
# verify N/10 records a second (20 at 200 listeners, 800 at 8,000). The audience spaces its
# refreshes so that the room's total stays near one record per AUDIENCE_SPACING_MS (each arrives
# about three times, as gossip duplicates; docs/protocol/session.md §3)...
AUDIENCE_SPACING_MS = 500
MAX_REFRESH_MS = 200_000  # ... up to this: a record's ttl is three refreshes, at most 600 s
LIVES_FOR_REFRESHES = 3

PRESENCE = KindSpec(
    name="room.presence",
    body=Schema(
        required={
            "name": Text(max=64),
            "state": OneOf(("here", "left")),
            "addrs": ListOf(Text(min=1, max=160), max=8),
            "relay": Int(max=1000),  # how many children this node offers to feed (relay trees)
            "ttl": Int(min=1000, max=600_000),
        },
        # turn: this node has a TURN server, so any peer reaches it for media (relay trees)
        optional={"reach": OneOf(("public", "nat", "symmetric", "unknown")), "turn": Bool()},
    ),
    room=True,
    time=True,
    max_size=1536,
)


def refresh_ms(audience: int, on_stage: bool) -> int:
    """How often a member re-announces itself. The stage keeps ``REFRESH_MS`` (a silent
    sequencer is taken over after 15 s); a listener waits longer as the audience grows."""
    if on_stage:
        return REFRESH_MS
    return min(MAX_REFRESH_MS, max(REFRESH_MS, audience * AUDIENCE_SPACING_MS))


@dataclass(frozen=True)
class Presence:
    identity: PublicKey
    name: str
    here: bool
    addrs: tuple[str, ...]
    relay_slots: int
    reach: str
    turn: bool
    time_ms: int
    ttl_ms: int
    envelope: Envelope

    @property
    def expires_ms(self) -> int:
        return self.time_ms + self.ttl_ms


@dataclass(frozen=True)
class ParticipantJoined:
    identity: PublicKey
    name: str


@dataclass(frozen=True)
class ParticipantUpdated:
    identity: PublicKey
    name: str


@dataclass(frozen=True)
class ParticipantLeft:
    identity: PublicKey
    name: str
    reason: str  # "left" or "timeout"


PresenceEvent = ParticipantJoined | ParticipantUpdated | ParticipantLeft


def sign_presence(
    key: SigningKey,
    room: bytes,
    *,
    name: str,
    now_ms: int,
    here: bool = True,
    addrs: tuple[str, ...] = (),
    relay_slots: int = 0,
    reach: str = "unknown",
    turn: bool = False,
    ttl_ms: int = TTL_MS,
) -> Presence:
    body = {
        "name": name,
        "state": "here" if here else "left",
        "addrs": list(addrs[:8]),
        "relay": relay_slots,
        "ttl": ttl_ms,
        "reach": reach,
    }
    if turn:  # absent rather than false: records of nodes without TURN stay as they were
        body["turn"] = True
    return _from_envelope(seal(PRESENCE, key, body, room=room, time=now_ms))


def verify_presence(data: bytes, room: bytes, now_ms: int) -> Presence:
    return presence_of(open_envelope(data, PRESENCE, room=room), now_ms)


def presence_of(envelope: Envelope, now_ms: int) -> Presence:
    """The presence in an envelope already opened (signature and room checked) as one: the
    room topic's handler opens each message once to learn its kind, and decoding is most of what
    a presence costs."""
    if envelope.kind != PRESENCE.name:
        raise Rejected("not-a-presence")
    presence = _from_envelope(envelope)
    if presence.time_ms > now_ms + MAX_CLOCK_SKEW_MS:
        raise Rejected("presence-from-future")
    if presence.here and presence.expires_ms <= now_ms:
        raise Rejected("presence-expired")
    return presence


class Roster:
    """The latest presence of everyone in the room; ``now_ms`` is passed in."""

    def __init__(self, room: bytes, me: PublicKey, max_size: int = 100_000) -> None:
        self.room = room
        self.me = me
        self.max_size = max_size
        self._people: dict[PublicKey, Presence] = {}
        self._left: dict[PublicKey, int] = {}  # identity -> time of its goodbye

    def update(self, presence: Presence) -> list[PresenceEvent]:
        """Take a verified presence record; returns what changed (nothing for an old record)."""
        who = presence.identity
        current = self._people.get(who)
        if current is not None and presence.time_ms <= current.time_ms:
            return []
        if self._left.get(who, -1) >= presence.time_ms:
            return []
        if not presence.here:
            self._left[who] = presence.time_ms
            if current is None:
                return []
            del self._people[who]
            return [ParticipantLeft(who, current.name, "left")]
        self._left.pop(who, None)
        if current is None and len(self._people) >= self.max_size:
            return []
        self._people[who] = presence
        if current is None:
            return [ParticipantJoined(who, presence.name)]
        if current.name != presence.name:
            return [ParticipantUpdated(who, presence.name)]
        return []

    def remove(self, identity: PublicKey, reason: str) -> list[PresenceEvent]:
        """Forget ``identity`` now (removed or banned by a moderator, or its links died)."""
        current = self._people.pop(identity, None)
        return [ParticipantLeft(identity, current.name, reason)] if current else []

    def expire(self, now_ms: int) -> list[PresenceEvent]:
        events: list[PresenceEvent] = []
        for who, presence in list(self._people.items()):
            if presence.expires_ms <= now_ms and who != self.me:
                del self._people[who]
                events.append(ParticipantLeft(who, presence.name, "timeout"))
        for who, at in list(self._left.items()):
            # As long as any "here" record signed before the goodbye may still be valid.
            if at + MAX_REFRESH_MS * LIVES_FOR_REFRESHES <= now_ms:
                del self._left[who]
        return events

    def get(self, identity: PublicKey) -> Presence | None:
        return self._people.get(identity)

    def present(self) -> list[Presence]:
        return list(self._people.values())

    def name_of(self, identity: PublicKey) -> str:
        presence = self._people.get(identity)
        return presence.name if presence else f"anon-{identity.fingerprint[:4]}"

    def __contains__(self, identity: object) -> bool:
        return identity in self._people

    def __len__(self) -> int:
        return len(self._people)


def _from_envelope(envelope: Envelope) -> Presence:
    body = envelope.body
    assert envelope.time is not None
    return Presence(
        identity=envelope.signer,
        name=body["name"],
        here=body["state"] == "here",
        addrs=tuple(body["addrs"]),
        relay_slots=body["relay"],
        reach=body.get("reach", "unknown"),
        turn=body.get("turn", False),
        time_ms=envelope.time,
        ttl_ms=body["ttl"],
        envelope=envelope,
    )
