"""The namespace lab itself: links carry traffic, NAT rewrites, loss drops, and nothing outlives it."""

import json
import subprocess
import sys

import pytest

from tests import netlab
from tests.netlab import Lab, list_namespaces

pytestmark = pytest.mark.netns
lab = netlab.lab

# Replies to each datagram with the (address, port) it came from; ends when stdin closes.
ECHO = """
import json, select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print(json.dumps({"event": "ready"}), flush=True)
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in ready and not sys.stdin.readline():
        break
    if s in ready:
        data, source = s.recvfrom(2048)
        s.sendto(json.dumps(source).encode(), source)
"""

# Sends one datagram from each source port given and prints what the echo saw, or null.
ASK = """
import json, socket, sys
server = (sys.argv[1], int(sys.argv[2]))
for port in sys.argv[3:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", int(port)))
    s.settimeout(0.5)
    seen = None
    for attempt in range(3):
        s.sendto(b"hello", server)
        try:
            seen = json.loads(s.recv(2048))
            break
        except TimeoutError:
            pass
    print(json.dumps(seen))
    s.close()
"""


def ask(namespace, server_ip, port, *source_ports):
    out = namespace.run(sys.executable, "-c", ASK, server_ip, str(port), *map(str, source_ports))
    return [json.loads(line) for line in out.stdout.splitlines()]


def echo(namespace, ip, port):
    server = namespace.python("-c", ECHO, ip, str(port))
    server.expect(lambda m: m.get("event") == "ready", timeout=10)
    return server


def root_links():
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def bridges_in_root():
    return root_links().count(f" {netlab.BRIDGE}:")


def test_hosts_on_a_switch_talk_and_the_lab_leaves_nothing_behind():
    netlab.skip_unless_netns()
    bridges_before = bridges_in_root()
    with Lab() as lab:
        lan = lab.switch("lan")
        a, b = lab.namespace("a"), lab.namespace("b")
        a.connect(lan, "10.77.0.2/24")
        b.connect(lan, "10.77.0.3/24")
        assert a.addresses()["eth0"] == ["10.77.0.2/24"]
        assert set(a.addresses()) == {"lo", "eth0"}
        server = echo(b, "10.77.0.3", 9000)
        assert ask(a, "10.77.0.3", 9000, 40001) == [["10.77.0.2", 40001]]
        names = lab.namespaces()
        assert set(names) <= set(list_namespaces())
        # The bridge and both ends of every veth live in lab namespaces, none in the root one
        # (a root veth whose peer is in a lab namespace would show "link-netns <tag>-…").
        assert lab.tag not in root_links()
        assert bridges_in_root() == bridges_before
    assert server.popen.poll() is not None
    assert not set(names) & set(list_namespaces())


def test_teardown_happens_when_the_test_fails():
    netlab.skip_unless_netns()
    with pytest.raises(ZeroDivisionError), Lab() as lab:
        lan = lab.switch("lan")
        host = lab.namespace("host")
        host.connect(lan, "10.78.0.2/24")
        sleeper = host.python("-c", "import sys; sys.stdin.read()")
        raise ZeroDivisionError("the test failed")
    assert sleeper.popen.poll() is not None
    assert not set(lab.namespaces()) & set(list_namespaces())


def test_two_labs_with_the_same_names_coexist():
    netlab.skip_unless_netns()
    with Lab() as first, Lab() as second:
        for each in (first, second):
            each.namespace("a").connect(each.switch("lan"), "10.79.0.2/24")
        assert not set(first.namespaces()) & set(second.namespaces())


@pytest.mark.parametrize("random_ports", [False, True], ids=["port-preserving", "random"])
def test_masquerading_router(lab, random_ports):
    netlab.skip_unless_netns("nft")
    lan, wan = lab.switch("lan"), lab.switch("wan")
    router = lab.router("nat", (lan, "10.80.0.1/24"), (wan, "10.81.0.1/24"))
    client, server = lab.namespace("client"), lab.namespace("server")
    client.connect(lan, "10.80.0.2/24")
    client.route("default", via="10.80.0.1")
    server.connect(wan, "10.81.0.2/24")  # no route back to 10.80/24: only NATed replies return
    router.masquerade("eth1", random_ports=random_ports)
    echo(server, "10.81.0.2", 9000)
    ports = [41001, 41002, 41003]
    seen = ask(client, "10.81.0.2", 9000, *ports)
    assert all(s is not None and s[0] == "10.81.0.1" for s in seen), seen
    if random_ports:
        assert [s[1] for s in seen] != ports  # all three kept by chance: about 1 in 10^13
    else:
        assert [s[1] for s in seen] == ports
    if random_ports:
        return
    # Hole punching: a peer's probe reaches the router before the inside host's own packet to
    # that peer. Dropped unasked, it leaves no conntrack entry holding the port, so the host's
    # packet still leaves from its own port (a router that let it in took that port).
    assert ask(server, "10.81.0.1", 41004, 9100) == [None]
    echo(server, "10.81.0.2", 9100)
    assert ask(client, "10.81.0.2", 9100, 41004) == [["10.81.0.1", 41004]]


def test_random_drop_and_bandwidth_limit_apply_and_clear(lab):
    netlab.skip_unless_netns("nft", "tc")
    lan = lab.switch("lan")
    a, b = lab.namespace("a"), lab.namespace("b")
    a.connect(lan, "10.82.0.2/24")
    b.connect(lan, "10.82.0.3/24")
    echo(b, "10.82.0.3", 9000)
    b.drop_randomly("eth0", 100, direction="in")
    assert ask(a, "10.82.0.3", 9000, 42001) == [None]
    b.clear_nft()
    b.drop_randomly("eth0", 0)
    assert ask(a, "10.82.0.3", 9000, 42002) == [["10.82.0.2", 42002]]
    assert "numgen random mod 100 < 0" in b.run("nft", "list", "ruleset").stdout

    a.limit_bandwidth("eth0", "1mbit")
    assert "tbf" in a.run("tc", "qdisc", "show", "dev", "eth0").stdout
    assert ask(a, "10.82.0.3", 9000, 42003) == [["10.82.0.2", 42003]]
    a.clear_bandwidth("eth0")
    assert "tbf" not in a.run("tc", "qdisc", "show", "dev", "eth0").stdout


def test_the_skip_reason_names_root(monkeypatch):
    netlab.netns_unavailable_reason.cache_clear()
    monkeypatch.setattr(netlab.os, "geteuid", lambda: 1000)
    try:
        reason = netlab.netns_unavailable_reason()
    finally:
        netlab.netns_unavailable_reason.cache_clear()
    assert reason is not None and "root" in reason
