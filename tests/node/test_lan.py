"""LanDiscovery: choosing interfaces, refusing bad TXT records, and real mDNS between namespaces.

The namespace tests run ``tests/node/lan_helpers/lan_node.py`` (a LanDiscovery driven by JSON
lines) in namespaces joined by bridges (``tests/netlab.py``); nothing is sent on a real interface.
"""

import asyncio
import base64
import json
import sys
import time

import pytest
from zeroconf import ServiceStateChange

from p2pvoix.crypto.keys import SigningKey
from p2pvoix.directory.lan_txt import SERVICE_TYPE, LanAdvert, TxtReason, encode_txt
from p2pvoix.directory.records import announce, verify_announcement
from p2pvoix.errors import RejectionCounter, UsageError
from p2pvoix.node.interfaces import (
    NetInterface,
    NoLanInterface,
    UnknownInterface,
    _ifaddr_interfaces,
    choose_interfaces,
    system_interfaces,
)
from p2pvoix.node.lan import LanDiscovery, LanReason, _Sightings, _tcp_port, instance_label
from tests import netlab

lab = netlab.lab

LO = NetInterface("lo", 1, "127.0.0.1", up=True, loopback=True, multicast=False)
ETH0 = NetInterface("eth0", 2, "192.168.1.20", up=True, loopback=False, multicast=True)
WLAN0 = NetInterface("wlan0", 3, None, up=True, loopback=False, multicast=True)
DOCKER0 = NetInterface("docker0", 4, "172.17.0.1", up=False, loopback=False, multicast=True)
WG0 = NetInterface("wg0", 5, "10.8.0.2", up=True, loopback=False, multicast=False)
ETH1 = NetInterface("eth1", 6, "10.0.0.7", up=True, loopback=False, multicast=True)
MACHINE = (LO, ETH0, WLAN0, DOCKER0, WG0, ETH1)


# ---- choosing interfaces ----


def test_by_default_every_interface_up_with_ipv4_and_multicast_except_loopback():
    assert choose_interfaces((), MACHINE) == (ETH0, ETH1)


def test_named_interfaces_in_the_order_given_skipping_unusable_ones():
    assert choose_interfaces(("eth1", "wlan0", "eth0", "eth1"), MACHINE) == (ETH1, ETH0)


def test_an_unknown_name_is_a_usage_error_listing_the_interfaces_that_exist():
    with pytest.raises(UnknownInterface) as caught:
        choose_interfaces(("eth0", "eth9"), MACHINE)
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2
    message = caught.value.user_message
    assert message.startswith("No network interface has that name.")
    assert "eth9: not found; interfaces here: docker0, eth0, eth1, lo, wg0, wlan0" in message


def test_no_usable_interface_turns_lan_discovery_off_with_the_reasons():
    with pytest.raises(NoLanInterface) as caught:
        choose_interfaces((), (LO, WLAN0, DOCKER0))
    message = caught.value.user_message
    assert message.startswith("LAN discovery is off: no network interface is up")
    assert "wlan0 has no IPv4 address; docker0 is down" in message
    with pytest.raises(NoLanInterface, match="lo is loopback"):
        choose_interfaces(("lo",), MACHINE)
    with pytest.raises(NoLanInterface, match="interfaces here: lo"):
        choose_interfaces((), (LO,))


def test_this_machine_lists_loopback_as_loopback():
    # Reads the interface table only (ioctl); sends nothing.
    interfaces = {i.name: i for i in system_interfaces()}
    assert interfaces["lo"].loopback and interfaces["lo"].ipv4 == "127.0.0.1"
    assert all(not i.loopback for i in choose_interfaces((), tuple(interfaces.values())))


def test_the_portable_interface_table_lists_loopback_too():
    # What macOS and Windows use; here it reads the same table as the ioctl path.
    interfaces = {i.name: i for i in _ifaddr_interfaces()}
    assert interfaces["lo"].loopback and interfaces["lo"].ipv4 == "127.0.0.1"
    assert {i.name for i in system_interfaces()} >= set(interfaces)


# ---- what peers send ----

HOST = SigningKey(bytes([3] * 32))
ROOM = SigningKey(bytes([4] * 32))
NOW = 1_767_225_600_000


def advert(*titles):
    records = tuple(
        announce(
            ROOM, title=t, host=HOST.public, host_name="h", addrs=[], now_ms=NOW, ttl_ms=60_000
        ).encoded
        for t in titles
    )
    return LanAdvert(HOST.public.peer_id, ("/ip4/10.0.0.1/tcp/4001",), records)


def name_of(peer_id):
    return f"{instance_label(peer_id)}.{SERVICE_TYPE}"


