"""The trio half of ``p2p.py``: one py-libp2p 0.8.1 host with Kademlia, gossipsub and
request/response, and every work-around that version needs. It runs only in the portal's trio
thread; results and callbacks reach asyncio only through the portal.

Work-arounds, each guarded by a test in ``tests/node/test_p2p_upstream.py`` that fails when
upstream changes the behaviour:

1. Every dial waits 250 ms (happy eyeballs) until ``max_connections_per_peer`` connections exist;
   the default is 3, so we pass 1.
2. Leaving ``host.run()`` leaves sockets open (peers still see us) and each Pubsub leaks its
   seen-messages sweeper thread: we close connections concurrently (each close sleeps 100 ms),
   ``await host.close()`` inside ``run()``, and stop the sweeper.
3. Gossipsub drops silently: a 10 msg/s limit per forwarding peer and topic (our own publishes
   included), and "adaptive gossip" stretches the 1 s heartbeat to 30-60 s once the mesh looks
   thin. Both are off. Peer queues hold 32 RPCs and drop the rest: ``publish`` waits for room and
   every drop is counted.
4. Message IDs are origin + a counter seeded with ``int(time.time())``: a node that restarts
   after publishing faster than 1 msg/s reuses IDs that peers still remember, so its new
   messages are dropped as seen (or as equivocation). We seed it with ``time.time_ns()``.
5. The DHT routing table is not filled on connect: we add each peer once identify has run (a
   departed peer is removed, so lookups do not keep dialling it).
6. ``KadDHT.get_value`` answers from the local store without asking the network, so a node
   that once fetched a record never sees its updates; ``dht_get`` asks the closest peers and
   keeps the best of theirs and ours.
7. A dial tries one TCP address per peer, the first in the peerstore, and a failed dial blocks
   the peer for 60 s: an explicit ``connect`` clears both, so a peer that restarted (on another
   port) can be reached at once.
8. The swarm's auto-connector redials every peer it has ever heard of (including departed
   ones and those we disconnected) every 10 s while under 50 connections; we stop it: the
   node decides whom to connect to.
9. Keys over 50 bytes break FIND_NODE (``p2p.py`` refuses them); the default permissive ``/pk``
   and ``/ipns`` namespaces are not served, only ours.
10. Each inbound connection's handler task lives until the swarm stops, holding one of 250
    inbound slots: a long-running node stops accepting peers after 250 have come and gone. We
    end the handler when its connection closes.
11. ``host.run()`` carries on when an address cannot be bound (``ListenFailed`` instead), and a
    host listening on 0.0.0.0 announces /ip4/0.0.0.0/..., which no peer can dial: we announce
    each interface's address.
12. libp2p logs noisily at shutdown; its logger is silent unless LIBP2P_DEBUG is set.
13. Every pubsub RPC (heartbeat control messages included) carries the sender's signed peer
    record, and the receiver verifies its signature each time, although a sender sends the same
    cached record over and over: with a few dozen nodes that was a third of the libp2p thread's
    CPU. Verified records are remembered by their exact bytes (``_remember_verified_records``),
    so each distinct record is verified once; a changed or forged record is still verified.
14. A node sends its own messages only to its mesh peers. A node whose peers are all hubs
    (bootstrap nodes, a room's host: every newcomer grafts them, they prune down to the mesh
    degree and refuse a regraft for 60 s) keeps an empty mesh, and a one-shot message (a room's
    end) missed it unless heartbeat gossip (IHAVE to 6 random non-mesh peers) happened to pick
    it: under load, most runs of 20 nodes lost the end somewhere. Gossipsub v1.1 "flood publishing" (go-libp2p's
    default) sends a node's own messages to every peer subscribed to the topic;
    ``_flood_own_messages`` does that. Forwarded messages still follow the mesh.
15. Gossipsub 1.2 sends an IDONTWANT, as an RPC of its own carrying our signed peer record, to
    every mesh peer for every message received, however small. go-libp2p sends it only for
    messages of 1 KiB or more (``IDONTWANT_MIN_BYTES``), where it saves more than it costs;
    ``_idontwant_only_for_large_messages``.
16. Before every pubsub RPC it sends, the router rebuilds the host's address list (multiaddrs
    parsed from strings) to check that its cached signed peer record still matches, then
    re-serialises the record: 3 % or more of a listener's CPU in a 40-listener room. The record
    is reused for ``RECORD_REUSE_S`` before the addresses are looked at again
    (``_reuse_signed_peer_record``); a changed address still reaches peers within that time.
17. ``Pubsub.publish`` only queues a message for each peer's sender task, and closing the host
    does not wait for those queues: the last messages of a node that stops right after sending
    them (a goodbye, a room's end) were lost under load. Stopping first waits, at most
    ``FLUSH_TIMEOUT``, until every peer's queue is empty and no write is under way
    (``_OutboundGossip``, which counts writes by wrapping ``Pubsub.write_msg``).
18. A write on a connection is not safe to cancel. Noise encrypts a frame (using up the next
    nonce) and only then reaches two cancellation points before any byte is sent (the TCP
    stream's write lock, then ``send_all``); yamux writes every frame (SYN, data, window
    update, FIN, RST) from the task that asked for it, inside that task's cancel scopes
    (request/response's ``fail_after``, multiselect timeouts, ours). A timeout that fires
    there drops the ciphertext: the peer's next frame fails to decrypt (NoiseInvalidMessage),
    yamux closes the whole connection and every request in flight on it is lost, unanswered
    or never delivered; the next ones fail until the connection is dialed again (a stress run
    of 20 nodes with requests timing out under two CPU burners: 10–20 connections killed so
    in 20 s, none with this work-around).
    ``_uncancellable_noise_writes``: once encrypted, a frame is written shielded, within
    ``FRAME_WRITE_TIMEOUT``; a frame that cannot be written in that time closes the
    connection (it could not be used any more anyway).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.common import ALPHA, QUERY_TIMEOUT
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import InvalidAddrError, info_from_p2p_addr
from libp2p.pubsub import gossipsub as libp2p_gossipsub_module
from libp2p.pubsub import pubsub as libp2p_pubsub_module
from libp2p.pubsub import utils as libp2p_pubsub_utils
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import OutBoundQueueSize
from libp2p.records.validator import NamespacedValidator, Validator
from libp2p.relay.circuit_v2 import CircuitV2Protocol, CircuitV2Transport, RelayLimits
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.request_response import (
    BytesCodec,
    MessageTooLargeError,
    ProtocolNotSupportedError,
    RequestContext,
    RequestResponse,
    RequestResponseConfig,
    RequestTimeoutError,
)
from libp2p.security.noise.io import NoiseTransportReadWriter
from libp2p.tools.anyio_service import background_trio_service
from multiaddr.utils import get_network_addrs, is_link_local_ip

from p2pvoix.errors import Rejected
from p2pvoix.node.bridge import Portal
from p2pvoix.node.p2p import (
    DHT_INVALID,
    GOSSIP_INVALID,
    RESPONSE_TOO_LARGE,
    VALIDATOR_ERROR,
    BadMultiaddr,
    ConnectFailed,
    Counters,
    ListenFailed,
    NotRunning,
    P2PConfig,
    ProtocolUnsupported,
    RequestFailed,
    RequestTimeout,
    StaleRecord,
)


def _remember_verified_records() -> None:
    """Work-around 13: verify each distinct signed peer record once, not on every RPC."""
    verify = libp2p_pubsub_utils.consume_envelope
    if getattr(verify, "p2pvoix_memo", False):
        return
    remembered: dict[tuple[bytes, str], Any] = {}

    def consume_once(data: bytes, domain: str) -> Any:
        key = (bytes(data), domain)
        found = remembered.get(key)
        if found is None:
            found = verify(data, domain)  # raises for a bad record: nothing is remembered
            if len(remembered) >= VERIFIED_RECORDS:
                remembered.pop(next(iter(remembered)))
            remembered[key] = found
        return found

    consume_once.p2pvoix_memo = True  # type: ignore[attr-defined]
    libp2p_pubsub_utils.consume_envelope = consume_once


_remember_verified_records()


def _reuse_signed_peer_record() -> None:
    """Work-around 16: the pubsub layer reuses the host's signed peer record for
    ``RECORD_REUSE_S`` instead of checking its addresses before every RPC."""
    stock = libp2p_pubsub_module.env_to_send_in_RPC
    if getattr(stock, "p2pvoix_reuse", False):
        return
    held: weakref.WeakKeyDictionary[IHost, tuple[float, bytes]] = weakref.WeakKeyDictionary()

    def reused_record(host: IHost) -> tuple[bytes, bool]:
        now = time.monotonic()
        cached = held.get(host)
        if cached is not None and now - cached[0] < RECORD_REUSE_S:
            return cached[1], False
        record, created = stock(host)
        held[host] = (now, record)
        return record, created

    reused_record.p2pvoix_reuse = True  # type: ignore[attr-defined]
    reused_record.stock = stock  # type: ignore[attr-defined]
    libp2p_pubsub_module.env_to_send_in_RPC = reused_record
    libp2p_gossipsub_module.env_to_send_in_RPC = reused_record


_reuse_signed_peer_record()


def _uncancellable_noise_writes() -> None:
    """Work-around 18: an encrypted Noise frame always reaches the socket whole (or the
    connection is closed), whatever cancel scope the writing task is in."""
    stock = NoiseTransportReadWriter.write_msg
    if getattr(stock, "p2pvoix_shielded", False):
        return

    async def write_msg(self: Any, msg: bytes, prefix_encoded: bool = False) -> None:
        # A task cancelled before this point has encrypted nothing: nothing is lost. One scope,
        # shielded from the caller's and bounded by its own deadline: this runs for every frame
        # (a nested move_on_after cost 26 µs a frame, this 10).
        deadline = trio.current_time() + FRAME_WRITE_TIMEOUT
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            await stock(self, msg, prefix_encoded)
        if scope.cancelled_caught:
            # Part of a frame, or a frame whose nonce the peer will never see: the connection
            # cannot carry another frame.
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self.close()
            raise ConnectionClosedError(
                f"a frame could not be written in {FRAME_WRITE_TIMEOUT:g} s")

    write_msg.p2pvoix_shielded = True  # type: ignore[attr-defined]
    write_msg.stock = stock  # type: ignore[attr-defined]
    NoiseTransportReadWriter.write_msg = write_msg  # type: ignore[method-assign]


_uncancellable_noise_writes()


if not os.environ.get("LIBP2P_DEBUG"):
    # libp2p leaves its logger without handlers, so warnings reach stderr via logging.lastResort.
    _libp2p_logger = logging.getLogger("libp2p")
    _libp2p_logger.handlers[:] = [logging.NullHandler()]
    _libp2p_logger.propagate = False

logger = logging.getLogger(__name__)

GOSSIP_PROTOCOLS = [PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID]
# Every gossip message reaches a node from about as many mesh peers as had it first: 4 (not the
# usual 6) keeps the duplicates near three, which a room's listeners pay for in CPU; own
# messages are flooded anyway (work-around 14), so reach does not hang on the mesh alone.
GOSSIP_DEGREE, GOSSIP_DEGREE_LOW, GOSSIP_DEGREE_HIGH = 4, 3, 8
GOSSIP_HEARTBEAT = 1  # seconds; the library default of 120 s leaves meshes unrepaired
IDONTWANT_MIN_BYTES = 1024  # go-libp2p's IDontWantMessageThreshold
QUEUE_HEADROOM = 8  # publish waits while a peer's outbound queue has fewer free slots
PUBLISH_WAIT = 2.0  # ...but no longer than this; a drop after that is counted
IDENTIFY_WAIT = 10.0  # give up adding a peer to the routing table after this
CLOSE_TIMEOUT = 5.0
FLUSH_TIMEOUT = 1.0  # stopping waits this long at most for queued gossip to be written
VERIFIED_RECORDS = 4096  # distinct signed peer records remembered as verified
RECORD_REUSE_S = 1.0  # our signed peer record goes out unchecked for this long
FRAME_WRITE_TIMEOUT = 10.0  # an encrypted frame not written by then closes its connection
# Circuit relay v2, as a hop (p2pvoix node/relay) offers it to nodes behind NATs. Circuits carry
# signalling and gossip, never audio (that goes over WebRTC), so a few MiB last hours; no time
# limit (py-libp2p's default cuts every circuit after an hour, mid-room).
RELAY_LIMITS = RelayLimits(duration=0, data=64 * 1024 * 1024, max_circuit_conns=256,
                           max_reservations=128, reservation_ttl=3600)
RESERVE_TIMEOUT = 5.0


class TrioStack:
    """Host, DHT, pubsub and request/response of one node; lives in the trio thread."""

    def __init__(
        self,
        *,
        seed: bytes,
        config: P2PConfig,
        portal: Portal,
        counters: Counters,
        on_peer: Callable[[str, bool], None],
    ) -> None:
        self._seed = seed
        self._config = config
        self._portal = portal
        self._counters = counters
        self._on_peer = on_peer  # asyncio side; reached through portal.post
        self._validators: dict[str, Validator] = {}
        self._handlers: dict[
            str, tuple[Callable[..., Awaitable[bytes]], RequestResponseConfig]
        ] = {}
        self._stop = trio.Event()
        self._operations: set[trio.CancelScope] = set()  # calls from asyncio in flight
        self._publish_lock = trio.Lock()  # one publish at a time, so waiting for room works
        self._connected: set[ID] = set()
        self._nursery: trio.Nursery | None = None
        self._host: IHost | None = None
        self._pubsub: Pubsub | None = None
        self._gossipsub: GossipSub | None = None
        self._dht: KadDHT | None = None
        self._rr: RequestResponse | None = None
        self._circuit: CircuitV2Protocol | None = None
        self._circuit_transport: CircuitV2Transport | None = None
        self._dcutr: DCUtRProtocol | None = None

    # ---- set-up that may happen before or while running (trio thread or not yet started) ----

    def register_namespace(
        self,
        namespace: str,
        validate: Callable[[str, bytes], None],
        select: Callable[[str, list[bytes]], int],
    ) -> None:
        validator = _CountingValidator(validate, select, self._counters)
        self._validators[namespace] = validator
        if self._dht is not None and isinstance(self._dht.validator, NamespacedValidator):
            self._dht.validator.add_validator(namespace, validator)

    def set_request_handler(
        self,
        protocol_id: str,
        answer: Callable[[str, bytes], Awaitable[bytes]],
        max_request: int,
        max_response: int,
        timeout: float,
    ) -> None:
        config = RequestResponseConfig(
            timeout=timeout, max_request_size=max_request, max_response_size=max_response
        )
        self._handlers[protocol_id] = (answer, config)
        if self._rr is not None:
            self._install_handler(protocol_id, answer, config)

    def request_stop(self) -> None:
        self._stop.set()

    async def guarded(self, operation: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run one call from asyncio as part of the host's life: stopping the host ends it."""
        if self._stop.is_set() or self._host is None:
            raise NotRunning("the node is stopping")
        with trio.CancelScope() as scope:
            self._operations.add(scope)
            try:
                return await operation(*args)
            except BaseExceptionGroup as group:
                raise _unwrapped(group) from None
            finally:
                self._operations.discard(scope)
        raise NotRunning("the node stopped during this call")

    # ---- the host's life ----

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        except BaseExceptionGroup as group:
            raise _unwrapped(group) from None

    async def _run(self, task_status: Any) -> None:
        listen = [_parse_multiaddr(a) for a in self._config.listen]
        private = Ed25519PrivateKey.from_bytes(self._seed)
        host = new_host(
            key_pair=KeyPair(private, private.get_public_key()),
            listen_addrs=listen,
            connection_config=ConnectionConfig(
                max_connections_per_peer=self._config.max_connections_per_peer
            ),
            addrs_factory=_dialable,
        )
        _end_inbound_handlers_with_their_connection(host.get_network())
        gossipsub = GossipSub(
            GOSSIP_PROTOCOLS,
            degree=GOSSIP_DEGREE,
            degree_low=GOSSIP_DEGREE_LOW,
            degree_high=GOSSIP_DEGREE_HIGH,
            heartbeat_interval=GOSSIP_HEARTBEAT,
            spam_protection_enabled=False,
            adaptive_gossip_enabled=False,
        )
        pubsub = Pubsub(host, gossipsub, strict_signing=True)
        pubsub.counter = time.time_ns()
        outbound = _OutboundGossip(pubsub)
        counted = self._counting_drops(gossipsub._handle_dropped_rpc)
        gossipsub._handle_dropped_rpc = counted  # type: ignore[method-assign]
        flooding = _flood_own_messages(gossipsub, host.get_id())
        gossipsub._get_peers_to_send = flooding  # type: ignore[method-assign]
        gossipsub._emit_idontwant_for_message = _idontwant_only_for_large_messages(gossipsub)  # type: ignore[method-assign]
        dht = KadDHT(
            host,
            DHTMode.SERVER,
            validator=NamespacedValidator(dict(self._validators), strict_validation=True),
            validator_changed=True,
            strict_validation=True,
        )
        self._host, self._pubsub, self._gossipsub, self._dht = host, pubsub, gossipsub, dht
        self._rr = RequestResponse(host)
        for protocol_id, (answer, config) in self._handlers.items():
            self._install_handler(protocol_id, answer, config)
        # Every node accepts relayed connections (the stop side) and can dial through a relay;
        # only a node configured as a hop relays for others.
        self._circuit = CircuitV2Protocol(host, limits=RELAY_LIMITS,
                                          allow_hop=self._config.relay_hop)
        self._circuit_transport = CircuitV2Transport(host, self._circuit,
                                                     RelayConfig(roles=RelayRole.STOP))
        # Hole punching (DCUtR): a connection through a relay is upgraded to a direct one where
        # both NATs allow it. It drives itself every 2 s for each relayed peer; TCP listeners use
        # SO_REUSEPORT so the punch leaves from the listen port (py-libp2p's tcp transport).
        self._dcutr = DCUtRProtocol(host)
        try:
            async with host.run(listen):
                try:
                    async with (
                        background_trio_service(pubsub),
                        background_trio_service(gossipsub),
                        background_trio_service(dht),
                        background_trio_service(self._circuit),
                        background_trio_service(self._dcutr),
                        trio.open_nursery() as nursery,
                    ):
                        self._nursery = nursery
                        _check_listening(host, listen)
                        await host.get_network().auto_connector.stop()
                        host.get_network().register_notifee(_PeerNotifee(self))
                        await pubsub.wait_until_ready()
                        task_status.started([str(a) for a in host.get_addrs()])
                        await self._stop.wait()
                        await outbound.flush(FLUSH_TIMEOUT)
                        for scope in list(self._operations):
                            scope.cancel()
                        await self._close_host()
                        nursery.cancel_scope.cancel()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._close_host()
        finally:
            self._nursery = None
            pubsub.seen_messages.stop()  # a thread per Pubsub, not stopped by the service

    async def _close_host(self) -> None:
        host = self._host
        if host is None:
            return
        self._host = None
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            # Each close sleeps 100 ms before notifying; host.close() would do them one by one.
            async with trio.open_nursery() as nursery:
                for conns in list(host.get_network().connections.values()):
                    for conn in list(conns):
                        nursery.start_soon(_close_quietly, conn)
            await host.close()
        if scope.cancelled_caught:
            logger.warning("closing the libp2p host took over %.0f s", CLOSE_TIMEOUT)

    # ---- connections ----

    async def connect(self, address: str, timeout: float) -> str:
        host = self._require_host()
        try:
            info = info_from_p2p_addr(_parse_multiaddr(address))
        except (InvalidAddrError, ValueError) as exc:
            raise BadMultiaddr(f"{address!r}: it must end in /p2p/<peer id> ({exc})") from None
        if info.peer_id == host.get_id():
            raise BadMultiaddr(f"{address!r} is this node's own address")
        if "/p2p-circuit/" in address:
            return await self._connect_through_relay(address, info.peer_id, timeout)
        # Dial exactly this address: libp2p dials one TCP address per peer, the first it knows,
        # which is stale if the peer restarted elsewhere; and a failed dial blocks it for 60 s.
        if not host.get_network().get_connections(info.peer_id):
            host.get_peerstore().clear_addrs(info.peer_id)
            host.get_network()._negative_peer_cache.evict(str(info.peer_id))
        try:
            with trio.fail_after(timeout):
                await host.connect(info)
        except trio.TooSlowError:
            raise ConnectFailed(f"{address}: no connection within {timeout:g} s") from None
        except Exception as exc:
            raise ConnectFailed(f"{address}: {_describe(exc)}") from None
        return info.peer_id.to_base58()

    async def _connect_through_relay(self, address: str, peer_id: ID, timeout: float) -> str:
        """Dial ``<relay>/p2p-circuit/p2p/<peer>``. py-libp2p's swarm drops relay addresses
        from every dial (``swarm.dial_peer``), so the circuit transport dials here; the
        connection it makes joins the swarm, and requests and gossip then use it."""
        host = self._require_host()
        if host.get_network().get_connections(peer_id):
            return peer_id.to_base58()
        transport = self._require(self._circuit_transport)
        try:
            with trio.fail_after(timeout):
                await transport.dial(_parse_multiaddr(address))
        except trio.TooSlowError:
            raise ConnectFailed(f"{address}: no relayed connection within {timeout:g} s") from None
        except Exception as exc:
            raise ConnectFailed(f"{address}: {_describe(exc)}") from None
        return peer_id.to_base58()

    async def reserve(self, relay_peer_id: str) -> str | None:
        """Reserve a slot on a connected peer that relays (circuit relay v2), so that others can
        reach this node through it; returns our circuit address there, or None if it refused
        (or does not relay). The caller renews it within the reservation's hour.

        Not ``CircuitV2Transport.reserve``: its refresh task spins without sleeping once the relay
        is gone (thousands of attempts a second, each logged), and never reserves again when the
        relay comes back. We send the same RESERVE (``_make_reservation``) and renew ourselves.
        """
        host = self._require_host()
        relay = ID.from_base58(relay_peer_id)
        transport = self._require(self._circuit_transport)
        stream = None
        try:
            with trio.fail_after(RESERVE_TIMEOUT):
                stream = await host.new_stream(relay, [HOP_PROTOCOL_ID])
                accepted = await transport._make_reservation(stream, relay)
        except Exception as exc:
            logger.debug("reservation on %s failed: %s", relay_peer_id[-6:], _describe(exc))
            return None
        finally:
            if stream is not None:
                with trio.move_on_after(1):
                    await stream.close()
        if not accepted:
            return None
        seen = self.remote_address(relay_peer_id)
        if seen is None:
            return None
        # The relay's listening address at the IP we reach it on (identify told us its listen
        # addresses); the port our own connection went to if identify has not answered yet.
        listening = [str(a) for a in host.get_peerstore().addrs(relay)
                     if str(a).startswith(f"/ip4/{seen[0]}/tcp/")]
        base = listening[0].split("/p2p/")[0] if listening else f"/ip4/{seen[0]}/tcp/{seen[1]}"
        return f"{base}/p2p/{relay_peer_id}/p2p-circuit/p2p/{host.get_id().to_base58()}"

    async def disconnect(self, peer_id: str) -> None:
        await self._require_host().disconnect(ID.from_base58(peer_id))

    def _on_connection_change(self, peer_id: ID) -> None:
        host = self._host
        connected = host is not None and bool(host.get_network().get_connections(peer_id))
        if connected == (peer_id in self._connected):
            return
        if connected:
            self._connected.add(peer_id)
            if self._nursery is not None:
                self._nursery.start_soon(self._add_to_routing_table, peer_id)
        else:
            self._connected.discard(peer_id)
            if self._dht is not None:
                self._dht.routing_table.remove_peer(peer_id)
        self._portal.post(self._on_peer, peer_id.to_base58(), connected)

    async def _add_to_routing_table(self, peer_id: ID) -> None:
        # add_peer refuses a peer until identify has stored its listen addresses and protocols.
        host, dht = self._host, self._dht
        if host is None or dht is None:
            return
        with trio.move_on_after(IDENTIFY_WAIT):
            while not _identified(host, peer_id):
                if peer_id not in self._connected:
                    return
                await trio.sleep(0.02)
            if await dht.add_peer(peer_id):
                self._counters.add("dht_routing_added")

    # ---- DHT ----

    async def dht_put(self, key: str, value: bytes) -> None:
        dht = self._require(self._dht)
        try:
            await dht.put_value(key, value)
        except ValueError as exc:  # put_value refuses to replace a newer record with an older
            raise StaleRecord(f"{key}: {exc}") from None
        self._counters.add("dht_puts")

    async def dht_get(self, key: str) -> bytes | None:
        dht = self._require(self._dht)
        validator = dht.validator
        assert isinstance(validator, NamespacedValidator)
        key_bytes = key.encode()
        self._counters.add("dht_gets")
        records = []
        local = dht.value_store.get(key_bytes)
        if local is not None:
            records.append(local)
        peers = [
            p
            for p in await dht.peer_routing.find_closest_peers_network(key_bytes)
            if p != dht.local_peer_id
        ]
        limiter = trio.CapacityLimiter(ALPHA)

        async def ask(peer: ID) -> None:
            async with limiter:
                with trio.move_on_after(QUERY_TIMEOUT):
                    try:
                        record = await dht.value_store._get_from_peer(
                            peer, key_bytes, return_record=True
                        )
                    except Exception:
                        return
                    if record is None or not record.value:
                        return
                    try:
                        validator.validate(key, record.value)
                    except Exception:
                        return  # counted by the namespace's validator
                    records.append(record)

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
        if not records:
            return None
        best = records[validator.select(key, [r.value for r in records])]
        if best is not local:
            dht.value_store.put_record(key_bytes, best)
        return bytes(best.value)

    # ---- gossip ----

    async def subscribe(
        self,
        topic: str,
        validate: Callable[[bytes, str], bool],
        deliver: Callable[[bytes, str], None],
    ) -> None:
        pubsub = self._require(self._pubsub)
        nursery = self._require(self._nursery)
        pubsub.set_topic_validator(topic, self._gossip_validator(validate), False)
        subscription = await pubsub.subscribe(topic)
        nursery.start_soon(self._read_topic, subscription, deliver)

    async def unsubscribe(self, topic: str) -> None:
        pubsub = self._require(self._pubsub)
        await pubsub.unsubscribe(topic)  # ends the reader: its channel closes
        pubsub.remove_topic_validator(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        pubsub = self._require(self._pubsub)
        async with self._publish_lock:
            await self._wait_for_queue_room(pubsub)
            await pubsub.publish(topic, data)
        self._counters.add("gossip_out")

    def remote_address(self, peer_id: str) -> tuple[str, int] | None:
        """The (IP, port) our newest connection with ``peer_id`` comes from, as our socket sees
        it: behind a NAT, the NAT's public side. py-libp2p keeps it on the muxed connection
        (``get_remote_address``, yamux and mplex alike); None for a relayed connection."""
        host = self._require_host()
        for conn in reversed(host.get_network().get_connections(ID.from_base58(peer_id))):
            address = conn.muxed_conn.get_remote_address()
            if address is not None:
                return str(address[0]), int(address[1])
        return None

    def mesh_peers(self, topic: str) -> frozenset[str]:
        gossipsub = self._require(self._gossipsub)
        return frozenset(p.to_base58() for p in gossipsub.mesh.get(topic, ()))

    async def _read_topic(self, subscription: Any, deliver: Callable[[bytes, str], None]) -> None:
        # Reads at once and never blocks: the subscription channel holds 32 and drops the rest.
        own = self._require(self._host).get_id().to_bytes()
        async for message in subscription:
            if message.from_id == own:
                continue
            self._counters.add("gossip_in")
            self._portal.post(deliver, bytes(message.data), ID(message.from_id).to_base58())

    def _gossip_validator(
        self, validate: Callable[[bytes, str], bool]
    ) -> Callable[[ID, rpc_pb2.Message], bool]:
        counters = self._counters

        def check(_forwarder: ID, message: rpc_pb2.Message) -> bool:
            try:
                ok = validate(bytes(message.data), ID(message.from_id).to_base58())
            except Rejected as exc:
                counters.reject(exc.reason)
                return False
            except Exception:
                counters.reject(VALIDATOR_ERROR)
                logger.exception("gossip validator failed")
                return False
            if not ok:
                counters.reject(GOSSIP_INVALID)
            return bool(ok)

        return check

    async def _wait_for_queue_room(self, pubsub: Pubsub) -> None:
        deadline = trio.current_time() + PUBLISH_WAIT
        limit = OutBoundQueueSize - QUEUE_HEADROOM
        while any(len(q) > limit for q in pubsub.peer_queues.values()):
            if trio.current_time() > deadline:
                return
            await trio.sleep(0.002)

    def _counting_drops(self, original: Callable[..., None]) -> Callable[..., None]:
        counters = self._counters

        def handle_dropped_rpc(peer_id: ID, rpc: Any, reason: str = "") -> None:
            counters.add(f"dropped_gossip_{reason or 'rpc'}")
            original(peer_id, rpc, reason)

        return handle_dropped_rpc

    # ---- request/response ----

    async def request(
        self, peer_id: str, protocol_id: str, data: bytes, timeout: float, max_response: int
    ) -> bytes:
        rr = self._require(self._rr)
        config = RequestResponseConfig(
            timeout=timeout, max_request_size=max(1, len(data)), max_response_size=max_response
        )
        self._counters.add("requests_out")
        try:
            return await rr.send_request(
                ID.from_base58(peer_id), [TProtocol(protocol_id)], data, BytesCodec(), config
            )
        except RequestTimeoutError:
            raise RequestTimeout(
                f"{protocol_id} to {peer_id}: no answer in {timeout:g} s"
            ) from None
        except ProtocolNotSupportedError:
            raise ProtocolUnsupported(f"{peer_id} does not speak {protocol_id}") from None
        except MessageTooLargeError:
            self._counters.reject(RESPONSE_TOO_LARGE)
            raise RequestFailed(
                f"{peer_id} answered {protocol_id} with over {max_response} bytes"
            ) from None
        except Exception as exc:
            raise RequestFailed(f"{protocol_id} to {peer_id}: {_describe(exc)}") from None

    def _install_handler(
        self,
        protocol_id: str,
        answer: Callable[[str, bytes], Awaitable[bytes]],
        config: RequestResponseConfig,
    ) -> None:
        portal, rr = self._portal, self._require(self._rr)

        async def handle(request: bytes, context: RequestContext) -> bytes:
            return await portal.call_asyncio(answer, context.peer_id.to_base58(), request)

        rr.set_handler(TProtocol(protocol_id), handle, BytesCodec(), config)

    # ---- helpers ----

    def _require_host(self) -> IHost:
        return self._require(self._host)

    @staticmethod
    def _require(thing: Any) -> Any:
        if thing is None:
            raise RuntimeError("the libp2p host is not running")
        return thing


class _PeerNotifee(INotifee):
    """Turns libp2p connection notices into peer-level changes (first up, last down)."""

    def __init__(self, stack: TrioStack) -> None:
        self._stack = stack

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._stack._on_connection_change(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._stack._on_connection_change(conn.muxed_conn.peer_id)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


class _CountingValidator(Validator):
    """A namespace's validate/select, counting refusals; runs for our records and peers'."""

    def __init__(
        self,
        validate: Callable[[str, bytes], None],
        select: Callable[[str, list[bytes]], int],
        counters: Counters,
    ) -> None:
        self._validate = validate
        self._select = select
        self._counters = counters

    def validate(self, key: str, value: bytes) -> None:
        try:
            self._validate(key, bytes(value))
        except Rejected as exc:
            self._counters.reject(exc.reason)
            raise
        except Exception:
            self._counters.reject(DHT_INVALID)
            raise

    def select(self, key: str, values: list[bytes]) -> int:
        index = self._select(key, [bytes(v) for v in values])
        if not isinstance(index, int) or not 0 <= index < len(values):
            raise ValueError(f"select returned {index!r} for {len(values)} values")
        return index


class _InboundSlot:
    def __init__(self) -> None:
        self.upgraded = trio.Event()
        self.muxed_conn: Any = None


_inbound_slot: contextvars.ContextVar[_InboundSlot] = contextvars.ContextVar("inbound_slot")


def _end_inbound_handlers_with_their_connection(swarm: Any) -> None:
    """Each inbound connection's handler task waits for the whole swarm to stop, holding one of
    250 inbound slots: after 250 peers have come and gone, no one can connect. End the handler
    when its connection closes instead."""
    handle = swarm._do_handle_inbound_connection
    upgrade = swarm.upgrade_inbound_raw_conn

    async def upgrade_and_note(raw_conn: Any, maddr: multiaddr.Multiaddr) -> Any:
        muxed_conn = await upgrade(raw_conn, maddr)
        slot = _inbound_slot.get(None)
        if slot is not None:
            slot.muxed_conn = muxed_conn
            slot.upgraded.set()
        return muxed_conn

    async def handle_until_closed(read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
        slot = _InboundSlot()
        _inbound_slot.set(slot)  # this task's context; the tasks below inherit it

        async def end_when_closed() -> None:
            await slot.upgraded.wait()
            for conn in swarm.get_connections(slot.muxed_conn.peer_id):
                if conn.muxed_conn is slot.muxed_conn:
                    await conn.event_closed.wait()
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(end_when_closed)
            await handle(read_write_closer, maddr, failure_event)
            nursery.cancel_scope.cancel()

    swarm._do_handle_inbound_connection = handle_until_closed
    swarm.upgrade_inbound_raw_conn = upgrade_and_note


def _unwrapped(group: BaseExceptionGroup) -> BaseException:
    """The one error inside nested nursery groups, Cancelled aside; else the group itself."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    return errors[0] if len(errors) == 1 else group


def _check_listening(host: IHost, requested: list[multiaddr.Multiaddr]) -> None:
    # host.run() carries on silently when an address cannot be bound.
    listeners = host.get_network().listeners
    failed = [str(a) for a in requested if str(a) not in listeners]
    if failed:
        raise ListenFailed(", ".join(failed))


DIALABLE_TTL_S = 5.0  # interfaces change rarely; libp2p asks for our addresses on every message
_dialable_cache: dict[tuple[str, ...], tuple[float, list[multiaddr.Multiaddr]]] = {}


def _dialable(candidates: list[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """Announce each interface's address for a wildcard listen address: libp2p would announce
    /ip4/0.0.0.0/..., which no peer can dial.

    Remembered for a few seconds: py-libp2p builds a signed peer record (and so calls this) for
    every gossip message it sends, and re-expanding the addresses there was ~6 % of a loaded
    node's CPU (bench relay_live profile).
    """
    key = tuple(map(str, candidates))
    now = time.monotonic()
    cached = _dialable_cache.get(key)
    if cached is not None and cached[0] > now:
        return list(cached[1])
    result = _expand_wildcards(key)
    if len(_dialable_cache) > 64:  # listen sets are few; never let this grow
        _dialable_cache.clear()
    _dialable_cache[key] = (now + DIALABLE_TTL_S, result)
    return list(result)


def _expand_wildcards(candidates: tuple[str, ...]) -> list[multiaddr.Multiaddr]:
    out: list[str] = []
    for addr in candidates:
        expanded = [addr]
        for wildcard, family, loopback in (
            ("/ip4/0.0.0.0/", 4, "127.0.0.1"),
            ("/ip6/::/", 6, "::1"),
        ):
            if addr.startswith(wildcard):
                ips = [ip for ip in _interface_ips(family) if not is_link_local_ip(ip)]
                protocol = wildcard.split("/")[1]
                rest = addr[len(wildcard) :]
                expanded = [f"/{protocol}/{ip}/{rest}" for ip in ips or [loopback]]
        out.extend(a for a in expanded if a not in out)
    return [multiaddr.Multiaddr(a) for a in out]


def _interface_ips(family: int) -> list[str]:
    try:
        return list(get_network_addrs(family))
    except Exception:  # no interface information: loopback only
        return []


def _parse_multiaddr(address: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(address)
    except Exception as exc:  # the multiaddr package raises several unrelated types
        raise BadMultiaddr(f"{address!r}: {exc}") from None


def _identified(host: IHost, peer_id: ID) -> bool:
    try:
        return bool(host.get_peerstore().get_protocols(peer_id))
    except Exception:
        return False


async def _close_quietly(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception:
        logger.debug("closing a connection failed", exc_info=True)


def _describe(exc: BaseException) -> str:
    """The innermost useful message of a libp2p error chain (they wrap two or three deep)."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and text not in parts:
            parts.append(text)
        current = current.__cause__ or current.__context__
    return "; ".join(parts[-2:]) or type(exc).__name__


class _OutboundGossip:
    """Work-around 17: what gossip is still on its way out (queued for a peer's sender task, or
    being written), so that a stopping node can let its last messages leave first."""

    def __init__(self, pubsub: Pubsub) -> None:
        self._pubsub = pubsub
        self.writing = 0
        original = pubsub.write_msg

        async def write_msg(stream: INetStream, rpc: rpc_pb2.RPC) -> bool:
            self.writing += 1
            try:
                return await original(stream, rpc)
            finally:
                self.writing -= 1

        pubsub.write_msg = write_msg  # type: ignore[method-assign]

    def pending(self) -> int:
        return self.writing + sum(len(queue) for queue in self._pubsub.peer_queues.values())

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending; False if ``timeout`` ran out first."""
        with trio.move_on_after(timeout):
            while self.pending():
                await trio.sleep(0.005)
            return True
        return False


def _flood_own_messages(gossipsub: GossipSub, me: ID) -> Callable[..., Any]:
    """Work-around 14: our own messages go to every peer subscribed to their topic (flood
    publishing), not only to the mesh; forwarded ones are left to the router."""
    original = gossipsub._get_peers_to_send

    def peers_to_send(topic_ids: Any, msg_forwarder: ID, origin: ID,
                      msg_id: bytes | None = None) -> set[ID]:
        topics = list(topic_ids)
        peers = set(original(topics, msg_forwarder, origin, msg_id))
        if msg_forwarder == me and origin == me and gossipsub.pubsub is not None:
            for topic in topics:
                peers.update(gossipsub.pubsub.peer_topics.get(topic, ()))
            peers.discard(me)
        return peers

    return peers_to_send


def _idontwant_only_for_large_messages(gossipsub: GossipSub) -> Callable[..., Awaitable[None]]:
    """Work-around 15: IDONTWANT only for messages of ``IDONTWANT_MIN_BYTES`` or more. The router
    has put the message in its cache before it announces it, so its size is known there."""
    original = gossipsub._emit_idontwant_for_message

    async def emit_for_large(msg_id: bytes, topic_ids: Any) -> None:
        message = gossipsub.mcache.get(msg_id)
        if message is not None and len(message.data) < IDONTWANT_MIN_BYTES:
            return
        await original(msg_id, topic_ids)

    return emit_for_large
