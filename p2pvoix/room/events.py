"""What the room core tells the node and the UI, as frozen dataclasses.

Contract: the events returned by one call are exactly the change between the view before and the
view after (``view.fold(before, events) == view.view_of(state_after)``). Extending the head yields
each applied entry's events, with the acting identity in ``by``; switching branch (a fork resolved the
other way, or a checkpoint) yields ``Reorganized`` followed by the difference of the two views, where
``by`` is None because no single action caused it.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.room.state import Role, Settings


@dataclass(frozen=True)
class RoleChanged:
    """Any change of role, including to and from ``banned``."""

    identity: PublicKey
    old: Role
    new: Role
    by: PublicKey | None


@dataclass(frozen=True)
class Removed:
    """Drop this identity's connections now (``remove`` or ``ban``); its role change comes too."""

    identity: PublicKey
    by: PublicKey
    banned: bool


@dataclass(frozen=True)
class HandRaised:
    identity: PublicKey
    seq: int  # place in the queue: the queue is ordered by seq
    at_ms: int


@dataclass(frozen=True)
class HandLowered:
    identity: PublicKey
    by: PublicKey | None
    reason: str  # lowered | cleared | invited | removed | role | expired | reorganized


@dataclass(frozen=True)
class Invited:
    identity: PublicKey
    by: PublicKey
    at_ms: int


@dataclass(frozen=True)
class InviteAccepted:
    identity: PublicKey


@dataclass(frozen=True)
class InviteDeclined:
    identity: PublicKey


@dataclass(frozen=True)
class InviteCancelled:
    identity: PublicKey
    by: PublicKey | None
    reason: str  # cancelled | removed | role | expired | reorganized


@dataclass(frozen=True)
class Muted:
    """Muted, or a mute's lock changed."""

    identity: PublicKey
    locked: bool
    by: PublicKey | None


@dataclass(frozen=True)
class Unmuted:
    identity: PublicKey
    by: PublicKey | None


@dataclass(frozen=True)
class TitleChanged:
    title: str
    tags: tuple[str, ...]
    language: str
    by: PublicKey | None


@dataclass(frozen=True)
class SettingsChanged:
    settings: Settings
    by: PublicKey | None


@dataclass(frozen=True)
class RoomEnded:
    by: PublicKey | None


@dataclass(frozen=True)
class RoomReopened:
    """Only after ``Reorganized``: the branch that ended the room lost."""


@dataclass(frozen=True)
class AuthorityChanged:
    epoch: int
    sequencer: PublicKey
    reason: str  # takeover | handover | revoked | reorganized


@dataclass(frozen=True)
class Reorganized:
    """The head moved to another branch; the view-difference events follow.

    ``dropped`` holds the action envelopes that were in the abandoned branch and are not in the new
    one: the node re-submits them to the sequencer (they may still be valid).
    """

    old_head: bytes
    new_head: bytes
    fork_seq: int  # the last position both branches share
    dropped: tuple[bytes, ...]


RoomEvent = (
    RoleChanged | Removed | HandRaised | HandLowered | Invited | InviteAccepted | InviteDeclined
    | InviteCancelled | Muted | Unmuted | TitleChanged | SettingsChanged | RoomEnded | RoomReopened
    | AuthorityChanged | Reorganized
)
