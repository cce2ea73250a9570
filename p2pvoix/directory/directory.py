"""The directory of live rooms, merged from gossip, the DHT and the LAN.

One entry per room key: the newest valid announcement wins (by its signed time, then digest, so
every node picks the same one), each entry remembers every source that delivered it, entries leave
when their announcement expires or the host announces the end, and an end is remembered until it
expires so a late copy of an older announcement cannot bring the room back. Records are verified
before anything enters; refusals are counted per reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PublicKey
from p2pvoix.directory.events import (
    DirectoryEvent,
    Listing,
    RoomAppeared,
    RoomGone,
    RoomUpdated,
    Source,
)
from p2pvoix.directory.records import Announcement, verify_announcement
from p2pvoix.errors import Rejected, RejectionCounter

STALE = "announce-stale"


@dataclass
class _Entry:
    announcement: Announcement
    seen_via: set[Source]


class Directory:
    """Live rooms; ``now_ms`` is passed into every call."""

    def __init__(self, max_rooms: int = 10_000) -> None:
        self.max_rooms = max_rooms
        self.rejections = RejectionCounter()
        self._rooms: dict[PublicKey, _Entry] = {}
        self._ended: dict[PublicKey, Announcement] = {}  # tombstones until they expire

    def offer(self, data: bytes, source: Source, now_ms: int) -> list[DirectoryEvent]:
        """Take a record from ``source``; returns what changed (nothing if it was refused)."""
        try:
            announcement = verify_announcement(data, now_ms)
        except (Rejected, EnvelopeError) as exc:
            self.rejections.count(exc.reason)
            return []
        return self._merge(announcement, source, now_ms)

    def expire(self, now_ms: int) -> list[DirectoryEvent]:
        events: list[DirectoryEvent] = []
        for room, entry in list(self._rooms.items()):
            if entry.announcement.expires_ms <= now_ms:
                del self._rooms[room]
                events.append(RoomGone(room, entry.announcement.title, "expired"))
        for room, tombstone in list(self._ended.items()):
            if tombstone.expires_ms <= now_ms:
                del self._ended[room]
        return events

    def get(self, room: PublicKey) -> Listing | None:
        entry = self._rooms.get(room)
        return _listing(entry) if entry else None

    def announcement(self, room: PublicKey) -> Announcement | None:
        entry = self._rooms.get(room)
        return entry.announcement if entry else None

    def rooms(
        self,
        now_ms: int,
        *,
        topic: str | None = None,
        lang: str | None = None,
        sources: frozenset[Source] | None = None,
    ) -> list[Listing]:
        """Live rooms matching the filters, busiest first."""
        found = [
            _listing(entry) for entry in self._rooms.values()
            if entry.announcement.expires_ms > now_ms
        ]
        found = [listing for listing in found if matches(listing, topic, lang, sources)]
        return sorted(found, key=lambda listing: (-listing.listeners, listing.title, listing.room))

    def __len__(self) -> int:
        return len(self._rooms)

    def _merge(self, ann: Announcement, source: Source, now_ms: int) -> list[DirectoryEvent]:
        tombstone = self._ended.get(ann.room)
        if tombstone is not None and not ann.newer_than(tombstone):
            self.rejections.count(STALE)
            return []
        entry = self._rooms.get(ann.room)
        if ann.ended:
            self._ended[ann.room] = ann
            if entry is None or entry.announcement.newer_than(ann):
                return []
            del self._rooms[ann.room]
            return [RoomGone(ann.room, entry.announcement.title, "ended")]
        if entry is None:
            self._rooms[ann.room] = _Entry(ann, {source})
            events: list[DirectoryEvent] = [RoomAppeared(_listing(self._rooms[ann.room]))]
            return events + self._evict(now_ms)
        changed = source not in entry.seen_via
        entry.seen_via.add(source)
        if ann.newer_than(entry.announcement):
            changed = changed or ann.encoded != entry.announcement.encoded
            entry.announcement = ann
        return [RoomUpdated(_listing(entry))] if changed else []

    def _evict(self, now_ms: int) -> list[DirectoryEvent]:
        """Over capacity, drop the rooms whose announcements expire soonest."""
        events = self.expire(now_ms)
        while len(self._rooms) > self.max_rooms:
            room = min(self._rooms, key=lambda r: self._rooms[r].announcement.expires_ms)
            entry = self._rooms.pop(room)
            events.append(RoomGone(room, entry.announcement.title, "expired"))
        return events


def _listing(entry: _Entry) -> Listing:
    ann = entry.announcement
    return Listing(
        room=ann.room,
        title=ann.title,
        tags=ann.tags,
        lang=ann.lang,
        host_peer_id=ann.host.peer_id,
        host_name=ann.host_name,
        addrs=ann.addrs,
        speakers=ann.speakers,
        listeners=ann.listeners,
        seen_via=frozenset(entry.seen_via),
        announced_ms=ann.time_ms,
        expires_ms=ann.expires_ms,
    )


def matches(
    listing: Listing,
    topic: str | None = None,
    lang: str | None = None,
    sources: frozenset[Source] | None = None,
) -> bool:
    """Whether ``listing`` passes the filters of ``p2pvoix rooms``."""
    if topic is not None and topic.casefold() not in {t.casefold() for t in listing.tags}:
        return False
    if lang is not None and not _same_language(listing.lang, lang):
        return False
    return sources is None or bool(listing.seen_via & sources)


def _same_language(have: str, want: str) -> bool:
    """``fr`` matches ``fr-MA``; comparison ignores case (BCP 47 tags are case-insensitive)."""
    have, want = have.casefold(), want.casefold()
    return have == want or have.startswith(want + "-")
