"""The room's authoritative state: who holds which role, the hand queue, mutes, bans, authority.

Only identities with a non-default status appear: plain listeners are audience by default and their
presence is gossip, not log (a room with thousands of listeners must not grow its log with them).
``RoomState`` is mutable so that applying an entry to the head costs O(1); everything outside
``transitions`` treats it as read-only, and ``copy()`` is what a fork or a cache takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from p2pvoix.crypto.keys import PublicKey


class Role(StrEnum):
    OWNER = "owner"
    MODERATOR = "moderator"
    SPEAKER = "speaker"
    AUDIENCE = "audience"  # the default: anyone the state does not name
    BANNED = "banned"


STAFF = frozenset({Role.OWNER, Role.MODERATOR})  # may sequence, take over, moderate
STAGE = frozenset({Role.OWNER, Role.MODERATOR, Role.SPEAKER})  # may be heard


@dataclass(frozen=True)
class Settings:
    """What the owner chose at creation; moderators may change it later (see the permission table)."""

    hands: bool = True  # hand raising open
    max_speakers: int = 12  # speakers only: the owner and moderators are on stage on top of this
    mods_appoint: bool = False  # moderators may promote speakers to moderator
    hand_interval_ms: int = 30_000  # at least this long between two raises by one identity
    hand_ttl_ms: int = 600_000  # a raised hand drops out of the queue after this long
    invite_ttl_ms: int = 300_000  # an unanswered invitation to speak lapses after this long

    def to_wire(self) -> dict[str, Any]:
        return {
            "hands": self.hands,
            "max_speakers": self.max_speakers,
            "mods_appoint": self.mods_appoint,
            "hand_interval_ms": self.hand_interval_ms,
            "hand_ttl_ms": self.hand_ttl_ms,
            "invite_ttl_ms": self.invite_ttl_ms,
        }

    @classmethod
    def from_wire(cls, value: dict[str, Any]) -> Settings:
        """Build from a map already checked against ``wire.SETTINGS_SCHEMA``."""
        return cls(**value)


DEFAULT_SETTINGS = Settings()


@dataclass(frozen=True)
class Hand:
    """A raised hand; ``seq`` (the entry that raised it) is its place in the queue."""

    identity: PublicKey
    seq: int
    at_ms: int  # the including entry's time: expiry and rate limits use the log's clock


@dataclass(frozen=True)
class Invitation:
    identity: PublicKey
    by: PublicKey
    at_ms: int


@dataclass(frozen=True)
class Replay:
    """An actor's newest included action time, and when the log included it (for pruning)."""

    last_ms: int
    included_ms: int


@dataclass(eq=False)
class RoomState:
    """The state after entry ``seq`` (0: the genesis). Compare states with ``state_digest``."""

    room: bytes
    genesis: bytes
    owner: PublicKey
    created_ms: int
    title: str
    tags: tuple[str, ...]
    language: str
    settings: Settings
    seq: int
    head: bytes  # digest of entry ``seq`` (the genesis digest at 0)
    time_ms: int  # time of entry ``seq``: the log's clock, never going backwards
    epoch: int
    sequencer: PublicKey
    ended: bool = False
    moderators: dict[PublicKey, int] = field(default_factory=dict)  # -> seq that appointed them
    speakers: dict[PublicKey, int] = field(default_factory=dict)  # -> seq that made them speak
    muted: dict[PublicKey, bool] = field(default_factory=dict)  # stage member -> mute locked
    invited: dict[PublicKey, Invitation] = field(default_factory=dict)  # in invitation order
    hands: dict[PublicKey, Hand] = field(default_factory=dict)  # in queue order
    raises: dict[PublicKey, int] = field(default_factory=dict)  # last raise time, oldest first
    banned: dict[PublicKey, int] = field(default_factory=dict)  # -> seq of the ban
    replay: dict[PublicKey, Replay] = field(default_factory=dict)  # oldest inclusion first

    def copy(self) -> RoomState:
        return replace(
            self,
            moderators=dict(self.moderators),
            speakers=dict(self.speakers),
            muted=dict(self.muted),
            invited=dict(self.invited),
            hands=dict(self.hands),
            raises=dict(self.raises),
            banned=dict(self.banned),
            replay=dict(self.replay),
        )

    def role_of(self, identity: PublicKey) -> Role:
        if identity == self.owner:
            return Role.OWNER
        if identity in self.banned:
            return Role.BANNED
        if identity in self.moderators:
            return Role.MODERATOR
        if identity in self.speakers:
            return Role.SPEAKER
        return Role.AUDIENCE

    def rank(self, identity: PublicKey) -> int | None:
        """Seniority among staff, lower is senior: the owner 0, a moderator the seq that appointed
        them (unique: one appointment per entry); ``None`` for anyone else."""
        if identity == self.owner:
            return 0
        return self.moderators.get(identity)

    def hand_active(self, identity: PublicKey, at_ms: int) -> bool:
        hand = self.hands.get(identity)
        return hand is not None and hand.at_ms + self.settings.hand_ttl_ms > at_ms

    def invitation_active(self, identity: PublicKey, at_ms: int) -> bool:
        invitation = self.invited.get(identity)
        return invitation is not None and invitation.at_ms + self.settings.invite_ttl_ms > at_ms
