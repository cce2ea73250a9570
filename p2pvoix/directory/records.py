"""The signed room announcement: one record for the DHT, gossip and the LAN (docs/protocol/discovery.md).

An announcement is a ``room.announce`` envelope signed by the **room key itself**, so anyone holding
the room key (the text people paste) can check it, and nobody but the room's host can publish one.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from enum import StrEnum

from p2pvoix.crypto.envelope import Envelope, KindSpec, open_envelope, seal
from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.schema import Bool, Bytes, Int, ListOf, Schema, Text
from p2pvoix.errors import Rejected

DHT_NAMESPACE = "p2pvoix"
MAX_TTL_MS = 60 * 60 * 1000
MIN_TTL_MS = 1000
# A record may come from a clock a little ahead of ours; further ahead is a forgery or a broken clock.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000

ANNOUNCE = KindSpec(
    name="room.announce",
    body=Schema(
        required={
            "title": Text(min=1, max=100),
            "tags": ListOf(Text(min=1, max=24), max=5, unique=True),
            "lang": Text(max=16),
            "host": Bytes(size=32),
            "host_name": Text(max=64),
            "addrs": ListOf(Text(min=1, max=160), max=8),
            "speakers": Int(max=10_000),
            "listeners": Int(max=10_000_000),
            "ttl": Int(min=MIN_TTL_MS, max=MAX_TTL_MS),
        },
        optional={"ended": Bool()},
    ),
    room=True,
    time=True,
    max_size=2048,
)


class RecordReason(StrEnum):
    NOT_ROOM_KEY = "announce-not-signed-by-room"
    EXPIRED = "announce-expired"
    FROM_FUTURE = "announce-from-future"
    WRONG_DHT_KEY = "announce-wrong-dht-key"


@dataclass(frozen=True)
class Announcement:
    """A verified room announcement."""

    room: PublicKey
    title: str
    tags: tuple[str, ...]
    lang: str
    host: PublicKey
    host_name: str
    addrs: tuple[str, ...]
    speakers: int
    listeners: int
    time_ms: int
    ttl_ms: int
    ended: bool
    envelope: Envelope

    @property
    def expires_ms(self) -> int:
        return self.time_ms + self.ttl_ms

    @property
    def encoded(self) -> bytes:
        return self.envelope.encoded

    def newer_than(self, other: Announcement) -> bool:
        """The order every node uses to pick one announcement: later time, then larger digest."""
        return (self.time_ms, self.envelope.digest) > (other.time_ms, other.envelope.digest)


def announce(
    room_key: SigningKey,
    *,
    title: str,
    host: PublicKey,
    host_name: str,
    addrs: list[str],
    now_ms: int,
    ttl_ms: int,
    tags: tuple[str, ...] = (),
    lang: str = "",
    speakers: int = 0,
    listeners: int = 0,
    ended: bool = False,
) -> Announcement:
    """Sign an announcement of the room whose private key is ``room_key``."""
    body = {
        "title": title,
        "tags": list(tags),
        "lang": lang,
        "host": host.raw,
        "host_name": host_name,
        "addrs": list(addrs)[:8],
        "speakers": speakers,
        "listeners": listeners,
        "ttl": ttl_ms,
    }
    if ended:
        body["ended"] = True
    envelope = seal(ANNOUNCE, room_key, body, room=room_key.public.raw, time=now_ms)
    return _from_envelope(envelope)


def verify_announcement(data: bytes, now_ms: int, room: bytes | None = None) -> Announcement:
    """Decode and check an announcement received from anywhere; raises ``Rejected``."""
    envelope = open_envelope(data, ANNOUNCE, room=room)
    if envelope.signer.raw != envelope.room:
        raise Rejected(RecordReason.NOT_ROOM_KEY, "signed by someone other than the room key")
    announcement = _from_envelope(envelope)
    if announcement.time_ms > now_ms + MAX_CLOCK_SKEW_MS:
        raise Rejected(RecordReason.FROM_FUTURE, f"{announcement.time_ms - now_ms} ms ahead")
    if announcement.expires_ms <= now_ms:
        raise Rejected(RecordReason.EXPIRED, f"expired {now_ms - announcement.expires_ms} ms ago")
    return announcement


def dht_key(room: PublicKey) -> str:
    """``/p2pvoix/<26 base32 chars>``: 35 bytes, under libp2p's 50-byte limit for routable keys."""
    digest = hashlib.sha256(b"p2pvoix/dht-room/v1\x00" + room.raw).digest()[:16]
    return f"/{DHT_NAMESPACE}/" + base64.b32encode(digest).decode().rstrip("=").lower()


def verify_dht_record(key: str, data: bytes, now_ms: int) -> Announcement:
    """What the DHT validator runs on put, get and on every node that stores the record."""
    announcement = verify_announcement(data, now_ms)
    if dht_key(announcement.room) != key:
        raise Rejected(RecordReason.WRONG_DHT_KEY, "record stored under another room's key")
    return announcement


def select_newest(records: list[bytes], now_ms: int) -> int:
    """Index of the newest valid record (the DHT's ``select``); invalid ones never win."""
    best_index, best = 0, None
    for index, data in enumerate(records):
        try:
            candidate = verify_announcement(data, now_ms)
        except (Rejected, EnvelopeError):
            continue
        if best is None or candidate.newer_than(best):
            best_index, best = index, candidate
    return best_index


def _from_envelope(envelope: Envelope) -> Announcement:
    body = envelope.body
    assert envelope.room is not None and envelope.time is not None  # ANNOUNCE is room-bound, timed
    return Announcement(
        room=PublicKey(envelope.room),
        title=body["title"],
        tags=tuple(body["tags"]),
        lang=body["lang"],
        host=PublicKey(body["host"]),
        host_name=body["host_name"],
        addrs=tuple(body["addrs"]),
        speakers=body["speakers"],
        listeners=body["listeners"],
        time_ms=envelope.time,
        ttl_ms=body["ttl"],
        ended=body.get("ended", False),
        envelope=envelope,
    )
