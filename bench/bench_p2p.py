"""libp2p adapter figures on loopback: connect (with and without the dial work-around), bridge
overhead, request round trip, gossip latency over 1 and 4 hops, DHT put/get at 20 and 50 nodes,
and the libp2p thread's CPU per small gossip message with our pubsub work-arounds (15, IDONTWANT
only for large messages, and 16, our peer record reused, in ``node/_p2p_trio.py``) against
py-libp2p's stock behaviour, in the same run.

Every node runs in one portal's trio thread, as in the app; times are seen from asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
import statistics
import time
from collections.abc import Iterator

from libp2p.pubsub import gossipsub as gossipsub_module
from libp2p.pubsub import pubsub as pubsub_module

import p2pvoix.node._p2p_trio  # noqa: F401  (installs the work-arounds the CPU figure compares)
from bench._common import thread_cpu_seconds
from p2pvoix.crypto.keys import SigningKey
from p2pvoix.node.bridge import Portal
from p2pvoix.node.p2p import P2PConfig, P2PNode

_keys = itertools.count()


def _key() -> SigningKey:
    return SigningKey(hashlib.sha256(b"bench p2p %d" % next(_keys)).digest())


def _ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 3),
        "n": len(ordered),
    }


async def _nodes(portal: Portal, n: int, config: P2PConfig | None = None) -> list[P2PNode]:
    nodes = [P2PNode(_key(), portal) for _ in range(n)]
    for node in nodes:
        node.register_dht_namespace("bench", _validate, _select)
        await node.start(config)
    return nodes


def _validate(key: str, value: bytes) -> None:
    if len(value) < 8:
        raise ValueError("short record")


def _select(key: str, values: list[bytes]) -> int:
    return max(range(len(values)), key=lambda i: values[i][:8])


async def _stop(nodes: list[P2PNode]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes))


async def _connect_times(portal: Portal, per_peer: int, rounds: int) -> list[float]:
    config = P2PConfig(max_connections_per_peer=per_peer)
    hub, *peers = await _nodes(portal, rounds + 1, config)
    times = []
    for peer in peers:
        started = time.perf_counter()
        await hub.connect(peer.addrs()[0])
        times.append(time.perf_counter() - started)
    await _stop([hub, *peers])
    return times


async def _bridge_times(portal: Portal, rounds: int) -> tuple[list[float], list[float]]:
    async def noop() -> None:
        return None

    calls, syncs = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        await portal.call(noop)
        calls.append(time.perf_counter() - started)
        started = time.perf_counter()
        await portal.run_sync(int)
        syncs.append(time.perf_counter() - started)
    return calls, syncs


async def _request_times(portal: Portal, rounds: int) -> list[float]:
    a, b = await _nodes(portal, 2)

    async def answer(peer_id: str, request: bytes) -> bytes:
        return request

    b.set_request_handler("/bench/echo/1", answer)
    await a.connect(b.addrs()[0])
    payload = bytes(3000)  # about an SDP offer
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await a.request(b.peer_id, "/bench/echo/1", payload)
        times.append(time.perf_counter() - started)
    await _stop([a, b])
    return times


async def _gossip_times(portal: Portal, rounds: int) -> tuple[list[float], list[float], float]:
    nodes = await _nodes(portal, 5)
    for a, b in itertools.pairwise(nodes):
        await a.connect(b.addrs()[0])
    arrivals: dict[int, dict[bytes, float]] = {1: {}, 4: {}}
    for index, node in enumerate(nodes):

        async def handler(data: bytes, origin: str, index: int = index) -> None:
            if index in arrivals:
                arrivals[index][data] = time.perf_counter()

        await node.subscribe("bench", lambda d, o: True, handler)
    deadline = time.monotonic() + 10
    while not all([await n.gossip_peers("bench") for n in nodes]):
        if time.monotonic() > deadline:
            raise RuntimeError("the gossip mesh did not form")
        await asyncio.sleep(0.02)
    one_hop, four_hops = [], []
    for i in range(rounds):
        data = b"message %d" % i
        started = time.perf_counter()
        await nodes[0].publish("bench", data)
        while data not in arrivals[4]:
            await asyncio.sleep(0.0005)
        one_hop.append(arrivals[1][data] - started)
        four_hops.append(arrivals[4][data] - started)
    # A burst of concurrent publishes: the 32-deep peer queues would drop most without back-off.
    burst = [b"burst %d" % i for i in range(200)]
    started = time.perf_counter()
    await asyncio.gather(*(nodes[0].publish("bench", m) for m in burst))
    while not all(m in arrivals[4] for m in burst) and time.perf_counter() - started < 10:
        await asyncio.sleep(0.005)
    delivered = sum(m in arrivals[4] for m in burst) / len(burst)
    await _stop(nodes)
    return one_hop, four_hops, delivered


GOSSIP_CPU_NODES = 12
PRESENCE_BYTES = 400  # a room presence record is about this size


async def _gossip_cpu(portal: Portal, messages: int, stock: bool) -> tuple[float, float]:
    """Libp2p-thread CPU milliseconds per message delivered (and the share delivered),
    ``messages`` presence-sized messages published round-robin by ``GOSSIP_CPU_NODES`` nodes (a
    random graph, three links each). ``stock``: py-libp2p's own IDONTWANT for every message, and
    its peer record checked against the host's addresses before every RPC."""
    with _stock_peer_record(stock):
        return await _gossip_cpu_of(portal, messages, stock)


