"""The node runtime on real libp2p hosts over loopback: discovery by gossip, DHT and exchange;
bad records counted and kept out; bootstrap errors; clean start/stop cycles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from pathlib import Path

import pytest

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.directory.events import Source
from p2pvoix.directory.records import announce, dht_key
from p2pvoix.identity.store import Identity
from p2pvoix.node.bridge import Portal
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.p2p import BadMultiaddr, InvalidRecord, P2PConfig, P2PNode, RequestTimeout
from p2pvoix.node.runtime import ROOMS_TOPIC, Node, NodeUnreachable, RoomNotFound

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


def identity(i: int) -> Identity:
    return Identity(SigningKey(bytes([i % 251 + 1]) * 32), None)


def config(bootstrap=(), ttl=60.0) -> NodeConfig:
    return NodeConfig(home=Path("/nonexistent"), listen=LOOPBACK, lan=False,
                      bootstrap=tuple(bootstrap), announce_ttl_s=ttl)


def announcer(room: SigningKey, node: Node, ttl_s: float):
    def make(now_ms: int, ended: bool):
        return announce(room, title="Darija & friends", host=node.identity.key.public,
                        host_name="Amina", addrs=node.addrs(), now_ms=now_ms,
                        ttl_ms=int(ttl_s * 1000), tags=("diaspora",), lang="ar-MA",
                        ended=ended)
    return make


async def wait_for(predicate, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``predicate()`` holds; fails the test after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def network(count: int, ttl: float = 60.0, seed: int = 1):
    """``count`` nodes in one process, each with its own identity and host, sharing one trio
    thread; node i bootstraps from a random earlier node, so paths have several hops."""
    portal = Portal()
    await portal.start()
    nodes: list[Node] = []
    rng = random.Random(seed)
    try:
        for i in range(count):
            boot = () if i == 0 else (rng.choice(nodes).addrs()[0],)
            node = Node(identity(i), config(boot, ttl), portal=portal)
            await node.start()
            nodes.append(node)
        yield nodes
    finally:
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
        await portal.stop()


async def test_twenty_nodes_find_a_room_by_gossip_and_by_key_then_see_it_end():
    # A long expiry, so that only the end announcement can make the room vanish within the wait.
    async with network(20, ttl=30.0) as nodes:
        host, far = nodes[0], nodes[19]
        room = SigningKey(os.urandom(32))
        await host.host(room.public, announcer(room, host, 30.0))
        await wait_for(lambda: far.directory.get(room.public) is not None, 15)
        assert far.directory.get(room.public).title == "Darija & friends"
        # A node that knows only the key (not the gossip) finds where to connect via the DHT.
        far.directory = type(far.directory)()
        record = await far.p2p.dht_get(dht_key(room.public))
        assert record is not None
        contacts = await far.find_room(RoomKey(room.public), timeout=10)
        assert contacts[0].peer_id == host.peer_id
        assert any(addr.endswith(host.peer_id) for addr in contacts[0].addrs)
        # A clean stop of the host announces the end: gone everywhere long before expiry (30 s).
        await host.stop_hosting(room.public)
        await wait_for(lambda: all(n.directory.get(room.public) is None for n in nodes[1:]), 10)


async def test_a_room_whose_host_vanishes_disappears_within_its_expiry():
    async with network(4, ttl=3.0) as nodes:
        host, other = nodes[0], nodes[3]
        room = SigningKey(os.urandom(32))
        await host.host(room.public, announcer(room, host, 3.0))
        await wait_for(lambda: other.directory.get(room.public) is not None, 10)
        host._hosted.pop(room.public)  # the host process dies: no goodbye, no republishing
        waited = await wait_for(lambda: other.directory.get(room.public) is None, 6)
        assert waited <= 3.5


async def test_a_fresh_node_lists_rooms_at_once_through_the_directory_exchange():
    async with network(3) as nodes:
        room = SigningKey(os.urandom(32))
        await nodes[0].host(room.public, announcer(room, nodes[0], 60))
        await wait_for(lambda: nodes[2].directory.get(room.public) is not None, 10)
        # Joins after the announcement was gossiped: learns it from its bootstrap peer's reply.
        late = Node(identity(99), config((nodes[2].addrs()[0],)))
        async with late:
            waited = await wait_for(lambda: late.directory.get(room.public) is not None, 5)
        assert waited < 2


async def test_bad_records_never_enter_a_directory_and_are_counted():
    async with network(2) as nodes:
        victim = nodes[1]
        # A raw libp2p node that skips our validators and publishes junk on the rooms topic.
        portal = Portal()
        await portal.start()
        rogue = P2PNode(SigningKey(os.urandom(32)), portal)
        try:
            await rogue.start(P2PConfig(listen=LOOPBACK))
            await rogue.subscribe(ROOMS_TOPIC, lambda data, origin: True, _ignore)
            await rogue.connect(victim.addrs()[0])
            await asyncio.sleep(1.5)  # let the gossip mesh form
            room, other = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
            now = victim.now_ms()
            good = announce(room, title="x", host=rogue._key.public, host_name="r", addrs=[],
                            now_ms=now, ttl_ms=60_000).encoded
            forged = bytearray(good)
            forged[-3] ^= 1
            expired = announce(room, title="x", host=rogue._key.public, host_name="r",
                               addrs=[], now_ms=now - 120_000, ttl_ms=60_000).encoded
            wrong_key = _signed_by_other(room, other, now)
            for junk in (bytes(forged), expired, wrong_key, b"\xa1\x00", b"\x00" * 3000):
                await rogue.publish(ROOMS_TOPIC, junk)
            await wait_for(lambda: victim.statistics()["rejected"] and
                           sum(victim.statistics()["rejected"].values()) >= 5, 10)
            assert len(victim.directory) == 0
            rejected = victim.statistics()["rejected"]
            assert rejected.get("bad-signature", 0) >= 1
            assert rejected.get("announce-expired", 0) >= 1
            assert rejected.get("announce-not-signed-by-room", 0) >= 1
            # And a forged DHT record is refused by the storing node as well.
            with pytest.raises(InvalidRecord):
                await victim.p2p.dht_put(dht_key(room.public), bytes(forged))
        finally:
            await rogue.stop()
            await portal.stop()


async def _ignore(data: bytes, origin: str) -> None:
    return None


def _signed_by_other(room: SigningKey, other: SigningKey, now: int) -> bytes:
    from p2pvoix.crypto import cbor
    from p2pvoix.crypto.envelope import seal
    from p2pvoix.directory.records import ANNOUNCE

    body = cbor.decode(announce(room, title="x", host=other.public, host_name="r", addrs=[],
                                now_ms=now, ttl_ms=60_000).encoded, max_size=4096)["b"]
    return seal(ANNOUNCE, other, body, room=room.public.raw, time=now).encoded


async def test_a_malformed_bootstrap_address_is_a_usage_error():
    node = Node(identity(7), config(("/ip4/not-an-ip/tcp/1",)))
    with pytest.raises(BadMultiaddr):
        await node.start()


async def test_an_unreachable_bootstrap_fails_clearly_and_quickly():
    dead = f"/ip4/127.0.0.1/tcp/9/p2p/{identity(8).peer_id}"
    node = Node(identity(7), config((dead,)))
    started = time.monotonic()
    with pytest.raises(NodeUnreachable) as caught:
        await node.start()
    assert time.monotonic() - started < 8
    assert "bootstrap" in caught.value.user_message


async def test_a_node_alone_says_it_is_isolated_and_find_room_gives_up():
    async with Node(identity(5), config()) as node:
        assert node.isolated()
        with pytest.raises(RoomNotFound):
            await node.find_room(RoomKey(SigningKey(os.urandom(32)).public), timeout=1)


async def test_ten_start_stop_cycles_leave_nothing_behind_and_peers_see_us_leave():
    async with Node(identity(1), config()) as anchor:
        await _one_cycle(anchor)  # warm up imports and lazily made pools
        threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
        for i in range(10):
            await _one_cycle(anchor, i)
        await asyncio.sleep(0.2)
        assert threading.active_count() == threads
        assert len(os.listdir("/proc/self/fd")) <= fds + 1


async def _one_cycle(anchor: Node, i: int = 0) -> None:
    node = Node(identity(40 + i), config((anchor.addrs()[0],)))
    await node.start()
    await wait_for(lambda: node.peer_id in anchor.p2p.connected_peers(), 5)
    await node.stop()
    await wait_for(lambda: node.peer_id not in anchor.p2p.connected_peers(), 5)


def test_sources_are_recorded_per_listing():
    assert {Source.GOSSIP, Source.DHT, Source.LAN} == set(Source)


async def test_an_unanswered_idempotent_request_is_sent_again_within_its_timeout():
    """py-libp2p under load loses some requests outright; room_request tries again in time."""
    room = bytes(32)
    async with network(2) as (server, client):
        calls: list[bytes] = []

        async def answer(peer_id: str, payload: bytes) -> bytes:
            calls.append(payload)
            if len(calls) == 1:
                await asyncio.sleep(30)  # the first one is "lost": it is never answered
            return b"ok:" + payload

        server.set_room_handler("/p2pvoix/test-echo/1.0.0", room, answer)
        await wait_for(lambda: server.peer_id in client.p2p.connected_peers(), 10)
        started = time.monotonic()
        reply = await client.room_request(server.peer_id, "/p2pvoix/test-echo/1.0.0", room, b"x",
                                          timeout=3.0)
        assert reply == b"ok:x" and len(calls) == 2
        assert time.monotonic() - started < 3.0 and client.requests_retried == 1

        # A request that must not be repeated (an action) waits out its timeout once instead.
        calls.clear()
        with pytest.raises(RequestTimeout):
            await client.room_request(server.peer_id, "/p2pvoix/test-echo/1.0.0", room, b"y",
                                      timeout=1.5, idempotent=False)
        assert len(calls) == 1
