"""The node's libp2p adapter, seen from asyncio: connections, Kademlia, gossipsub, requests.

``P2PNode`` runs one libp2p host in the portal's trio thread (``node/bridge.py``) and offers plain
asyncio methods: bytes in, bytes out, peer IDs as ``12D3KooW…`` strings. libp2p itself is imported
only by its trio half, ``_p2p_trio.py``, which also holds every py-libp2p 0.8.1 work-around.

Trust: gossip validators run in the trio thread before anything is forwarded; DHT validators run on
put, on get and when a peer stores a record here. A refusal is counted under its reason (a
validator may raise ``Rejected(reason)`` instead of returning False) and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.errors import P2pvoixError, Rejected, UsageError
from p2pvoix.node.bridge import BridgeClosed, Portal, TrioTask
from p2pvoix.node.logtag import NODE_TAG

if TYPE_CHECKING:
    from p2pvoix.node._p2p_trio import TrioStack

__all__ = [
    "BadMultiaddr",
    "BadPeerId",
    "ConnectFailed",
    "DhtKeyError",
    "InvalidRecord",
    "ListenFailed",
    "MessageTooLarge",
    "NotRunning",
    "P2PConfig",
    "P2PNode",
    "P2PStatistics",
    "PeerConnected",
    "PeerDisconnected",
    "PeerEvents",
    "ProtocolUnsupported",
    "RequestFailed",
    "RequestTimeout",
    "StaleRecord",
]

logger = logging.getLogger(__name__)

GossipValidator = Callable[[bytes, str], bool]  # (data, origin peer) -> accept; pure, thread-safe
GossipHandler = Callable[[bytes, str], Awaitable[None]]
RequestHandler = Callable[[str, bytes], Awaitable[bytes]]  # (peer, request) -> response
DhtValidate = Callable[[str, bytes], None]  # raise to refuse
DhtSelect = Callable[[str, list[bytes]], int]  # index of the best value

MAX_DHT_KEY = 50  # bytes: libp2p refuses longer FIND_NODE keys, so lookups would not travel
MAX_GOSSIP_MESSAGE = 256 * 1024
MAX_REQUEST = 1024 * 1024
DEFAULT_MAX_RESPONSE = 1024 * 1024
GOSSIP_BACKLOG = 10_000  # messages waiting for a slow handler before new ones are dropped, counted

# Reason codes counted in ``P2PStatistics.rejected`` besides those a validator raises.
GOSSIP_INVALID = "gossip-invalid"
DHT_INVALID = "dht-invalid"
VALIDATOR_ERROR = "validator-error"  # a validator raised something other than Rejected: our bug
HANDLER_ERROR = "handler-error"  # a request or gossip handler raised something other than Rejected
RESPONSE_TOO_LARGE = "response-too-large"


# ---- errors ----


class BadMultiaddr(UsageError):
    """That is not a usable peer address. A peer address looks like
    /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW… (its transport, then the peer's ID)."""


class BadPeerId(UsageError):
    """That is not a libp2p peer ID; they look like 12D3KooW… (52 characters)."""


class ListenFailed(P2pvoixError):
    """Could not listen on that address: the port may be in use, or the address may not belong
    to this machine. Choose another port or address."""


class NotRunning(P2pvoixError):
    """The peer-to-peer node is not running. Start it first."""


class ConnectFailed(P2pvoixError):
    """Could not connect to that peer. Check the address, and that the peer is running and
    reachable from this network."""


class RequestFailed(P2pvoixError):
    """A request to a peer failed: the peer could not be reached, dropped the stream, or refused
    the request."""


class RequestTimeout(RequestFailed):
    """A peer did not answer in time."""


class ProtocolUnsupported(RequestFailed):
    """The peer does not speak that protocol; it may run a different version of p2pvoix."""


class MessageTooLarge(P2pvoixError):
    """That message is larger than the network accepts, so it was not sent."""


class InvalidRecord(P2pvoixError):
    """That record fails its own validation, so it was not published."""


class StaleRecord(P2pvoixError):
    """A newer record is already stored under that key, so the older one was not published."""


class DhtKeyError(ValueError):
    """A DHT key must be /<registered namespace>/<name>, at most 50 bytes of UTF-8."""


# ---- configuration, events, statistics ----


@dataclass(frozen=True)
class P2PConfig:
    """Where the host listens and whom it dials first."""

    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    bootstrap_timeout: float = 5.0
    # 1 skips py-libp2p's 250 ms happy-eyeballs wait on every dial; above 1 restores it.
    max_connections_per_peer: int = 1
    # Relay connections for nodes behind NATs (circuit relay v2 hop): p2pvoix node and relay.
    relay_hop: bool = False

    def __post_init__(self) -> None:
        for name in ("listen", "bootstrap"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(a, str) for a in value):
                raise TypeError(f"P2PConfig.{name} is a tuple of multiaddr strings")
            object.__setattr__(self, name, tuple(value))
        if not self.listen:
            raise ValueError("P2PConfig.listen needs at least one address")
        if self.max_connections_per_peer < 1:
            raise ValueError("max_connections_per_peer is at least 1")


@dataclass(frozen=True)
class PeerConnected:
    peer_id: str


@dataclass(frozen=True)
class PeerDisconnected:
    peer_id: str


PeerEvent = PeerConnected | PeerDisconnected


@dataclass(frozen=True)
class P2PStatistics:
    peers: int
    counters: Mapping[str, int]  # gossip_in/out, requests_in/out, dht_puts/gets, dropped_*
    rejected: Mapping[str, int]  # refused remote input, per reason


class Counters:
    """Thread-safe counters: the trio thread and the asyncio loop both count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def reject(self, reason: str) -> None:
        with self._lock:
            self._rejected[str(reason)] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self._counts), dict(self._rejected)


class PeerEvents:
    """Connected/disconnected events in order, from ``P2PNode.peer_events()`` until closed."""

    def __init__(self, node: P2PNode) -> None:
        self._node = node
        self._queue: asyncio.Queue[PeerEvent | None] = asyncio.Queue()
        self._closed = False

    def __aiter__(self) -> PeerEvents:
        return self

    async def __anext__(self) -> PeerEvent:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self._closed = True
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        self._node._event_streams.discard(self)
        self._push(None)

    def __enter__(self) -> PeerEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _push(self, event: PeerEvent | None) -> None:
        self._queue.put_nowait(event)


# ---- the node ----


class P2PNode:
    """One libp2p identity on the network; every method is called from the asyncio loop."""

    def __init__(self, key: SigningKey, portal: Portal) -> None:
        self._key = key
        self._portal = portal
        self._stack: TrioStack | None = None
        self._host_task: asyncio.Task[None] | None = None  # ends when the trio side has
        self._state = "new"  # new -> running -> stopped
        self._addrs: list[str] = []
        self._connected: set[str] = set()
        self._changed = asyncio.Event()
        self._event_streams: set[PeerEvents] = set()
        self._namespaces: dict[str, tuple[DhtValidate, DhtSelect]] = {}
        self._request_handlers: dict[str, tuple[RequestHandler, int, int, float]] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._counters = Counters()

    @property
    def peer_id(self) -> str:
        return self._key.public.peer_id

    @property
    def running(self) -> bool:
        return self._state == "running"

    # ---- lifecycle ----

    async def start(self, config: P2PConfig | None = None) -> None:
        """Listen, start DHT and gossip, then dial the bootstrap peers (failures are logged)."""
        from p2pvoix.node._p2p_trio import TrioStack  # libp2p loads only when a node starts

        if self._state != "new":
            raise RuntimeError("a P2PNode starts once")
        config = config or P2PConfig()
        self._stack = TrioStack(
            seed=self._key.seed,
            config=config,
            portal=self._portal,
            counters=self._counters,
            on_peer=self._on_peer,
        )
        for namespace, (validate, select) in self._namespaces.items():
            self._stack.register_namespace(namespace, validate, select)
        for protocol_id, (handler, max_req, max_resp, timeout) in self._request_handlers.items():
            self._stack.set_request_handler(
                protocol_id, self._wrap_handler(handler), max_req, max_resp, timeout
            )
        task = await self._portal.start_task(self._stack.run, name=f"p2p {self.peer_id}")
        self._addrs = list(task.value)
        self._state = "running"
        self._host_task = asyncio.create_task(self._watch_host(task), name=f"p2p {self.peer_id}")
        if config.bootstrap:
            await self._bootstrap(config.bootstrap, config.bootstrap_timeout)

    async def stop(self) -> None:
        """Close every connection (peers see this node leave) and release every resource."""
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopped"
        assert self._stack is not None and self._host_task is not None
        try:
            await self._portal.run_sync(self._stack.request_stop)
        except P2pvoixError:  # the portal stopped first and cancelled the host with it
            pass
        await self._host_task

    async def _watch_host(self, task: TrioTask) -> None:
        try:
            await task.wait()
        except BridgeClosed:
            logger.debug("p2p host %s ended with the portal", self.peer_id)
        except Exception:
            logger.exception("p2p host %s failed", self.peer_id)
        if self._state == "running":
            logger.error("p2p host %s stopped without being asked to", self.peer_id)
            self._state = "stopped"
        for subscription in list(self._subscriptions.values()):
            await subscription.close()
        self._subscriptions.clear()
        for peer_id in sorted(self._connected):
            self._on_peer(peer_id, False)
        for stream in list(self._event_streams):
            stream.close()

    def addrs(self) -> list[str]:
        """Full multiaddrs of this node, each ending in /p2p/<peer id>."""
        return list(self._addrs)

    # ---- connections ----

    async def connect(self, multiaddr: str, timeout: float = 10.0) -> str:
        """Dial ``multiaddr`` (it must end in /p2p/<peer id>) and return the peer's ID."""
        stack = self._require_running()
        return await self._portal.call(stack.guarded, stack.connect, multiaddr, timeout)

    async def disconnect(self, peer_id: str) -> None:
        _check_peer_id(peer_id)
        stack = self._require_running()
        await self._portal.call(stack.guarded, stack.disconnect, peer_id)

    def connected_peers(self) -> frozenset[str]:
        return frozenset(self._connected)

    async def reserve(self, relay_peer_id: str) -> str | None:
        """Reserve a circuit relay slot on a connected peer; our circuit address through it, or
        None if it refused or does not relay. A reservation lasts an hour: renew it."""
        _check_peer_id(relay_peer_id)
        stack = self._require_running()
        return await self._portal.call(stack.guarded, stack.reserve, relay_peer_id)

    async def remote_address(self, peer_id: str) -> tuple[str, int] | None:
        """The (IP, port) our connection with ``peer_id`` comes from; None if not connected
        directly."""
        _check_peer_id(peer_id)
        stack = self._require_running()
        return await self._portal.run_sync(stack.remote_address, peer_id)

    def peer_events(self) -> PeerEvents:
        """A stream of PeerConnected/PeerDisconnected from now on; close it when done."""
        stream = PeerEvents(self)
        if self._state == "stopped":
            stream.close()
        else:
            self._event_streams.add(stream)
        return stream

    async def wait_connected(self, peer_id: str) -> None:
        while peer_id not in self._connected:
            await self._changed.wait()

    async def wait_disconnected(self, peer_id: str) -> None:
        while peer_id in self._connected:
            await self._changed.wait()

    # ---- Kademlia DHT ----

    def register_dht_namespace(
        self, namespace: str, validate: DhtValidate, select: DhtSelect
    ) -> None:
        """Accept records under /<namespace>/…; ``validate`` raises to refuse, ``select`` picks.

        Both must be pure and thread-safe: they run in the trio thread, also for peers' records.
        """
        if not namespace or "/" in namespace:
            raise ValueError(f"a DHT namespace is one path segment, not {namespace!r}")
        self._namespaces[namespace] = (validate, select)
        if self._stack is not None and self.running:
            self._portal.run_sync_soon(self._stack.register_namespace, namespace, validate, select)

    async def dht_put(self, key: str, value: bytes) -> None:
        """Store ``value`` here and at the peers closest to ``key`` (best effort)."""
        self._check_dht_key(key)
        validate, select = self._namespaces[key.split("/")[1]]
        try:
            validate(key, value)
        except Exception as exc:
            raise InvalidRecord(str(exc)) from exc
        stack = self._require_running()
        await self._portal.call(stack.guarded, stack.dht_put, key, value)

    async def dht_get(self, key: str) -> bytes | None:
        """The best valid record for ``key`` from the closest peers and this node, or None."""
        self._check_dht_key(key)
        stack = self._require_running()
        return await self._portal.call(stack.guarded, stack.dht_get, key)

    # ---- gossip ----

    async def subscribe(
        self, topic: str, validator: GossipValidator, handler: GossipHandler
    ) -> None:
        """Receive ``topic``: ``validator(data, origin)`` decides in the trio thread, before
        anything is forwarded; accepted messages from other peers reach ``await handler(data,
        origin)`` in order. This node's own messages are not handed back."""
        stack = self._require_running()
        if topic in self._subscriptions:
            raise ValueError(f"already subscribed to {topic!r}")
        subscription = _Subscription(topic, validator, handler, self._counters)
        self._subscriptions[topic] = subscription
        try:
            await self._portal.call(
                stack.guarded, stack.subscribe, topic, validator, subscription.deliver
            )
        except BaseException:
            del self._subscriptions[topic]
            await subscription.close()
            raise

    async def unsubscribe(self, topic: str) -> None:
        subscription = self._subscriptions.pop(topic, None)
        if subscription is None:
            return
        await subscription.close()
        if self.running and self._stack is not None:
            await self._portal.call(self._stack.guarded, self._stack.unsubscribe, topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Send ``data`` to ``topic``; it must pass this node's own validator for the topic."""
        if len(data) > MAX_GOSSIP_MESSAGE:
            raise MessageTooLarge(f"{len(data)} bytes; gossip carries at most {MAX_GOSSIP_MESSAGE}")
        subscription = self._subscriptions.get(topic)
        if subscription is not None:
            try:
                ok = subscription.validator(data, self.peer_id)
            except Exception as exc:
                raise InvalidRecord(f"topic {topic}: {exc}") from exc
            if not ok:
                raise InvalidRecord(f"topic {topic}: this node's validator refuses the message")
        stack = self._require_running()
        await self._portal.call(stack.guarded, stack.publish, topic, bytes(data))

    async def gossip_peers(self, topic: str) -> frozenset[str]:
        """Peers this node sends ``topic`` to directly (its gossipsub mesh for the topic)."""
        stack = self._require_running()
        return await self._portal.run_sync(stack.mesh_peers, topic)

    # ---- request/response ----

    def set_request_handler(
        self,
        protocol_id: str,
        handler: RequestHandler,
        *,
        max_request: int = 64 * 1024,
        max_response: int = DEFAULT_MAX_RESPONSE,
        timeout: float = 10.0,
    ) -> None:
        """Answer ``protocol_id`` streams with ``await handler(peer_id, request) -> response``.

        Requests over ``max_request`` and handlers over ``timeout`` reset the stream, as does a
        handler that raises (``Rejected`` is counted under its reason) or answers with no bytes
        (py-libp2p cannot frame an empty message).
        """
        if not protocol_id.startswith("/"):
            raise ValueError(f"a protocol ID starts with '/', not {protocol_id!r}")
        self._request_handlers[protocol_id] = (handler, max_request, max_response, timeout)
        if self._stack is not None and self.running:
            self._portal.run_sync_soon(
                self._stack.set_request_handler,
                protocol_id,
                self._wrap_handler(handler),
                max_request,
                max_response,
                timeout,
            )

    async def request(
        self,
        peer_id: str,
        protocol_id: str,
        data: bytes,
        *,
        timeout: float = 10.0,
        max_response: int = DEFAULT_MAX_RESPONSE,
    ) -> bytes:
        """Send one request (at least one byte) on a new stream and return the response.

        Dials the peer if needed, from addresses learned earlier.
        """
        _check_peer_id(peer_id)
        if not data:
            # py-libp2p reads a zero-length message as "wait for data": it would time out.
            raise ValueError("a request carries at least one byte")
        if len(data) > MAX_REQUEST:
            raise MessageTooLarge(f"{len(data)} bytes; a request carries at most {MAX_REQUEST}")
        stack = self._require_running()
        return await self._portal.call(
            stack.guarded, stack.request, peer_id, protocol_id, bytes(data), timeout, max_response
        )

    # ---- statistics ----

    def statistics(self) -> P2PStatistics:
        counts, rejected = self._counters.snapshot()
        return P2PStatistics(peers=len(self._connected), counters=counts, rejected=rejected)

    # ---- internals ----

    def _require_running(self) -> TrioStack:
        if self._state != "running" or self._stack is None:
            raise NotRunning(f"node {self.peer_id} is {self._state}")
        return self._stack

    def _check_dht_key(self, key: str) -> None:
        parts = key.split("/") if isinstance(key, str) else []
        if len(parts) < 3 or parts[0] or not parts[2] or len(key.encode()) > MAX_DHT_KEY:
            raise DhtKeyError(f"{key!r}")
        if parts[1] not in self._namespaces:
            raise DhtKeyError(f"{key!r}: namespace {parts[1]!r} is not registered")

    def _on_peer(self, peer_id: str, connected: bool) -> None:
        # Runs on the asyncio loop, posted by the trio side in the order connections change.
        if connected == (peer_id in self._connected):
            return
        if connected:
            self._connected.add(peer_id)
            event: PeerEvent = PeerConnected(peer_id)
        else:
            self._connected.discard(peer_id)
            event = PeerDisconnected(peer_id)
        for stream in self._event_streams:
            stream._push(event)
        self._changed.set()
        self._changed = asyncio.Event()

    async def _bootstrap(self, addrs: tuple[str, ...], timeout: float) -> None:
        results = await asyncio.gather(
            *(self.connect(addr, timeout) for addr in addrs), return_exceptions=True
        )
        for addr, result in zip(addrs, results, strict=True):
            if isinstance(result, BaseException):
                self._counters.add("bootstrap_failed")
                logger.warning("bootstrap peer %s: %s", addr, result)

    def _wrap_handler(self, handler: RequestHandler) -> RequestHandler:
        counters = self._counters
        tag = NODE_TAG.get()  # each answer runs in a task of its own, started from trio

        async def answer(peer_id: str, request: bytes) -> bytes:
            NODE_TAG.set(tag)
            counters.add("requests_in")
            try:
                response = await handler(peer_id, request)
            except Rejected as exc:
                counters.reject(exc.reason)
                raise
            except NotRunning:
                raise  # a request that arrived as we stopped: unanswered, and no fault of ours
            except Exception:
                counters.reject(HANDLER_ERROR)
                logger.exception("request handler failed for a request from %s", peer_id)
                raise
            if not isinstance(response, bytes | bytearray | memoryview) or not response:
                counters.reject(HANDLER_ERROR)
                logger.error(
                    "request handler for %s returned %r, not non-empty bytes", peer_id, response
                )
                raise TypeError("a request handler returns non-empty bytes")
            return bytes(response)

        return answer


def _check_peer_id(peer_id: str) -> None:
    try:
        PublicKey.from_peer_id(peer_id)
    except Rejected:
        raise BadPeerId(repr(peer_id)) from None


class _Subscription:
    """One topic's asyncio side: a backlog and the task that feeds the handler in order."""

    def __init__(
        self, topic: str, validator: GossipValidator, handler: GossipHandler, counters: Counters
    ) -> None:
        self.topic = topic
        self.validator = validator
        self._handler = handler
        self._counters = counters
        self._backlog: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue(GOSSIP_BACKLOG)
        self._task = asyncio.create_task(self._feed(), name=f"gossip {topic}")

    def deliver(self, data: bytes, origin: str) -> None:
        # Posted from the trio thread; never blocks it.
        try:
            self._backlog.put_nowait((data, origin))
        except asyncio.QueueFull:
            self._counters.add("dropped_gossip_backlog")

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _feed(self) -> None:
        while True:
            data, origin = await self._backlog.get()
            try:
                await self._handler(data, origin)
            except Rejected as exc:
                self._counters.reject(exc.reason)
            except Exception:
                self._counters.reject(HANDLER_ERROR)
                logger.exception("gossip handler for %s failed", self.topic)
