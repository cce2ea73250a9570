"""Room discovery on loopback at 20 and 50 nodes: gossip, DHT lookup, mDNS, and libp2p connect.

The nodes (each its own identity and libp2p host) run ``NODES_PER_PROCESS`` to a process sharing
one trio thread, as ``tests/node/test_runtime.py`` does, and the processes spread them over the
cores. Node i bootstraps from one random earlier node, so paths have several hops; times are
``time.monotonic()``, which every process shares.

1. Gossip: a node hosts a room (``Node.host``); time until the last node's directory has it.
2. DHT: a node that has not seen the gossip (its directory replaced by an empty one) looks the room
   up by key: ``Node.find_room(RoomKey(room))`` as ``p2pvoix join`` does, and the bare
   ``dht_get`` inside it.
3. mDNS: two network namespaces on one bridge (``tests/netlab.py``), a ``LanDiscovery`` in each
   (``tests/node/lan_helpers/lan_node.py``): time from one advertising a room until the other
   reports it, for a first registration (with probing) and for a new room on a registered node.
4. libp2p connect with and without the ``max_connections_per_peer=1`` work-around
   (``bench_p2p``'s measurement, repeated here for the table).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import time

from bench._common import expect, goal_mark, receive, start_node, summary_ms, wait_until, worker
from bench.bench_p2p import _connect_times
from p2pvoix.crypto.keys import PublicKey, SigningKey
from p2pvoix.crypto.roomkey import RoomKey
from p2pvoix.directory.directory import Directory
from p2pvoix.directory.events import RoomAppeared, Source
from p2pvoix.directory.records import announce, dht_key
from p2pvoix.node.bridge import Portal
from p2pvoix.node.runtime import ROOMS_TOPIC, Node

NODES_PER_PROCESS = 10
GOAL_GOSSIP_MS = 2000
GOAL_DHT_MS = 500
GOAL_MDNS_MS = 3000
MDNS_NODE = ("-m", "tests.node.lan_helpers.lan_node")


def main(quick: bool) -> dict:
    sizes = (20,) if quick else (20, 50)
    rooms = 3 if quick else 5
    lookups = 10 if quick else 20
    figures: dict = {"networks": [_network(n, rooms, lookups, seed=n) for n in sizes]}
    figures["mdns"] = _mdns(2 if quick else 5)
    figures.update(asyncio.run(_connects(5 if quick else 15)))
    _print_table(figures)
    return figures


# -- 1 and 2: gossip and DHT on a network of nodes --------------------------------------------------


def _network(n: int, rooms: int, lookups: int, seed: int) -> dict:
    rng = random.Random(seed)
    counts = [NODES_PER_PROCESS] * (n // NODES_PER_PROCESS)
    if n % NODES_PER_PROCESS:
        counts.append(n % NODES_PER_PROCESS)
    with contextlib.ExitStack() as stack:
        pipes = [stack.enter_context(worker(_peers_process, index, name=f"bench peers {index}"))[1]
                 for index in range(len(counts))]
        addrs: list[str] = []
        where: list[tuple[int, int]] = []  # node number -> (process, index in it)
        for index, (pipe, count) in enumerate(zip(pipes, counts, strict=True)):
            pipe.send({"start": count, "known": addrs, "seed": seed * 100 + index})
            started = expect(pipe, 60, "nodes started")
            addrs += started["addrs"]
            where += [(index, i) for i in range(count)]
        for pipe in pipes:
            pipe.send({"settle": True})
        for pipe in pipes:
            expect(pipe, 60, "gossip mesh and DHT routing")

        gossip_all, gossip_median, hosted = [], [], []
        for r in range(rooms):
            host = rng.randrange(n)
            process, index = where[host]
            room_seed = hashlib.sha256(b"bench discovery %d/%d" % (seed, r)).digest()
            pipes[process].send({"host": index, "room": room_seed})
            hosted_at = expect(pipes[process], 30, "room hosted")
            room = hosted_at["room"]
            seen = []
            for pipe in pipes:
                pipe.send({"seen": room, "timeout": 15})
            for pipe in pipes:
                seen += expect(pipe, 30, "room seen")["times"]
            delays = [t - hosted_at["t0"] for t in seen if t is not None]
            if len(delays) < n:
                raise RuntimeError(f"room {r}: only {len(delays)} of {n} nodes saw it in 15 s")
            gossip_all.append(max(delays))
            gossip_median.append(sorted(delays)[n // 2])
            hosted.append((room, host))

        time.sleep(1.0)  # let the last room's DHT put land before looking rooms up
        found, dht_gets, via_dht = [], [], 0
        for _ in range(lookups):
            room, host = rng.choice(hosted)
            # Two other nodes: one asks the DHT alone, the other finds the room as a join would.
            for reader, how in zip(rng.sample([i for i in range(n) if i != host], 2),
                                   ("dht_get", "find_room"), strict=True):
                process, index = where[reader]
                pipes[process].send({how: room, "node": index})
                result = expect(pipes[process], 30, how)
                if how == "dht_get":
                    if not result["found"]:
                        raise RuntimeError("a DHT lookup did not find a hosted room")
                    dht_gets.append(result["seconds"])
                else:
                    found.append(result["seconds"])
                    via_dht += result["via_dht"]
    return {
        "nodes": n,
        "processes": len(counts),
        "gossip_every_node": summary_ms(gossip_all),
        "gossip_median_node": summary_ms(gossip_median),
        "find_room_fresh": summary_ms(found),
        "find_room_answered_by_dht": via_dht,
        "dht_get": summary_ms(dht_gets),
    }


def _peers_process(pipe, index: int) -> None:
    asyncio.run(_peers(pipe))


async def _peers(pipe) -> None:
    """Nodes of one process, driven by the benchmark: start, settle, host, report, look up."""
    portal = Portal()
    await portal.start()
    nodes: list[Node] = []
    first_seen: list[dict[bytes, float]] = []
    watchers: list[asyncio.Task] = []
    try:
        while (asked := await receive(pipe)) is not None:
            if "start" in asked:
                rng = random.Random(asked["seed"])
                known = list(asked["known"])
                for _ in range(asked["start"]):
                    boot = (rng.choice(known),) if known else ()
                    node = await start_node(portal, boot)
                    nodes.append(node)
                    known.append(node.addrs()[0])
                    seen: dict[bytes, float] = {}
                    first_seen.append(seen)
                    watchers.append(asyncio.create_task(_watch(node, seen)))
                pipe.send({"addrs": [node.addrs()[0] for node in nodes]})
            elif "settle" in asked:
                await _settle(nodes)
                pipe.send("settled")
            elif "host" in asked:
                node = nodes[asked["host"]]
                room = SigningKey(asked["room"])
                started = time.monotonic()
                await node.host(room.public, _announcer(room, node))
                pipe.send({"t0": started, "room": room.public.raw})
            elif "seen" in asked:
                room = asked["seen"]
                with contextlib.suppress(TimeoutError):
                    await wait_until(lambda r=room: all(r in s for s in first_seen),
                                     asked["timeout"], "room seen everywhere")
                pipe.send({"times": [s.get(room) for s in first_seen]})
            elif "find_room" in asked:
                pipe.send(await _find_room(nodes[asked["node"]], PublicKey(asked["find_room"])))
            elif "dht_get" in asked:
                started = time.monotonic()
                record = await nodes[asked["node"]].p2p.dht_get(dht_key(PublicKey(asked["dht_get"])))
                pipe.send({"seconds": time.monotonic() - started, "found": record is not None})
    except Exception as exc:
        with contextlib.suppress(OSError):
            pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
        await portal.stop()


async def _watch(node: Node, seen: dict[bytes, float]) -> None:
    """When each room first entered this node's directory (its events are read as they come)."""
    events = node.watch()
    while (event := await events.get()) is not None:
        if isinstance(event, RoomAppeared):
            seen.setdefault(event.listing.room.raw, time.monotonic())


