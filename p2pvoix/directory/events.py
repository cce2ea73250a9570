"""What the directory tells its owner (the node, `p2pvoix rooms --watch`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from p2pvoix.crypto.keys import PublicKey


class Source(StrEnum):
    """Where a room announcement was seen."""

    GOSSIP = "gossip"
    DHT = "dht"
    LAN = "lan"


@dataclass(frozen=True)
class Listing:
    """A live room as the directory knows it."""

    room: PublicKey
    title: str
    tags: tuple[str, ...]
    lang: str
    host_peer_id: str
    host_name: str
    addrs: tuple[str, ...]
    speakers: int
    listeners: int
    seen_via: frozenset[Source]
    announced_ms: int
    expires_ms: int


@dataclass(frozen=True)
class RoomAppeared:
    listing: Listing


@dataclass(frozen=True)
class RoomUpdated:
    listing: Listing


@dataclass(frozen=True)
class RoomGone:
    room: PublicKey
    title: str
    reason: str  # "ended" or "expired"


DirectoryEvent = RoomAppeared | RoomUpdated | RoomGone