@contextlib.contextmanager
def _stock_peer_record(stock: bool) -> Iterator[None]:
    reused = pubsub_module.env_to_send_in_RPC
    if stock:
        pubsub_module.env_to_send_in_RPC = gossipsub_module.env_to_send_in_RPC = reused.stock
    try:
        yield
    finally:
        pubsub_module.env_to_send_in_RPC = gossipsub_module.env_to_send_in_RPC = reused


async def _gossip_cpu_of(portal: Portal, messages: int, stock: bool) -> tuple[float, float]:
    nodes = await _nodes(portal, GOSSIP_CPU_NODES)
    rng = random.Random(7)
    for i, node in enumerate(nodes[1:], 1):
        for other in rng.sample(nodes[:i], min(i, 3)):
            await node.connect(other.addrs()[0])
    if stock:
        for node in nodes:
            router = node._stack._gossipsub  # type: ignore[union-attr]
            stock_emit = type(router)._emit_idontwant_for_message
            router._emit_idontwant_for_message = stock_emit.__get__(router)
    delivered = 0

    async def count(data: bytes, origin: str) -> None:
        nonlocal delivered
        delivered += 1

    for node in nodes:
        await node.subscribe("cpu", lambda d, o: True, count)
    await asyncio.sleep(3)  # meshes form over a few heartbeats
    before = thread_cpu_seconds().get("libp2p", 0.0)
    expected = messages * (len(nodes) - 1)
    for i in range(messages):
        await nodes[i % len(nodes)].publish("cpu", i.to_bytes(4, "big") + bytes(PRESENCE_BYTES))
        await asyncio.sleep(0.01)
    deadline = time.monotonic() + 10
    while delivered < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    spent = thread_cpu_seconds().get("libp2p", 0.0) - before
    await _stop(nodes)
    return round(spent * 1000 / max(1, delivered), 3), round(delivered / expected, 4)


async def _dht_times(portal: Portal, n: int, rounds: int) -> tuple[list[float], list[float]]:
    rng = random.Random(n)
    nodes = await _nodes(portal, n)
    for i, node in enumerate(nodes[1:], start=1):
        for peer in rng.sample(nodes[:i], min(3, i)):
            await node.connect(peer.addrs()[0])
    deadline = time.monotonic() + 20
    while any(not node.statistics().counters.get("dht_routing_added") for node in nodes):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    puts, gets = [], []
    for i in range(rounds):
        writer, reader = rng.sample(nodes, 2)
        key, value = f"/bench/room{i}", i.to_bytes(8, "big") + b"record"
        started = time.perf_counter()
        await writer.dht_put(key, value)
        puts.append(time.perf_counter() - started)
        started = time.perf_counter()
        found = await reader.dht_get(key)
        gets.append(time.perf_counter() - started)
        if found != value:
            raise RuntimeError(f"{key}: got {found!r}")
    await _stop(nodes)
    return puts, gets


async def _stop_time(portal: Portal, peers: int) -> float:
    hub, *others = await _nodes(portal, peers + 1)
    for other in others:
        await other.connect(hub.addrs()[0])
    started = time.perf_counter()
    await hub.stop()
    took = time.perf_counter() - started
    await _stop(others)
    return took


async def _main(quick: bool) -> dict:
    portal = Portal()
    await portal.start()
    try:
        figures: dict = {}
        rounds = 5 if quick else 15
        figures["connect_workaround"] = _ms(await _connect_times(portal, 1, rounds))
        figures["connect_stock"] = _ms(await _connect_times(portal, 3, rounds))
        calls, syncs = await _bridge_times(portal, 500 if quick else 3000)
        figures["bridge_call"] = _ms(calls)
        figures["bridge_run_sync"] = _ms(syncs)
        figures["request_3kB"] = _ms(await _request_times(portal, 50 if quick else 300))
        one, four, delivered = await _gossip_times(portal, 30 if quick else 150)
        figures["gossip_1_hop"] = _ms(one)
        figures["gossip_4_hops"] = _ms(four)
        figures["gossip_burst_200_delivered"] = delivered
        figures["stop_with_8_peers_ms"] = round(await _stop_time(portal, 8) * 1000, 1)
        messages = 200 if quick else 600
        for name, stock in (("gossip_cpu_stock", True), ("gossip_cpu", False)):
            spent, share = await _gossip_cpu(portal, messages, stock)
            figures[f"{name}_ms_per_delivery"] = spent
            figures[f"{name}_delivered"] = share
        for n in (20,) if quick else (20, 50):
            puts, gets = await _dht_times(portal, n, 5 if quick else 15)
            figures[f"dht_put_{n}_nodes"] = _ms(puts)
            figures[f"dht_get_{n}_nodes"] = _ms(gets)
        return figures
    finally:
        await portal.stop()


def main(quick: bool) -> dict:
    figures = asyncio.run(_main(quick))
    print(f"{'figure':<28} {'p50 ms':>10} {'p90 ms':>10} {'n':>6}")
    for name, value in figures.items():
        if isinstance(value, dict):
            print(f"{name:<28} {value['p50_ms']:>10.2f} {value['p90_ms']:>10.2f} {value['n']:>6}")
        else:
            print(f"{name:<28} {value:>10}")
    stock, ours = figures["connect_stock"]["p50_ms"], figures["connect_workaround"]["p50_ms"]
    print(
        f"connect: {stock / ours:.0f}x faster with max_connections_per_peer=1"
        f" ({stock} -> {ours} ms)"
    )
    stock = figures["gossip_cpu_stock_ms_per_delivery"]
    ours = figures["gossip_cpu_ms_per_delivery"]
    print(f"gossip: {stock / ours:.2f}x less libp2p CPU per small message delivered with the"
          f" pubsub work-arounds ({stock} -> {ours} ms)")
    return figures


if __name__ == "__main__":
    main(quick=False)