async def _settle(nodes: list[Node]) -> None:
    """Every node has gossip peers on the rooms topic and someone in its DHT routing table."""

    async def ready() -> bool:
        for node in nodes:
            if not await node.p2p.gossip_peers(ROOMS_TOPIC):
                return False
            if not node.p2p.statistics().counters.get("dht_routing_added"):
                return False
        return True

    deadline = time.monotonic() + 30
    while not await ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the gossip mesh or the DHT routing tables did not form in 30 s")
        await asyncio.sleep(0.1)


async def _find_room(node: Node, room: PublicKey) -> dict:
    """The room by key from a node that has not seen the gossip, as ``p2pvoix join KEY`` finds it.

    ``find_room`` asks the DHT; the peers the DHT query dials answer the node's directory exchange
    meanwhile, so the directory may learn the room from them first (it says which came first)."""
    node.directory = Directory()  # forget the gossip
    started = time.monotonic()
    await node.find_room(RoomKey(room), timeout=10)
    seconds = time.monotonic() - started
    listing = node.directory.get(room)
    return {"seconds": seconds, "via_dht": listing is not None and Source.DHT in listing.seen_via}


def _announcer(room: SigningKey, node: Node):  # type: ignore[no-untyped-def]
    def make(now_ms: int, ended: bool):  # type: ignore[no-untyped-def]
        return announce(room, title="bench room", host=node.identity.key.public,
                        host_name="bench", addrs=node.addrs(), now_ms=now_ms,
                        ttl_ms=int(node.config.announce_ttl_s * 1000), ended=ended)

    return make


# -- 3: mDNS between two network namespaces ---------------------------------------------------------


