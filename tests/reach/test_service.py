"""Reachability on real nodes over loopback: dial-backs, the server's rules, STUN via coturn."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.errors import P2pvoixError
from p2pvoix.identity.store import Identity
from p2pvoix.node.bridge import Portal
from p2pvoix.node.config import NodeConfig
from p2pvoix.node.runtime import Node
from p2pvoix.reach import dialback
from p2pvoix.reach.service import stun_mappings
from tests.coturn import coturn

pytestmark = [pytest.mark.async_timeout(40), pytest.mark.timeout(60)]
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


async def two_nodes(tmp_path: Path, portal: Portal) -> list[Node]:
    nodes: list[Node] = []
    for _ in range(2):
        identity = Identity(SigningKey(os.urandom(32)), None)
        boot = (nodes[0].addrs()[0],) if nodes else ()
        node = Node(identity, NodeConfig(home=tmp_path, listen=LOOPBACK, lan=False,
                                         bootstrap=boot), portal=portal)
        await node.start()
        nodes.append(node)
    return nodes


async def test_nodes_that_reach_each_other_learn_they_are_public_and_the_rules_hold(tmp_path):
    portal = Portal()
    await portal.start()
    nodes = await two_nodes(tmp_path, portal)
    try:
        for _ in range(100):
            if all(n.reach == "public" for n in nodes):
                break
            await asyncio.sleep(0.1)
        assert [n.reach for n in nodes] == ["public", "public"]
        asker, server = nodes
        assert server.statistics()["reachability"]["dialbacks_served"] == 1

        # A second request within 30 s is refused (we never scan ports for anyone), as is a
        # malformed one; both are counted, and neither crashes the server.
        for payload, reason in ((dialback.encode_request((4001,)), "dialback-too-soon"),
                                (b"\xa1\x61v\x02", "dialback-malformed")):
            with pytest.raises(P2pvoixError):
                await asker.p2p.request(server.peer_id, dialback.PROTOCOL, payload, timeout=3)
            assert server.reachability.rejections.statistics().get(reason) == 1
    finally:
        for node in nodes:
            await node.stop()
        await portal.stop()


async def test_a_closed_port_is_reported_closed_at_the_address_the_request_came_from(tmp_path):
    portal = Portal()
    await portal.start()
    nodes = await two_nodes(tmp_path, portal)
    try:
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()  # nothing listens there now
        asker, server = nodes
        for _ in range(100):  # the start-up checks first, so they cannot race the one below
            if server.reachability.served and asker.reachability.served:
                break
            await asyncio.sleep(0.1)
        server.reachability._served_at.clear()  # the start-up check used the asker's turn
        reply = dialback.decode_reply(await asker.p2p.request(
            server.peer_id, dialback.PROTOCOL, dialback.encode_request((port,)), timeout=5))
        assert reply.seen_ip == "127.0.0.1" and reply.open_ports == ()
    finally:
        for node in nodes:
            await node.stop()
        await portal.stop()


def test_stun_servers_report_the_socket_address_they_see():
    with coturn(["127.0.0.1"], port=34781), coturn(["127.0.0.1"], port=34782):
        mappings = asyncio.run(stun_mappings((("127.0.0.1", 34781), ("127.0.0.1", 34782))))
    assert [server for server, _ in mappings] == ["127.0.0.1:34781", "127.0.0.1:34782"]
    seen = {address for _, address in mappings}
    assert len(seen) == 1 and next(iter(seen))[0] == "127.0.0.1"  # one socket, no NAT: one view
