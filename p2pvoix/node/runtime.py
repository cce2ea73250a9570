"""The node: one participant's presence on the network, and room discovery.

A ``Node`` owns the trio portal and libp2p host (``p2p.py``), LAN discovery (``lan.py``) and the
directory of live rooms, and keeps its background tasks in one ``TaskSet``. It announces the rooms
it hosts on three paths — the rooms gossip topic, the DHT and mDNS — and finds rooms by key through
the key's hints, the LAN and the DHT. Room sessions (``p2pvoix/session``) plug their per-room
protocols into it with ``set_room_handler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2pvoix.crypto.errors import EnvelopeError
from p2pvoix.crypto.keys import PUBLIC_KEY_SIZE, PublicKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.directory import exchange
from p2pvoix.directory.directory import Directory
from p2pvoix.directory.events import DirectoryEvent, Source
from p2pvoix.directory.lan_txt import LanAdvert
from p2pvoix.directory.records import (
    DHT_NAMESPACE,
    Announcement,
    dht_key,
    select_newest,
    verify_announcement,
    verify_dht_record,
)
from p2pvoix.errors import P2pvoixError, Rejected, RejectionCounter
from p2pvoix.identity.store import Identity
from p2pvoix.node.bridge import Portal
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.p2p import (
    BadMultiaddr,
    NotRunning,
    P2PConfig,
    P2PNode,
    PeerConnected,
    ProtocolUnsupported,
    RequestFailed,
    RequestTimeout,
)
from p2pvoix.node.tasks import TaskSet
from p2pvoix.reach.reservations import BEHIND_NAT, Reservations
from p2pvoix.reach.service import ReachService

logger = logging.getLogger(__name__)

ROOMS_TOPIC = "/p2pvoix/rooms/1"
PING_PROTOCOL = "/p2pvoix/ping/1.0.0"
REQUEST_RETRY_DELAYS_S = (0.05, 0.25)
UNANSWERED_ATTEMPTS = 3  # tries of an idempotent request that went unanswered (room_request)
RoomHandler = Callable[[str, bytes], Awaitable[bytes]]  # (peer id, payload) -> reply
Announcer = Callable[[int, bool], Announcement]  # (now ms, ended) -> a freshly signed record


class RoomNotFound(P2pvoixError):
    """No live room with that key was found. Check the key, ask the host whether the room is still
    open, and give a --bootstrap address if you are not on the host's LAN."""

    exit_code = 3


class NodeUnreachable(P2pvoixError):
    """None of the bootstrap addresses could be reached. Check them (and your network), or leave
    them out to use only the local network."""


@dataclass(frozen=True)
class Contact:
    """A peer that can serve a room, and where to dial it."""

    peer_id: str
    addrs: tuple[str, ...]


