"""Which audio a node plays and forwards: the room's authority applied to every frame.

Pure: frames and ``now_ms`` in, actions out. Every node — listener, relay or speaker — runs the
same rules, so audio from someone the room state does not allow on stage is dropped at the first
node that receives it, not only at the leaves.

Links have a role. ``STAGE`` links join speakers and moderators in a full mesh and carry only the
peer's own voice. ``PARENT`` links bring audio down to us; ``CHILD`` links take it further down.
In ``MESH`` mode each stage node sends its own voice straight to every listener (a listener has one
parent per speaker, each carrying only that speaker); in ``TREE`` mode a listener has one parent
that forwards every speaker, and nodes forward what they hear to their children.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from p2pvoix.crypto.keys import PublicKey
from p2pvoix.errors import Rejected, RejectionCounter
from p2pvoix.mesh import wire

# Speakers send 50 frames a second. The burst allowance (2 s of audio) absorbs what is legitimate:
# a link's queued frames released at once when it comes up, a sender catching up after a stall.
FRAME_RATE = 50
BURST_FRAMES = 100
DEDUP_WINDOW = 512  # frames (about 10 s): longer than any path difference during a parent switch


class Mode(StrEnum):
    MESH = "mesh"
    TREE = "tree"


class LinkRole(StrEnum):
    STAGE = "stage"
    PARENT = "parent"
    CHILD = "child"
    STANDBY = "standby"  # a child whose backup parent we are: it is fed only once it asks


class DropReason(StrEnum):
    UNKNOWN_LINK = "unknown-link"
    NOT_AUDIBLE = "not-audible"  # not a speaker, muted, removed, banned, or unknown tag
    OWN_AUDIO = "own-audio"
    NOT_THE_PEERS_VOICE = "not-the-peers-voice"  # a stage/mesh link relaying someone else
    FROM_CHILD = "audio-from-child"
    RATE = "over-rate"


@dataclass(frozen=True)
class LinkInfo:
    role: LinkRole
    peer: PublicKey
    # A tree link between two stage members (one was promoted while hanging from the other):
    # it stays a tree link, so the promoted node keeps hearing every voice through it while its
    # own stage links come up, and it also carries each end's own voice, as a stage link would.
    stage: bool = False


@dataclass(frozen=True)
class StageView:
    """Who may be heard now, by speaker tag: built from the room state by its owner."""

    audible: Mapping[bytes, PublicKey] = field(default_factory=dict)

    @classmethod
    def of(cls, room: bytes, speakers: list[PublicKey] | frozenset[PublicKey]) -> StageView:
        return cls({wire.speaker_tag(room, key.raw): key for key in speakers})


@dataclass(frozen=True)
class Play:
    """Give this frame to the local playout buffer."""

    speaker: PublicKey
    frame: wire.AudioFrame
    link: str


@dataclass(frozen=True)
class Send:
    """Send ``data`` on each of ``links``."""

    links: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class LinkAlive:
    link: str


@dataclass(frozen=True)
class LinkBye:
    link: str


@dataclass(frozen=True)
class LinkFeed:
    """A standby child lost its parent and asks us, its backup, to feed it from now on."""

    link: str


Action = Play | Send | LinkAlive | LinkBye | LinkFeed


@dataclass
class _Window:
    """Recently seen sequence numbers of one speaker (uint32, wrapping)."""

    newest: int
    seen: set[int]


class Forwarder:
    """Decides, frame by frame, what to play and where to forward."""

    def __init__(self, me: PublicKey, room: bytes, mode: Mode = Mode.MESH) -> None:
        self.me = me
        self.room = room
        self.mode = mode
        self.my_tag = wire.speaker_tag(room, me.raw)
        self.rejections = RejectionCounter()
        self.forwarded = 0
        self.played = 0
        self.duplicates = 0  # normal, not a rejection: a backup parent feeds the same frames
        self._stage = StageView()
        self._links: dict[str, LinkInfo] = {}
        self._windows: dict[bytes, _Window] = {}
        self._buckets: dict[bytes, tuple[float, float]] = {}  # tag -> (tokens, at_ms)
        self._peer_tags: dict[str, bytes] = {}

    def set_stage(self, view: StageView) -> None:
        self._stage = view
        for tag in list(self._windows):
            if tag not in view.audible:
                del self._windows[tag]
                self._buckets.pop(tag, None)

    def set_links(self, links: Mapping[str, LinkInfo]) -> None:
        self._links = dict(links)
        self._peer_tags = {
            link: wire.speaker_tag(self.room, info.peer.raw) for link, info in self._links.items()
        }

    def may_play(self, speaker: PublicKey) -> bool:
        return speaker in self._stage.audible.values()

    def own_audio(self, data: bytes) -> list[Action]:
        """Our captured frame: to every stage peer and every child, if we may be heard."""
        if self.my_tag not in self._stage.audible:
            return []
        links = tuple(
            link for link, info in self._links.items()
            if info.role in (LinkRole.STAGE, LinkRole.CHILD) or info.stage
        )
        return [Send(links, data)] if links else []

    def on_frame(self, link: str, data: bytes, now_ms: float) -> list[Action]:
        """A frame arrived on ``link``; refused frames are counted and produce no action."""
        try:
            return self._on_frame(link, data, now_ms)
        except Rejected as exc:
            self.rejections.count(exc.reason)
            return []

    def _on_frame(self, link: str, data: bytes, now_ms: float) -> list[Action]:
        info = self._links.get(link)
        if info is None:
            raise Rejected(DropReason.UNKNOWN_LINK, link)
        frame = wire.decode(data)
        if isinstance(frame, wire.Heartbeat):
            return [LinkAlive(link)]
        if isinstance(frame, wire.Bye):
            return [LinkBye(link)]
        if isinstance(frame, wire.Feed):
            fed = info.role in (LinkRole.STANDBY, LinkRole.CHILD)
            return [LinkAlive(link), LinkFeed(link)] if fed else [LinkAlive(link)]
        actions: list[Action] = [LinkAlive(link)]
        speaker = self._stage.audible.get(frame.tag)
        if frame.tag == self.my_tag:
            raise Rejected(DropReason.OWN_AUDIO)
        if speaker is None:
            raise Rejected(DropReason.NOT_AUDIBLE, frame.tag.hex())
        if info.role in (LinkRole.CHILD, LinkRole.STANDBY) and not (
                info.stage and frame.tag == self._peer_tags[link]):
            raise Rejected(DropReason.FROM_CHILD)
        carries_only_peer = info.role is LinkRole.STAGE or self.mode is Mode.MESH
        if carries_only_peer and frame.tag != self._peer_tags[link]:
            raise Rejected(DropReason.NOT_THE_PEERS_VOICE)
        # Duplicates first (they cost no tokens: the backup parent and make-before-break switches
        # send each frame twice), then the rate; a frame counts as seen only once it passed both.
        if self._seen(frame.tag, frame.seq):
            self.duplicates += 1
            return actions
        self._check_rate(frame.tag, now_ms)
        self._mark(frame.tag, frame.seq)
        self.played += 1
        actions.append(Play(speaker, frame, link))
        if self.mode is Mode.TREE:
            children = tuple(
                other for other, other_info in self._links.items()
                if other_info.role is LinkRole.CHILD and other != link
            )
            if children:
                self.forwarded += len(children)
                actions.append(Send(children, wire.with_next_hop(data)))
        return actions

    def _check_rate(self, tag: bytes, now_ms: float) -> None:
        tokens, at = self._buckets.get(tag, (float(BURST_FRAMES), now_ms))
        tokens = min(float(BURST_FRAMES), tokens + (now_ms - at) * FRAME_RATE / 1000)
        if tokens < 1:
            self._buckets[tag] = (tokens, now_ms)
            raise Rejected(DropReason.RATE)
        self._buckets[tag] = (tokens - 1, now_ms)

    def _seen(self, tag: bytes, seq: int) -> bool:
        """Played already, or too old to tell apart from a replay."""
        window = self._windows.get(tag)
        if window is None:
            return False
        ahead = (seq - window.newest) & 0xFFFFFFFF
        if ahead == 0 or seq in window.seen:
            return True
        if ahead < 0x80000000:  # newer (serial-number arithmetic, RFC 1982)
            return False
        return (window.newest - seq) & 0xFFFFFFFF >= DEDUP_WINDOW

    def _mark(self, tag: bytes, seq: int) -> None:
        window = self._windows.get(tag)
        if window is None:
            self._windows[tag] = _Window(seq, {seq})
            return
        window.seen.add(seq)
        if (seq - window.newest) & 0xFFFFFFFF < 0x80000000:
            window.newest = seq
            if len(window.seen) > 2 * DEDUP_WINDOW:  # prune now and then, not on every frame
                window.seen = {s for s in window.seen if (seq - s) & 0xFFFFFFFF < DEDUP_WINDOW}

    def statistics(self) -> dict[str, object]:
        return {
            "played": self.played,
            "forwarded": self.forwarded,
            "duplicates": self.duplicates,
            "dropped": self.rejections.statistics(),
        }