def test_refused_txt_is_counted_per_reason_and_reports_nothing():
    shared = RejectionCounter()
    sightings = _Sightings(shared)
    good = encode_txt(advert("Room"))
    other = SigningKey(bytes([5] * 32)).public.peer_id
    assert sightings.seen("bogus." + SERVICE_TYPE, {b"v": b"1", b"p": b"nope"}, ()) is None
    assert sightings.seen("x." + SERVICE_TYPE, {b"v": b"9"}, ()) is None
    # A valid record under someone else's name: it would let one node speak (and leave) for another.
    assert sightings.seen(name_of(other), good, ("10.0.0.1",)) is None
    expected = {TxtReason.MALFORMED: 1, TxtReason.VERSION: 1, LanReason.NAME_MISMATCH: 1}
    assert shared.statistics() == sightings.rejected() == expected
    assert sightings.peers == 0
    assert sightings.gone(name_of(other)) is None


def test_a_peer_is_reported_once_per_change_and_gone_once():
    sightings = _Sightings(None)
    name = name_of(HOST.public.peer_id)
    assert sightings.seen(name, encode_txt(advert("Room")), ("10.0.0.1",)) == advert("Room")
    assert sightings.seen(name, encode_txt(advert("Room")), ("10.0.0.1",)) is None
    assert sightings.seen(name, encode_txt(advert("Room", "Two")), ("10.0.0.1",)) == advert(
        "Room", "Two"
    )
    assert sightings.seen(name, encode_txt(advert("Room", "Two")), ("10.0.0.2",)) is not None
    assert sightings.peers == 1
    assert sightings.gone(name) == HOST.public.peer_id
    assert sightings.gone(name) is None


def test_the_srv_port_is_the_first_tcp_port():
    assert (
        _tcp_port(["/ip4/10.0.0.1/udp/9/quic", "/ip6/::1/tcp/4001", "/ip4/1.2.3.4/tcp/5"]) == 4001
    )
    assert _tcp_port(["/ip4/10.0.0.1/tcp/99999", "/ip4/10.0.0.1/tcp/x"]) == 0
    assert _tcp_port([]) == 0


def test_the_instance_name_is_the_peer_id():
    peer_id = HOST.public.peer_id
    assert instance_label(peer_id) == peer_id and len(peer_id) == 52
    assert len(instance_label("Q" * 80)) == 63  # one DNS label


def test_a_failing_callback_is_logged_and_raised_by_stop_and_our_own_name_is_ignored():
    other = SigningKey(bytes([5] * 32)).public.peer_id

    def on_gone(peer_id):
        raise KeyError(peer_id)

    async def test():
        lan = LanDiscovery(HOST.public.peer_id, on_advert=lambda a, addrs: None, on_gone=on_gone)
        lan._sightings.seen(name_of(other), encode_txt(LanAdvert(other, (), ())), ())
        lan._on_change(None, SERVICE_TYPE, name_of(HOST.public.peer_id), ServiceStateChange.Added)
        assert not lan._pending  # our own record, looped back: nothing to do
        lan._on_change(None, SERVICE_TYPE, name_of(other), ServiceStateChange.Removed)
        await asyncio.sleep(0)
        with pytest.raises(KeyError, match=other):
            await lan.stop()
        await lan.stop()  # raised once, then clean

    asyncio.run(test())


def test_advertising_before_start_is_our_misuse():
    lan = LanDiscovery(HOST.public.peer_id, on_advert=lambda a, addrs: None)

    async def test():
        with pytest.raises(RuntimeError, match="start"):
            await lan.advertise(advert("Room"))
        with pytest.raises(ValueError, match="own peer ID"):
            await lan.advertise(LanAdvert(SigningKey(bytes([5] * 32)).public.peer_id, (), ()))
        await lan.stop()  # stopping what never started is fine

    asyncio.run(test())


# ---- real mDNS between network namespaces ----

NODE = ("-m", "tests.node.lan_helpers.lan_node")
RAW = ("-m", "tests.node.lan_helpers.raw_service")
SNIFF = ("-m", "tests.node.lan_helpers.sniff")
PORT = 4001


def event(name, **fields):
    return lambda m: m.get("event") == name and all(m.get(k) == v for k, v in fields.items())


def start_node(namespace, seed, *ifaces):
    args = [a for iface in ifaces for a in ("--iface", iface)]
    return namespace.python(*NODE, "--seed", str(seed), *args)


def ready(node, *addresses):
    message = node.expect(lambda m: m.get("event") in ("ready", "error"), timeout=15)
    assert message["event"] == "ready", message
    assert message["senders"] == list(addresses)  # multicasts from the chosen addresses only
    return message["peer_id"]