class Node:
    """A running p2pvoix node; use ``async with Node(...) as node``."""

    def __init__(
        self,
        identity: Identity,
        config: NodeConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        lan_factory: Callable[..., object] | None = None,
        portal: Portal | None = None,
    ) -> None:
        """``portal``: a trio thread shared by several nodes of one process (tests, benchmarks);
        its owner starts and stops it. By default the node runs its own."""
        self.identity = identity
        self.config = config
        self.directory = Directory()
        self.rejections = RejectionCounter()
        self.requests_retried = 0  # requests that went unanswered and were sent again
        self._wall_clock = wall_clock
        self._lan_factory = lan_factory
        self._own_portal = portal is None
        self._portal = portal or Portal()
        self.p2p = P2PNode(identity.key, self._portal)
        # Whether peers can reach us (docs/protocol/reachability.md): rooms advertise it in
        # presence, and the relay planner hangs NAT'd listeners from reachable relays.
        self.reachability = ReachService(self.p2p, stun_servers=config.stun,
                                         on_change=lambda verdict: self._reach_changed())
        self.reservations = Reservations(self.p2p, lambda: self.reach,
                                         on_change=self._addresses_changed)
        self._readvertise = asyncio.Event()  # set (and replaced) when our addresses change
        self._lan: object | None = None
        self._tasks = TaskSet(f"node {identity.peer_id[-6:]}")
        self._hosted: dict[PublicKey, Announcer] = {}
        self._watchers: set[asyncio.Queue[DirectoryEvent]] = set()
        self._room_handlers: dict[str, dict[bytes, RoomHandler]] = {}
        self._dialing: set[str] = set()
        self._lan_peers: set[str] = set()
        self.notices: list[str] = []

    # ---- lifecycle ----

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def now_ms(self) -> int:
        return int(self._wall_clock() * 1000)

    def addrs(self) -> list[str]:
        """Where others can dial us: behind a NAT, our circuit addresses through relays first
        (ours are private), else our own first."""
        direct, relayed = self.p2p.addrs(), self.reservations.addrs
        return relayed + direct if self.reach in BEHIND_NAT else direct + relayed

    def reach_statistics(self) -> dict[str, object]:
        return {**self.reachability.statistics(), "relayed": self.reservations.statistics()}

    def addresses_changed(self) -> asyncio.Event:
        """An event set the next time our addresses (or their order) change."""
        return self._readvertise

    def _reach_changed(self) -> None:
        self.reservations.wake()  # behind a NAT now: find a relay at once
        self._addresses_changed()  # the order of our addresses follows our reach

    def _addresses_changed(self) -> None:
        self._readvertise.set()
        self._readvertise = asyncio.Event()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._own_portal:
            await self._portal.start()
        try:
            self.p2p.register_dht_namespace(DHT_NAMESPACE, self._dht_validate, self._dht_select)
            self.p2p.set_request_handler(
                exchange.PROTOCOL, self._serve_directory, max_request=64,
                max_response=exchange.MAX_REPLY,
            )
            self.p2p.set_request_handler(PING_PROTOCOL, _pong, max_request=8, max_response=8)
            self.reachability.install()
            await self.p2p.start(P2PConfig(listen=self.config.listen,
                                           relay_hop=self.config.relay_hop))
            await self.p2p.subscribe(ROOMS_TOPIC, self._gossip_validate, self._on_gossip)
            self._tasks.spawn(self._watch_peers(), "peers")
            self._tasks.spawn(self._expire_directory(), "expiry")
            self._tasks.spawn(self.reachability.run(), "reachability")
            self._tasks.spawn(self.reservations.run(), "relay reservations")
            await self._bootstrap()
            if self.config.lan:
                await self._start_lan()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Tell the network our hosted rooms ended, leave it, and release every resource."""
        for room in list(self._hosted):
            with contextlib.suppress(P2pvoixError, TimeoutError):
                await asyncio.wait_for(self.stop_hosting(room), 2.0)
        await self._tasks.close()
        if self._lan is not None:
            with contextlib.suppress(Exception):
                await self._lan.stop()  # type: ignore[attr-defined]
            self._lan = None
        await self.p2p.stop()
        if self._own_portal:
            await self._portal.stop()
        for queue in self._watchers:
            queue.put_nowait(None)  # type: ignore[arg-type]

    @property
    def reach(self) -> str:
        """``public``, ``nat``, ``symmetric`` or ``unknown`` (``reach.verdict.Reach``)."""
        return self.reachability.verdict.reach.value

    def isolated(self) -> bool:
        """True while no other p2pvoix node is connected: nobody can find our rooms yet."""
        return not self.p2p.connected_peers()

    # ---- hosting ----

    async def host(self, room: PublicKey, announcer: Announcer) -> None:
        """Announce ``room`` until ``stop_hosting``; ``announcer`` signs fresh records."""
        self._hosted[room] = announcer
        self._tasks.spawn(self._republish(room), f"announce {room.fingerprint}")
        await self._advertise_lan()

    async def stop_hosting(self, room: PublicKey) -> None:
        """Announce the end of ``room`` (gossip, DHT, LAN) and stop republishing it."""
        make = self._hosted.pop(room, None)
        if make is None:
            return
        ended = make(self.now_ms(), True)
        self.directory.offer(ended.encoded, Source.GOSSIP, self.now_ms())
        with contextlib.suppress(P2pvoixError):
            await self.p2p.publish(ROOMS_TOPIC, ended.encoded)
        with contextlib.suppress(P2pvoixError, TimeoutError):  # best effort: it expires anyway
            await asyncio.wait_for(self.p2p.dht_put(dht_key(room), ended.encoded), 1.5)
        await self._advertise_lan()

    async def _republish(self, room: PublicKey) -> None:
        ttl_ms = int(self.config.announce_ttl_s * 1000)
        last_dht = -ttl_ms
        while room in self._hosted:
            now = self.now_ms()
            record = self._hosted[room](now, False)
            self._offer_local(record.encoded, now)
            with contextlib.suppress(P2pvoixError):
                await self.p2p.publish(ROOMS_TOPIC, record.encoded)
            if now - last_dht >= ttl_ms // 2:
                last_dht = now
                self._tasks.spawn(self._dht_put(room, record.encoded), "dht put")
            await self._advertise_lan()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.addresses_changed().wait(),
                                       self.config.announce_ttl_s / 3)
                last_dht = -ttl_ms  # new addresses: into the DHT at once too

    async def _dht_put(self, room: PublicKey, record: bytes) -> None:
        try:
            await asyncio.wait_for(self.p2p.dht_put(dht_key(room), record), 10)
        except (TimeoutError, P2pvoixError) as exc:
            logger.info("DHT put of %s failed: %s", room.fingerprint, exc)

    # ---- finding rooms ----

    def watch(self) -> asyncio.Queue[DirectoryEvent]:
        """A queue of directory events (``None`` when the node stops)."""
        queue: asyncio.Queue[DirectoryEvent] = asyncio.Queue(maxsize=1024)
        self._watchers.add(queue)
        return queue

    async def find_room(self, room_key: RoomKey, timeout: float = 15.0) -> list[Contact]:
        """Peers that serve ``room_key``: from its hints, the directory (LAN, gossip) and the DHT."""
        contacts: list[Contact] = []
        if room_key.host is not None and room_key.addresses:
            host = room_key.host.peer_id
            addrs = tuple(f"{a.multiaddr()}/p2p/{host}" for a in room_key.addresses)
            contacts.append(Contact(host, addrs))
        deadline = asyncio.get_running_loop().time() + timeout
        for contact in contacts:
            if await self._dial_any(contact.addrs, timeout=min(3.0, timeout)):
                return contacts
        dht_task = asyncio.create_task(self._find_in_dht(room_key.key))
        try:
            while True:
                known = self.directory.announcement(room_key.key)
                if known is not None:
                    return [_contact(known)] + contacts
                if dht_task.done():
                    found = dht_task.result()
                    if found is not None:
                        self._offer_local(found.encoded, self.now_ms(), Source.DHT)
                        return [_contact(found)] + contacts
                    if asyncio.get_running_loop().time() < deadline - 1:
                        dht_task = asyncio.create_task(self._find_in_dht(room_key.key, delay=1))
                if asyncio.get_running_loop().time() >= deadline:
                    if contacts:
                        return contacts
                    raise RoomNotFound(f"searched hints, LAN and DHT for {timeout:.0f} s")
                await asyncio.sleep(0.05)
        finally:
            dht_task.cancel()
            with contextlib.suppress(BaseException):
                await dht_task

    def contact_for(self, room: PublicKey) -> Contact | None:
        """The host of ``room`` as its newest announcement known here names it, if any."""
        known = self.directory.announcement(room)
        return _contact(known) if known is not None else None

    async def _find_in_dht(self, room: PublicKey, delay: float = 0.0) -> Announcement | None:
        await asyncio.sleep(delay)
        if self.isolated():
            return None
        try:
            data = await asyncio.wait_for(self.p2p.dht_get(dht_key(room)), 5)
        except (TimeoutError, P2pvoixError):
            return None
        if data is None:
            return None
        try:
            return verify_announcement(data, self.now_ms())
        except (Rejected, EnvelopeError) as exc:
            self.rejections.count(exc.reason)
            return None

    async def ping(self, peer_id: str, timeout: float = 1.0) -> bool:
        """Whether ``peer_id`` answers now (over a connection that is already up or can be made)."""
        try:
            reply = await asyncio.wait_for(
                self.p2p.request(peer_id, PING_PROTOCOL, b"\x01", timeout=timeout,
                                 max_response=8), timeout)
        except (P2pvoixError, TimeoutError):
            return False
        return reply == b"\x01"

    async def connect(self, contact: Contact, timeout: float = 5.0) -> bool:
        """Dial ``contact`` unless connected already; False if no address answered."""
        if contact.peer_id in self.p2p.connected_peers():
            return True
        return await self._dial_any(contact.addrs, timeout)

    # ---- room-scoped request protocols ----

    def set_room_handler(self, protocol: str, room: bytes, handler: RoomHandler | None) -> None:
        """Route ``protocol`` requests for ``room`` (framed as room key || payload) to ``handler``."""
        handlers = self._room_handlers.setdefault(protocol, {})
        if handler is None:
            handlers.pop(room, None)
            return
        if not handlers:
            self.p2p.set_request_handler(
                protocol, lambda peer, data: self._dispatch(protocol, peer, data),
                max_request=32 * 1024, max_response=2 * 1024 * 1024,
            )
        handlers[room] = handler

    async def room_request(
        self, peer_id: str, protocol: str, room: bytes, payload: bytes, timeout: float = 10.0,
        *, idempotent: bool = True,
    ) -> bytes:
        """One room-scoped request within ``timeout``; a stream that fails while it is being
        negotiated is retried, and so, for an idempotent request, is one left unanswered.

        py-libp2p 0.8.1 sometimes closes a new stream during protocol negotiation when several
        streams open at once on a fresh connection ("fail to read from multiselect
        communicator"); the same request a moment later succeeds. Under load it also loses
        requests outright: on the 40-node test about one signalling request in five never
        reached the peer's handler and waited out its whole timeout, while a second stream at
        once usually got through. One cause was a write cancelled after Noise had encrypted it,
        which killed the whole connection (work-around 18 in ``_p2p_trio``); a saturated trio
        thread still queues negotiation steps for up to a second. So an idempotent request gets
        ``UNANSWERED_ATTEMPTS`` shorter tries in the same overall time.
        """
        deadline = time.monotonic() + timeout
        tries = UNANSWERED_ATTEMPTS if idempotent else 1
        for delay in (*REQUEST_RETRY_DELAYS_S, None):
            try:
                return await self._request_once(peer_id, protocol, room + payload, deadline, tries)
            except (RequestTimeout, ProtocolUnsupported):
                raise
            except RequestFailed:
                if delay is None or time.monotonic() + delay >= deadline:
                    raise
                # The connection itself may be dead while libp2p still lists it (a reset TCP
                # connection is noticed late): drop it, so the retry dials afresh.
                with contextlib.suppress(P2pvoixError):
                    await self.p2p.disconnect(peer_id)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _request_once(self, peer_id: str, protocol: str, data: bytes, deadline: float,
                            tries: int) -> bytes:
        """The request, in up to ``tries`` attempts that share the time left until ``deadline``."""
        for attempt in range(tries, 0, -1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                return await self.p2p.request(peer_id, protocol, data, timeout=left / attempt,
                                              max_response=2 * 1024 * 1024)
            except RequestTimeout:
                if attempt == 1:
                    raise
                self.requests_retried += 1
        raise RequestTimeout(f"{protocol} to {peer_id}: no answer in time")

    async def _dispatch(self, protocol: str, peer: str, data: bytes) -> bytes:
        handler = self._room_handlers.get(protocol, {}).get(data[:PUBLIC_KEY_SIZE])
        if handler is None:
            raise Rejected("not-in-room", "this node is not in that room")
        return await handler(peer, data[PUBLIC_KEY_SIZE:])

    # ---- statistics ----

    def statistics(self) -> dict[str, object]:
        p2p = self.p2p.statistics()
        return {
            "peer_id": self.peer_id,
            "peers": p2p.peers,
            "lan_peers": len(self._lan_peers),
            "rooms_known": len(self.directory),
            "rooms_hosted": len(self._hosted),
            "requests_retried": self.requests_retried,
            "reachability": self.reach_statistics(),
            "rejected": {
                **p2p.rejected,
                **self.rejections.statistics(),
                **self.directory.rejections.statistics(),
            },
        }

    # ---- internals: validators (run in the trio thread: pure, thread-safe) ----

    def _gossip_validate(self, data: bytes, origin: str) -> bool:
        verify_announcement(data, self.now_ms())  # raises Rejected/EnvelopeError: counted
        return True

    def _dht_validate(self, key: str, value: bytes) -> None:
        verify_dht_record(key, value, self.now_ms())

    def _dht_select(self, key: str, values: list[bytes]) -> int:
        return select_newest(values, self.now_ms())

    # ---- internals: feeding the directory ----

    async def _on_gossip(self, data: bytes, origin: str) -> None:
        self._offer_local(data, self.now_ms(), Source.GOSSIP)

    def _offer_local(self, data: bytes, now_ms: int, source: Source = Source.GOSSIP) -> None:
        self._notify(self.directory.offer(data, source, now_ms))

    def _notify(self, events: list[DirectoryEvent]) -> None:
        for event in events:
            for queue in self._watchers:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)

    async def _expire_directory(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._notify(self.directory.expire(self.now_ms()))

    async def _serve_directory(self, peer: str, data: bytes) -> bytes:
        exchange.check_request(data)
        now = self.now_ms()
        records = [self.directory.announcement(listing.room) for listing in self.directory.rooms(now)]
        return exchange.encode_reply([r.encoded for r in records if r is not None])

    async def _watch_peers(self) -> None:
        with self.p2p.peer_events() as events:
            async for event in events:
                if isinstance(event, PeerConnected):
                    self._tasks.spawn(self._ask_directory(event.peer_id), "directory exchange")

    async def _ask_directory(self, peer: str) -> None:
        for delay in (*REQUEST_RETRY_DELAYS_S, None):
            try:
                reply = await self.p2p.request(
                    peer, exchange.PROTOCOL, exchange.REQUEST, timeout=5,
                    max_response=exchange.MAX_REPLY,
                )
                records = exchange.decode_reply(reply)
                break
            except Rejected as exc:
                self.rejections.count(exc.reason)
                return
            except (RequestTimeout, ProtocolUnsupported, NotRunning):
                return  # not a p2pvoix directory, or gone again: nothing to learn
            except (TimeoutError, P2pvoixError):
                if delay is None:
                    return
                await asyncio.sleep(delay)  # a new stream dropped while negotiating: again
        now = self.now_ms()
        for record in records:
            self._offer_local(record, now, Source.GOSSIP)

    # ---- internals: bootstrap and LAN ----

    async def _bootstrap(self) -> None:
        if not self.config.bootstrap:
            return
        results = await asyncio.gather(
            *(self._dial(addr, 5.0) for addr in self.config.bootstrap), return_exceptions=True
        )
        for addr, result in zip(self.config.bootstrap, results, strict=True):
            if isinstance(result, BadMultiaddr):
                raise result
            if result is not True:
                self.notices.append(f"bootstrap {addr} did not answer ({result})")
        if not any(result is True for result in results):
            raise NodeUnreachable(", ".join(self.config.bootstrap))

    async def _dial(self, addr: str, timeout: float) -> bool:
        await self.p2p.connect(addr, timeout=timeout)
        return True

    async def _dial_any(self, addrs: tuple[str, ...], timeout: float) -> bool:
        for addr in addrs:
            try:
                await self.p2p.connect(addr, timeout=timeout)
                return True
            except P2pvoixError as exc:
                logger.info("dial %s failed: %s", addr, exc)
        return False

    async def _start_lan(self) -> None:
        if self._lan_factory is None:
            from p2pvoix.node.lan import LanDiscovery  # zeroconf loads only when the LAN is used

            factory: Callable[..., object] = LanDiscovery
        else:
            factory = self._lan_factory
        lan = factory(
            self.peer_id,
            interfaces=self.config.interfaces,
            on_advert=self._on_lan_advert,
            on_gone=self._lan_peers.discard,
            rejections=self.rejections,
        )
        try:
            await lan.start()  # type: ignore[attr-defined]
        except P2pvoixError as exc:
            if self.config.interfaces:
                raise
            self.notices.append(f"LAN discovery is off: {exc.user_message}")
            return
        self._lan = lan
        await self._advertise_lan()

    async def _advertise_lan(self) -> None:
        if self._lan is None:
            return
        now = self.now_ms()
        records = tuple(make(now, False).encoded for make in list(self._hosted.values())[:2])
        advert = LanAdvert(self.peer_id, tuple(self.addrs()[:8]), records)
        try:
            await self._lan.advertise(advert)  # type: ignore[attr-defined]
        except (P2pvoixError, ValueError, OSError) as exc:
            logger.warning("LAN advertisement failed: %s", exc)

    def _on_lan_advert(self, advert: LanAdvert, addresses: tuple[str, ...]) -> None:
        now = self.now_ms()
        for record in advert.announcements:
            self._offer_local(record, now, Source.LAN)
        self._lan_peers.add(advert.peer_id)
        if advert.peer_id in self.p2p.connected_peers() or advert.peer_id in self._dialing:
            return
        # Dial the addresses the mDNS record resolved to first: they are on this LAN.
        ordered = sorted(advert.addrs, key=lambda a: not any(f"/{ip}/" in a for ip in addresses))
        dialable = tuple(a if "/p2p/" in a else f"{a}/p2p/{advert.peer_id}" for a in ordered)
        self._dialing.add(advert.peer_id)
        self._tasks.spawn(self._dial_lan_peer(advert.peer_id, dialable), "dial LAN peer")

    async def _dial_lan_peer(self, peer_id: str, addrs: tuple[str, ...]) -> None:
        try:
            await self._dial_any(addrs, timeout=5.0)
        finally:
            self._dialing.discard(peer_id)


async def _pong(peer_id: str, data: bytes) -> bytes:
    return data[:1]


def _contact(announcement: Announcement) -> Contact:
    peer = announcement.host.peer_id
    addrs = tuple(a if "/p2p/" in a else f"{a}/p2p/{peer}" for a in announcement.addrs)
    return Contact(peer, addrs)


__all__ = ["Contact", "Node", "NodeUnreachable", "RoomNotFound", "ROOMS_TOPIC", "RequestFailed"]
