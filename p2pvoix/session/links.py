"""The media links of one room: one WebRTC link per peer identity, bound to it by signed signalling.

Opening a link: the caller makes an aiortc offer, signs it with its fingerprints (``signalling``),
sends it over libp2p to the peer, checks the signed answer against the answer's SDP and the peer's
identity, and only then hands the answer to aiortc. Any mismatch aborts the link before DTLS starts.

Liveness: every link carries a heartbeat frame at least every ``HEARTBEAT_S`` and a link silent for
``DEAD_AFTER_S`` is closed as dead (aiortc alone would take 31 s). A link closed on purpose first
sends a bye frame, so the peer reacts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.errors import P2pvoixError, Rejected, RejectionCounter
from p2pvoix.mesh import wire
from p2pvoix.mesh.capacity import ChildReport
from p2pvoix.mesh.rtc import LinkState, RtcConfig, RtcLink, sdp_fingerprints
from p2pvoix.node.tasks import TaskSet
from p2pvoix.session import signalling
from p2pvoix.session.signalling import Answer, Offer

logger = logging.getLogger(__name__)

HEARTBEAT_S = 0.25
RTP_OVERHEAD = 12 + 10 + 8 + 20  # RTP header, SRTP tag, UDP, IPv4: bytes on the wire per frame
DEAD_AFTER_S = 1.2  # ~5 heartbeats: unambiguous, and leaves room for a tree repair in < 2 s
CONNECT_TIMEOUT_S = 10.0
STALL_EXCUSES = 3  # liveness rounds in a row in which our own stall excuses a peer's silence

# (peer id, request payload) -> response payload; the node's room request in production, a
# man-in-the-middle in the tampering test.
SignalTransport = Callable[[str, bytes], Awaitable[bytes]]
# (peer, role asked) -> None to accept, or a reason to refuse.
AcceptPolicy = Callable[[PublicKey, str], str | None]


class LinkRefused(P2pvoixError):
    """A peer refused our media connection."""


class Dial(Enum):
    """How an attempt to open a link ended."""

    UP = "up"
    # The peer answered and turned us away (full, not ready, leaving): it is alive and its
    # signalling reaches us, so the two of us can link once it has room.
    REFUSED = "refused"
    FAILED = "failed"  # no answer, a bad answer, or no path (ICE)


@dataclass
class Link:
    peer: PublicKey
    rtc: RtcLink
    initiator: bool
    role_asked: str
    opened_at: float
    last_heard: float
    last_sent: float = 0.0
    up: bool = False
    heartbeats: int = 0
    closing: bool = False
    frames_in: int = field(default=0)
    bytes_out: int = 0
    asks_feed: bool = False  # a standby link to our backup parent, whose feed we now want

    @property
    def id(self) -> str:
        return self.peer.peer_id


class LinkManager:
    """All media links of one node in one room."""

    def __init__(
        self,
        *,
        room: bytes,
        key: SigningKey,
        rtc_config: RtcConfig,
        transport: SignalTransport,
        on_frame: Callable[[str, bytes, float], None],
        on_up: Callable[[PublicKey], None],
        on_down: Callable[[PublicKey, str], None],
        accept_policy: AcceptPolicy,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.room = room
        self.key = key
        self.rtc_config = rtc_config
        self.transport = transport
        self.rejections = RejectionCounter()
        self._on_frame = on_frame
        self._on_up = on_up
        self._on_down = on_down
        self._accept_policy = accept_policy
        self._wall_ms = wall_ms
        self._clock = clock
        self._links: dict[PublicKey, Link] = {}
        self._ids: dict[str, Link] = {}  # the same links by peer ID, for the per-frame path
        self._connecting: dict[PublicKey, asyncio.Task[Dial]] = {}
        self._tasks = TaskSet("links")
        self._closed_bytes = 0  # bytes of child links already closed, so the counter only grows
        self._closed = False

    # ---- queries ----

    def links(self) -> dict[PublicKey, Link]:
        return dict(self._links)

    def is_up(self, peer: PublicKey) -> bool:
        link = self._links.get(peer)
        return link is not None and link.up

    def connecting(self, peer: PublicKey) -> bool:
        return peer in self._connecting

    def child_bytes_sent(self) -> int:
        """Bytes sent so far on links where we feed a child (for the capacity estimate)."""
        return sum(link.bytes_out for link in self._links.values()
                   if not link.initiator and link.role_asked == "child") + self._closed_bytes

    async def child_reports(self) -> dict[str, ChildReport]:
        """What each child we feed last reported of our packets (for the capacity estimate)."""
        reports = {}
        for link in list(self._links.values()):
            if link.up and not link.initiator and link.role_asked == "child":
                report = await link.rtc.peer_report()
                if report is not None:
                    reports[link.id] = ChildReport(*report)
        return reports

    def statistics(self) -> dict[str, object]:
        return {
            "links": len(self._links),
            "up": sum(link.up for link in self._links.values()),
            "rejected": self.rejections.statistics(),
            # How each link crossed the network: our ICE candidate type, then the peer's.
            "paths": {peer.peer_id: "/".join(path) for peer, link in self._links.items()
                      if link.up and (path := link.rtc.path()) is not None},
        }

    # ---- sending ----

    def send(self, peer_id: str, data: bytes) -> None:
        link = self._by_id(peer_id)
        if link is not None and link.up:
            link.rtc.send(data)
            link.last_sent = self._clock()
            link.bytes_out += len(data) + RTP_OVERHEAD

    def _by_id(self, peer_id: str) -> Link | None:
        return self._ids.get(peer_id)

    def _register(self, link: Link) -> None:
        self._links[link.peer] = link
        self._ids[link.id] = link

    def _unregister(self, link: Link) -> None:
        if self._links.get(link.peer) is link:
            del self._links[link.peer]
            del self._ids[link.id]

    # ---- standby links (to and from a backup parent) ----

    def ask_feed(self, peer: PublicKey) -> None:
        """Our standby link to ``peer`` (our backup parent) is now our parent link: ask to be fed."""
        link = self._links.get(peer)
        if link is not None and link.up and link.initiator and not link.asks_feed:
            link.asks_feed = True
            link.rtc.send(wire.encode_feed())
            link.last_sent = self._clock()

    def start_feeding(self, peer_id: str) -> bool:
        """A standby child asked to be fed: its link is a child link from now on."""
        link = self._by_id(peer_id)
        if link is None or link.initiator or link.role_asked != "backup":
            return False
        link.role_asked = "child"
        return True

    # ---- opening links ----

    def connect(self, peer: PublicKey, role: str) -> asyncio.Task[Dial] | None:
        """Open a link to ``peer`` in the background (once); the task's result says how the
        attempt ended. None once the manager is closing: a leaving node opens nothing."""
        if self._closed:
            return None
        task = self._connecting.get(peer)
        if task is None:
            task = self._tasks.spawn(self._connect(peer, role), f"link to {peer.peer_id[-6:]}")
            self._connecting[peer] = task
            task.add_done_callback(lambda _: self._connecting.pop(peer, None))
        return task

    async def _connect(self, peer: PublicKey, role: str) -> Dial:
        old = self._links.get(peer)
        if old is not None:  # one link per peer: a link the other way is replaced (the peer
            await self._close_link(old, "replaced", bye=False)  # replaces it on our offer)
        link = self._new_link(peer, initiator=True, role=role)
        started = self._clock()
        failure = Dial.FAILED
        try:
            sdp = await link.rtc.create_offer()
            offered = self._clock()
            offer = signalling.make_offer(
                self.key, self.room, sdp=sdp,
                fingerprints=signalling.format_fingerprints(link.rtc.local_fingerprints()),
                nonce=os.urandom(signalling.NONCE_SIZE), role=role, now_ms=self._wall_ms(),
            )
            reply = await self.transport(peer.peer_id, offer.encoded)
            answered = self._clock()
            answer = self._check_answer(reply, peer, offer)
            if not answer.accepted:
                failure = Dial.REFUSED
                raise LinkRefused(answer.why or "no reason given")
            await link.rtc.accept_answer(answer.sdp)
            up = await asyncio.wait_for(link.rtc.wait_connected(), CONNECT_TIMEOUT_S)
            logger.debug("link to %s as %s: offer %.0f ms, answer %.0f ms, up %.0f ms", peer.peer_id,
                         role, (offered - started) * 1000, (answered - offered) * 1000,
                         (self._clock() - answered) * 1000)
        except (Rejected, EnvelopeError) as exc:
            self.rejections.count(exc.reason)
            logger.warning("link to %s aborted: %s", peer.peer_id, exc)
            up = False
        except (P2pvoixError, TimeoutError, OSError, ValueError, RuntimeError) as exc:
            logger.info("link to %s failed: %s", peer.peer_id, exc)
            up = False
        except BaseException:
            await self._discard(link)
            raise
        if not up:
            await self._discard(link)
            return failure
        return Dial.UP if self._mark_up(link) else Dial.FAILED

    def _check_answer(self, reply: bytes, peer: PublicKey, offer: Offer) -> Answer:
        answer = signalling.verify_answer(
            reply, self.room, peer=peer, offer=offer, now_ms=self._wall_ms()
        )
        if answer.accepted:
            in_sdp = signalling.format_fingerprints(sdp_fingerprints(answer.sdp))
            signalling.verify_answer(
                reply, self.room, peer=peer, offer=offer, now_ms=self._wall_ms(),
                sdp_fingerprints=in_sdp,
            )
        return answer

    async def handle_offer(self, peer_id: str, payload: bytes) -> bytes:
        """Answer a peer's signed offer (the signalling request handler)."""
        try:
            peer = PublicKey.from_peer_id(peer_id)
            offer = signalling.verify_offer(payload, self.room, peer=peer, now_ms=self._wall_ms())
            in_sdp = signalling.format_fingerprints(sdp_fingerprints(offer.sdp))
            signalling.verify_offer(payload, self.room, peer=peer, now_ms=self._wall_ms(),
                                    sdp_fingerprints=in_sdp)
        except (Rejected, EnvelopeError) as exc:
            self.rejections.count(exc.reason)
            raise
        refusal = self._accept_policy(peer, offer.role) if not self._closed else "leaving"
        if refusal is None and peer in self._connecting and peer.raw > self.key.public.raw:
            refusal = "glare: our own offer to you wins"
        if refusal is not None:
            return signalling.make_answer(
                self.key, self.room, offer=offer, now_ms=self._wall_ms(), why=refusal
            ).encoded
        started = self._clock()
        old = self._links.get(peer)
        if old is not None:  # the peer restarted, or our own pending offer lost the glare
            await self._close_link(old, "replaced", bye=False)
        closed = self._clock()
        link = self._new_link(peer, initiator=False, role=offer.role)
        try:
            sdp = await link.rtc.accept_offer(offer.sdp)
            logger.debug("answering %s took %.0f ms (closing its old link %.0f ms)", peer.peer_id,
                         (self._clock() - started) * 1000, (closed - started) * 1000)
        except Rejected as exc:
            self.rejections.count(exc.reason)
            await self._discard(link)
            raise
        answer = signalling.make_answer(
            self.key, self.room, offer=offer, sdp=sdp,
            fingerprints=signalling.format_fingerprints(link.rtc.local_fingerprints()),
            now_ms=self._wall_ms(),
        )
        self._tasks.spawn(self._await_inbound(link), f"link from {peer.peer_id[-6:]}")
        return answer.encoded

    async def _await_inbound(self, link: Link) -> None:
        try:
            up = await asyncio.wait_for(link.rtc.wait_connected(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            up = False
        if up and self._links.get(link.peer) is link:
            self._mark_up(link)
        elif self._links.get(link.peer) is link:
            await self._discard(link)

    def _new_link(self, peer: PublicKey, *, initiator: bool, role: str) -> Link:
        now = self._clock()
        holder: list[Link] = []

        def on_frame(frame: bytes, arrival: float) -> None:
            link = holder[0]
            link.last_heard = self._clock()
            link.frames_in += 1
            if link.up and not link.closing:
                self._on_frame(link.id, frame, arrival)

        def on_state(state: LinkState) -> None:
            link = holder[0]
            if state in (LinkState.FAILED, LinkState.CLOSED) and link.up and not link.closing:
                self._tasks.spawn(self._close_link(link, str(state)), "close failed link")

        rtc = RtcLink(self.rtc_config, on_frame=on_frame, on_state=on_state)
        link = Link(peer, rtc, initiator, role, opened_at=now, last_heard=now)
        holder.append(link)
        self._register(link)
        return link

    def _mark_up(self, link: Link) -> bool:
        if self._links.get(link.peer) is not link or link.closing:
            return False
        link.up = True
        link.last_heard = self._clock()
        self._on_up(link.peer)
        return True

    # ---- closing links ----

    async def close(self, peer: PublicKey, reason: str) -> None:
        link = self._links.get(peer)
        if link is not None:
            await self._close_link(link, reason)

    async def _close_link(self, link: Link, reason: str, bye: bool = True) -> None:
        if link.closing:
            await link.rtc.close()  # wait for the close already under way to finish
            return
        link.closing = True
        if bye and link.up:
            with contextlib.suppress(Exception):
                link.rtc.send(wire.encode_bye())
                await asyncio.sleep(0.02)  # let the bye leave before DTLS close_notify
        self._unregister(link)
        if not link.initiator and link.role_asked == "child":
            self._closed_bytes += link.bytes_out
        was_up = link.up
        link.up = False
        if was_up:
            # Said before the close, not after: with a dead peer aiortc may take its grace
            # periods (up to ~2 s) to close, and a repair — our backup feeding us — must not
            # wait for that (it pushed repairs on the 28-listener test past 2 s).
            self._on_down(link.peer, reason)
        await link.rtc.close()

    async def _discard(self, link: Link) -> None:
        self._unregister(link)
        link.closing = True
        await link.rtc.close()

    async def close_all(self, reason: str = "leaving") -> None:
        """Say bye on every link and close them all (also the ones still connecting)."""
        self._closed = True
        await self._tasks.close()
        links = list(self._links.values())
        for link in links:
            if link.up:
                with contextlib.suppress(Exception):
                    link.rtc.send(wire.encode_bye())
        if links:
            await asyncio.sleep(0.02)
        await asyncio.gather(*(self._close_link(link, reason, bye=False) for link in links))

    # ---- liveness ----

    async def run_liveness(self) -> None:
        """Send heartbeats and close links that went silent; runs until cancelled."""
        counter = excused = 0
        woke = self._clock()
        while True:
            await asyncio.sleep(HEARTBEAT_S / 2)
            now = self._clock()
            late, woke = now - woke - HEARTBEAT_S / 2, now
            # Woken late, this node itself was stalled (CPU starved, a long GC): the frames its
            # peers sent meanwhile may still wait in its sockets, so silence is no evidence this
            # round. Only for a few rounds in a row: a chronically late node must still notice.
            stalled = late > HEARTBEAT_S and excused < STALL_EXCUSES
            excused = excused + 1 if stalled else 0
            for link in list(self._links.values()):
                if not link.up or link.closing:
                    continue
                if now - link.last_heard > DEAD_AFTER_S and not stalled:
                    await self._close_link(link, "timeout", bye=False)
                    continue
                if now - link.last_sent >= HEARTBEAT_S * 0.8:
                    counter += 1
                    # FEED doubles as the heartbeat until the parent feeds us (a lost one is
                    # repeated this way; the parent takes it once).
                    link.rtc.send(wire.encode_feed() if link.asks_feed
                                  else wire.encode_heartbeat(counter))
                    link.last_sent = now
                    link.heartbeats += 1