def adverts_from(node, peers, timeout):
    """The latest advert from each of ``peers``, waiting until every one has been heard."""
    latest = {}
    for message in node.received:
        if message.get("event") == "advert":
            latest[message["peer_id"]] = message
    deadline = time.monotonic() + timeout
    while not set(peers) <= set(latest):
        message = node.expect(event("advert"), timeout=max(0.1, deadline - time.monotonic()))
        latest[message["peer_id"]] = message
    return latest


def check_advert(message, peer_id, ip, titles):
    """The announcements a peer sent verify, and are the rooms it hosts."""
    assert message["peer_id"] == peer_id
    assert message["addrs"] == [f"/ip4/{ip}/tcp/{PORT}"]
    assert message["addresses"] == [ip]
    now_ms = int(time.time() * 1000)
    verified = [verify_announcement(base64.b64decode(r), now_ms) for r in message["announcements"]]
    assert [a.title for a in verified] == titles
    assert all(a.host.peer_id == peer_id for a in verified)


def stop(node):
    """Stop a node; it must leave no thread, fd or task behind."""
    node.send({"cmd": "stop"})
    stopped = node.expect(event("stopped"), timeout=10)
    assert stopped["after"] == stopped["before"], stopped
    assert node.wait(5) == 0
    return stopped