def _mdns(samples: int) -> dict:
    try:
        from tests import netlab
    except ImportError as exc:
        return {"skipped": f"tests/netlab.py does not import ({exc})"}
    reason = netlab.netns_unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    first, update = [], []
    with netlab.Lab() as lab:
        switch = lab.switch("lan")
        children = []
        for i, name in enumerate("ab"):
            namespace = lab.namespace(name)
            namespace.connect(switch, f"10.77.0.{i + 2}/24")
            children.append(namespace.python(*MDNS_NODE, "--seed", str(i + 1), "--iface", "eth0"))
        peers = []
        for child in children:
            ready = child.expect(lambda m: m.get("event") in ("ready", "error"), timeout=15)
            if ready["event"] != "ready":
                return {"skipped": f"LanDiscovery did not start: {ready}"}
            peers.append(ready["peer_id"])
        a, b = children

        def advert_from_a(rooms: int):  # type: ignore[no-untyped-def]
            return lambda m: (m.get("event") == "advert" and m["peer_id"] == peers[0]
                              and len(m["announcements"]) == rooms)

        for i in range(samples):
            # A node that registers (probes for its name, then announces) with a room in it.
            started = time.monotonic()
            a.send({"cmd": "advertise", "titles": [f"room {i}"]})
            first.append(b.expect(advert_from_a(1), timeout=15)["t"] - started)
            # A registered node that opens a second room: its TXT record changes.
            started = time.monotonic()
            a.send({"cmd": "advertise", "titles": [f"room {i}", f"room {i}+"]})
            update.append(b.expect(advert_from_a(2), timeout=15)["t"] - started)
            a.send({"cmd": "withdraw"})
            a.expect(lambda m: m.get("event") == "withdrawn", timeout=10)
            b.expect(lambda m: m.get("event") == "gone" and m["peer_id"] == peers[0], timeout=10)
        for child in children:
            child.send({"cmd": "stop"})
            child.expect(lambda m: m.get("event") == "stopped", timeout=10)
    return {"first_advert": summary_ms(first), "new_room": summary_ms(update)}


# -- 4: libp2p connect -----------------------------------------------------------------------------


async def _connects(rounds: int) -> dict:
    portal = Portal()
    await portal.start()
    try:
        return {
            "connect_workaround": summary_ms(await _connect_times(portal, 1, rounds)),
            "connect_stock": summary_ms(await _connect_times(portal, 3, rounds)),
        }
    finally:
        await portal.stop()


# -- the table -------------------------------------------------------------------------------------


def _print_table(figures: dict) -> None:
    print(f"{'figure':<50} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'n':>4}  goal (ok/MISSED)")

    def row(label: str, r: dict, goal: float | None = None,
            on: tuple[str, ...] = ("p50_ms", "p95_ms")) -> None:
        verdict = ""
        if goal is not None:
            marks = ", ".join(f"{stat[:3]} {goal_mark(r[stat], goal)}" for stat in on)
            verdict = f"<= {goal:.0f} ms: {marks}"
        print(f"{label:<50} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['max_ms']:>8.1f} "
              f"{r['n']:>4}  {verdict}")

    for net in figures["networks"]:
        n = f"{net['nodes']} nodes"
        row(f"gossip: hosted -> every node has it ({n})", net["gossip_every_node"],
            GOAL_GOSSIP_MS, on=("p50_ms", "max_ms"))
        row(f"gossip: hosted -> half the nodes have it ({n})", net["gossip_median_node"])
        row(f"DHT: dht_get of the room's record ({n})", net["dht_get"], GOAL_DHT_MS)
        row(f"find_room(key), directory emptied ({n})", net["find_room_fresh"], GOAL_DHT_MS)
        print(f"  (find_room answered by the DHT {net['find_room_answered_by_dht']} times of "
              f"{net['find_room_fresh']['n']}, else first by the directory exchange with a peer "
              "the DHT query dialled)")
    mdns = figures["mdns"]
    if "skipped" in mdns:
        print(f"{'mDNS: room advertised -> seen on the LAN':<50} skipped: {mdns['skipped']}")
    else:
        row("mDNS: first advert (probing) -> seen, 2 netns", mdns["first_advert"], GOAL_MDNS_MS,
            on=("p50_ms", "max_ms"))
        row("mDNS: new room on a registered node -> seen", mdns["new_room"], GOAL_MDNS_MS,
            on=("p50_ms", "max_ms"))
    ours, stock = figures["connect_workaround"], figures["connect_stock"]
    row("libp2p connect, max_connections_per_peer=1 (ours)", ours)
    row("libp2p connect, stock (3: 250 ms happy eyeballs)", stock)
    ratio = stock["p50_ms"] / ours["p50_ms"] if ours["p50_ms"] else math.nan
    print(f"connect: stock / ours p50 x{ratio:.0f}")


if __name__ == "__main__":
    main(quick=True)