@pytest.mark.netns
def test_nodes_find_each_other_follow_changes_refuse_bad_txt_and_hear_goodbyes(lab):
    switch = lab.switch("lan")
    ips = {name: f"10.91.0.{i}" for i, name in enumerate("abcd", start=2)}
    spaces = {}
    for name, ip in ips.items():
        spaces[name] = lab.namespace(name)
        spaces[name].connect(switch, f"{ip}/24")
    nodes = {name: start_node(spaces[name], seed, "eth0") for seed, name in enumerate("abc")}
    peers = {name: ready(node, ips[name]) for name, node in nodes.items()}
    # A responder that is not p2pvoix, advertising a TXT that does not decode.
    raw = spaces["d"].python(
        *RAW, "--address", ips["d"], "--label", "bogus", "--txt", "v=1", "--txt", "p=not-a-peer-id"
    )

    started = time.monotonic()
    for name, node in nodes.items():
        node.send({"cmd": "advertise", "titles": [f"Room {name}"]})
    for name, node in nodes.items():
        others = {peers[o]: o for o in nodes if o != name}
        found = adverts_from(node, others, timeout=15)
        for peer_id, other in others.items():
            check_advert(found[peer_id], peer_id, ips[other], [f"Room {other}"])
    discovered = time.monotonic() - started

    raw.expect(event("ready"), timeout=15)
    for node in nodes.values():
        deadline = time.monotonic() + 10
        while True:
            node.send({"cmd": "stats"})
            stats = node.expect(event("stats"), timeout=5)
            if stats["rejected"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stats["rejected"] == {TxtReason.MALFORMED: 1}, stats
        assert stats["peers"] == 2 and stats["advertising"]

    # A new room: the others see the changed record.
    nodes["a"].send({"cmd": "advertise", "titles": ["Room a", "Room a2"]})
    for name in "bc":
        changed = nodes[name].expect(event("advert", peer_id=peers["a"]), timeout=5)
        check_advert(changed, peers["a"], ips["a"], ["Room a", "Room a2"])

    # Withdrawn, then back (a second registration by the same running node).
    nodes["b"].send({"cmd": "withdraw"})
    for name in "ac":
        nodes[name].expect(event("gone", peer_id=peers["b"]), timeout=5)
    nodes["b"].send({"cmd": "advertise", "titles": ["Room b"]})
    for name in "ac":
        back = nodes[name].expect(event("advert", peer_id=peers["b"]), timeout=10)
        check_advert(back, peers["b"], ips["b"], ["Room b"])

    # stop() says goodbye: the others forget c at once, not when its records expire.
    asked = time.monotonic()
    stop(nodes["c"])
    for name in "ab":
        gone = nodes[name].expect(event("gone", peer_id=peers["c"]), timeout=5)
        assert gone["t"] - asked < 1.5
    for name in "ab":
        assert stop(nodes[name])["rejected"] == {TxtReason.MALFORMED: 1}
    assert discovered < 10


@pytest.mark.netns
def test_an_interface_not_chosen_never_carries_our_mdns(lab):
    # m sits on two LANs and runs LanDiscovery on eth0 only. Another zeroconf in m (same user,
    # SO_REUSEPORT) joins the mDNS group on eth1, as avahi does on every interface: without the
    # socket-filter work-around, m would receive y's queries through that join and answer y by
    # unicast on eth1 (and report y). IP_MULTICAST_ALL=0 alone let it through about half the time.
    lan_a, lan_b = lab.switch("a"), lab.switch("b")
    m, x, y = lab.namespace("m"), lab.namespace("x"), lab.namespace("y")
    m.connect(lan_a, "10.92.0.2/24")
    m.connect(lan_b, "10.93.0.2/24")
    x.connect(lan_a, "10.92.0.3/24")
    y.connect(lan_b, "10.93.0.3/24")
    m.python(*RAW, "--address", "10.93.0.2").expect(event("ready"), timeout=10)
    node_m = start_node(m, 10, "eth0")
    peer_m = ready(node_m, "10.92.0.2")
    node_m.send({"cmd": "advertise", "titles": ["Room m"]})
    node_m.expect(event("advertised"), timeout=10)

    sniffer = y.python(*SNIFF, "--iface", "eth0", "--needle", peer_m)
    sniffer.expect(event("ready"), timeout=10)
    node_x, node_y = start_node(x, 11, "eth0"), start_node(y, 12, "eth0")
    peer_x, peer_y = ready(node_x, "10.92.0.3"), ready(node_y, "10.93.0.3")
    for node in (node_x, node_y):
        node.send({"cmd": "advertise", "titles": ["Room"]})
    for node in (node_x, node_y):
        node.expect(event("advertised"), timeout=10)

    # On its own LAN, m and x see each other: m is advertising and listening.
    assert peer_m in adverts_from(node_x, [peer_m], timeout=10)
    assert peer_x in adverts_from(node_m, [peer_x], timeout=10)
    time.sleep(1.5)  # y's startup queries and announcements have gone out by now
    node_y.send({"cmd": "stats"})
    assert node_y.expect(event("stats"), timeout=5)["adverts_seen"] == 0
    sniffer.send({"cmd": "report"})
    report = sniffer.expect(event("report"), timeout=5)
    assert report["mdns"] > 0  # y's own mDNS is on the wire, so the capture works
    assert report["needles"] == {peer_m: 0}, report
    assert not [msg for msg in node_m.received if msg.get("peer_id") == peer_y]
    for node in (node_m, node_x, node_y):
        stop(node)


@pytest.mark.netns
def test_with_no_usable_interface_or_an_unknown_name_the_node_is_told_why(lab):
    alone = lab.namespace("alone")  # only loopback
    node = start_node(alone, 20)
    error = node.expect(event("error"), timeout=15)
    assert error["type"] == "NoLanInterface"
    assert error["message"].startswith("LAN discovery is off")
    node = start_node(alone, 21, "eth9")
    error = node.expect(event("error"), timeout=15)
    assert error["type"] == "UnknownInterface" and "interfaces here: lo" in error["message"]


@pytest.mark.netns
def test_a_second_node_with_the_same_identity_is_refused(lab):
    switch = lab.switch("lan")
    first, second = lab.namespace("first"), lab.namespace("second")
    first.connect(switch, "10.95.0.2/24")
    second.connect(switch, "10.95.0.3/24")
    nodes = [start_node(first, 30, "eth0"), start_node(second, 30, "eth0")]
    ready(nodes[0], "10.95.0.2")
    ready(nodes[1], "10.95.0.3")
    nodes[0].send({"cmd": "advertise", "titles": ["Room"]})
    nodes[0].expect(event("advertised"), timeout=10)
    nodes[1].send({"cmd": "advertise", "titles": ["Room"]})
    error = nodes[1].expect(lambda m: m.get("event") in ("error", "advertised"), timeout=10)
    assert error.get("type") == "IdentityOnLan", error
    for node in nodes:
        stop(node)


@pytest.mark.netns
def test_the_interface_table_inside_a_namespace(lab):
    switch = lab.switch("lan")
    host = lab.namespace("host")
    host.connect(switch, "10.94.0.2/24")
    host.connect(switch, "10.94.1.2/24")
    host.ip("link", "set", "eth1", "down")
    code = (
        "import json, socket; from p2pvoix.node import interfaces as lan\n"
        "table = lan.system_interfaces()\n"
        "print(json.dumps([[i.name, i.ipv4, i.up, i.loopback, i.multicast] for i in table]))\n"
        "print(json.dumps({i.name: i.index == socket.if_nametoindex(i.name) for i in table}))\n"
        "print(json.dumps([i.name for i in lan.choose_interfaces((), table)]))\n"
    )
    out = host.run(sys.executable, "-c", code).stdout.splitlines()
    assert sorted(map(tuple, json.loads(out[0]))) == [
        ("eth0", "10.94.0.2", True, False, True),
        ("eth1", "10.94.1.2", False, False, True),
        ("lo", "127.0.0.1", True, True, False),
    ]
    assert json.loads(out[1]) == {"eth0": True, "eth1": True, "lo": True}
    assert json.loads(out[2]) == ["eth0"]
