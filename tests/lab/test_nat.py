"""Rooms across NATs (issue 8), on one machine: an "internet" switch, homes behind NAT routers.

    internet 203.0.113.0/24 ── relay (p2pvoix relay, .2) ── stun (coturn at .3 and .4)
        ├─ routerA .10 ── home A 192.168.1.0/24: Amina hosts (port-preserving masquerade)
        ├─ routerB .20 ── home B 192.168.2.0/24: Zineb listens (masquerade random: symmetric)
        └─ routerC .30 ── home C 192.168.3.0/24: Youssef listens (port-preserving)

Every node is the real CLI in a namespace of its own, with default listen addresses; the only
settings are the ones a user behind a NAT gives: a bootstrap node and two STUN servers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests import netlab
from tests.audiotools import read_wav, tone_presence
from tests.coturn import coturn
from tests.lab.report import LAB_REPORT

lab = netlab.lab
pytestmark = [pytest.mark.async_timeout(150), pytest.mark.timeout(180)]

STUN = ("--stun", "stun:203.0.113.3:3478", "--stun", "stun:203.0.113.4:3478")


def cli(ns: netlab.Namespace, home: Path, *args: str) -> netlab.Child:
    # With P2PVOIX_LOG set (debugging a failure), each process logs to its own file by its home.
    log = {"P2PVOIX_LOG_FILE": f"{home}.log"} if os.environ.get("P2PVOIX_LOG") else {}
    return ns.python("-m", "p2pvoix", *args, "--home", str(home), "--no-lan", "--json", env=log)


def home(lab: netlab.Lab, internet: netlab.Switch, name: str, wan: str, net: str,
         random_ports: bool) -> netlab.Namespace:
    """A home: a NAT router on the internet and one host behind it; returns the host."""
    lan = lab.switch(f"{name}-lan")
    router = lab.router(f"{name}-gw", (internet, f"{wan}/24"), (lan, f"{net}.1/24"))
    router.masquerade("eth0", random_ports=random_ports)
    host = lab.namespace(name)
    host.connect(lan, f"{net}.2/24")
    host.route("default", via=f"{net}.1")
    return host


def internet_with(lab: netlab.Lab, public: str
                  ) -> tuple[netlab.Switch, netlab.Namespace, netlab.Namespace]:
    """The internet switch with a public p2pvoix host at .2 (named ``public``) and coturn's
    namespace at .3 and .4; returns (switch, public host, coturn's namespace)."""
    netlab.skip_unless_netns("nft")
    internet = lab.switch("internet")
    public_ns, stun_ns = lab.namespace(public), lab.namespace("stun")
    public_ns.connect(internet, "203.0.113.2/24")
    stun_ns.connect(internet, "203.0.113.3/24")
    stun_ns.ip("addr", "add", "203.0.113.4/24", "dev", "eth0")
    return internet, public_ns, stun_ns


def first_audio(listener: netlab.Child, host: netlab.Child) -> dict:
    """The listener's first_audio event; failing that, both ends' status says why."""
    try:
        return listener.seen(lambda m: m.get("type") == "first_audio", 60)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\nlistener: {status_of(listener)}\n"
                             f"host: {status_of(host)}") from None


def status_of(child: netlab.Child) -> dict:
    child.send({"cmd": "status"})
    return child.expect(lambda m: m.get("type") == "status", 10)


def reach_of(child: netlab.Child, timeout: float = 30) -> dict:
    return child.seen(lambda m: m.get("type") == "reach", timeout)


# The suite's slowest lab case (about 35 s with its teardown), and its timing-sensitive steps
# (a reservation seen at one moment, DCUtR's three punches at most, under a loaded 2-core box)
# failed CI twice in different places: `make lab` runs it.
@pytest.mark.lab_only(why="a long lab case whose timing a loaded CI box upsets")
def test_a_room_hosted_behind_one_nat_is_heard_behind_two_others_by_relay_and_hole_punching(
    lab, tmp_path
):
    """Zineb's NAT gives every destination a new port: only the public relay can feed her.
    Youssef's keeps one port per socket, like Amina's: ICE punches a hole, Amina feeds him."""
    internet, relay_ns, stun_ns = internet_with(lab, "relay")
    amina_ns = home(lab, internet, "amina", "203.0.113.10", "192.168.1", random_ports=False)
    zineb_ns = home(lab, internet, "zineb", "203.0.113.20", "192.168.2", random_ports=True)
    youssef_ns = home(lab, internet, "youssef", "203.0.113.30", "192.168.3", random_ports=False)

    with coturn(["203.0.113.3", "203.0.113.4"], prefix=["ip", "netns", "exec", stun_ns.name]):
        relay = cli(relay_ns, tmp_path / "relay", "relay", "--listen", "/ip4/0.0.0.0/tcp/4001",
                    "--relay-slots", "4", *STUN)
        started = relay.expect(lambda m: m.get("type") == "relay_started", 30)
        boot = next(a for a in started["addrs"] if a.startswith("/ip4/203.0.113.2/"))

        amina = cli(amina_ns, tmp_path / "amina", "host", "Across the sea", "--input",
                    "tone:440", "--output", "none", "--bootstrap", boot, *STUN)
        room = amina.expect(lambda m: m.get("type") == "room_opened", 30)["key"]
        zineb = cli(zineb_ns, tmp_path / "zineb", "join", room, "--input", "none", "--output",
                    "none", "--record", str(tmp_path / "zineb.wav"), "--bootstrap", boot, *STUN)
        youssef = cli(youssef_ns, tmp_path / "youssef", "join", room, "--input", "none",
                      "--output", "none", "--record", str(tmp_path / "youssef.wav"),
                      "--bootstrap", boot, *STUN)

        # Each learns its reach: the relay is public, Amina's NAT keeps one mapping per socket
        # (hole punching could work), Zineb's gives each destination a new port.
        assert reach_of(relay)["reach"] == "public"
        amina_reach = reach_of(amina)
        assert amina_reach["reach"] == "nat", amina_reach
        assert amina_reach["seen"].startswith("203.0.113.10:")  # her router's public side
        assert reach_of(zineb)["reach"] == "symmetric"

        # Zineb found the room (its announcement names Amina's relayed address), synced with
        # Amina through the relay's circuit, and hears her through the relay's media link.
        first = first_audio(zineb, amina)
        heard_from = time.monotonic()
        time.sleep(6.0)
        zineb.send({"cmd": "status"})
        status = zineb.expect(lambda m: m.get("type") == "status", 10)
        amina.send({"cmd": "status"})
        host_status = amina.expect(lambda m: m.get("type") == "status", 10)
        relay_peer = started["peer_id"]
        path = status["media"]["links"]["paths"].get(relay_peer)
        LAB_REPORT.append(("room behind NAT A, listener behind symmetric NAT B",
                           f"Amina {amina_reach['reach']}, Zineb {status['reachability']['reach']}",
                           f"via p2pvoix relay (ICE {path}); signalling via circuit relay",
                           f"first audio {first['after_s']} s"))
        assert status["parent"] == relay_peer, status
        assert path is not None and "relay" not in path, path  # no TURN on this path
        # Amina holds her reservation on the relay. Once in CI her status showed none at this
        # moment while Zineb was fed through the relay (why is not known: no log was kept). A
        # reservation whose connection dropped is made again in the next 2 s round once it is
        # back, so a snapshot can fall in between: asked for up to 10 s, the failure shows all.
        deadline = time.monotonic() + 10
        while host_status["reachability"]["relayed"]["relays"] != [relay_peer[-6:]]:
            assert time.monotonic() < deadline, host_status["reachability"]
            time.sleep(0.5)
            host_status = status_of(amina)

        # Youssef: behind a NAT like Amina's, fed by her straight through both NATs.
        assert reach_of(youssef)["reach"] == "nat"
        first_audio(youssef, amina)
        deadline = time.monotonic() + 20
        while (status := status_of(youssef))["parent"] != host_status["me"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        punched_from = time.monotonic()
        before = next(iter(status["media"]["engine"]["streams"].values()))
        time.sleep(3.0)
        status = status_of(youssef)
        punched = status["media"]["links"]["paths"].get(host_status["me"])
        after = next(iter(status["media"]["engine"]["streams"].values()))
        played = after["played"] + after["fec"] - before["played"] - before["fec"]
        assert punched is not None and punched.split("/")[1] in ("srflx", "prflx"), punched
        # Their libp2p connection went through the relay's circuit; DCUtR punched it direct (it
        # tries every 2 s, three times at most: under load the first attempt may miss).
        deadline = time.monotonic() + 15
        while (signalling := status_of(youssef)["signalling"]).get(host_status["me"]) != "direct":
            assert time.monotonic() < deadline, signalling
            time.sleep(0.5)
        LAB_REPORT.append(("the same room, listener behind port-preserving NAT C",
                           f"Amina nat, Youssef {status['reachability']['reach']}",
                           f"hole-punched to Amina (ICE {punched}); signalling direct "
                           f"{time.monotonic() - punched_from:.0f} s after she fed him",
                           f"{played} frames played in 3 s"))
        assert played >= 3.0 * 50 * 0.9, (before, after)
        for listener in (zineb, youssef):
            listener.send({"cmd": "leave"})
        assert zineb.wait(20) == 0 and youssef.wait(20) == 0
        listened = {"zineb": time.monotonic() - heard_from,
                    "youssef": time.monotonic() - punched_from}

    # Both recordings hold Amina's tone in their last seconds (past the first second heard;
    # Youssef's from when he hung from Amina through the punched hole).
    for name, seconds in listened.items():
        pcm, rate = read_wav(tmp_path / f"{name}.wav")
        present = tone_presence(pcm, rate, [440.0], 100)[:, 0]
        tail = present[-int(seconds * 10) + 10:]
        assert tail.mean() >= 0.95, f"{name}: the tone was in {tail.mean():.0%} of 100 ms windows"



def test_killing_the_relay_that_feeds_a_nat_listener_brings_audio_back_within_two_seconds(
    lab, tmp_path
):
    """Two public relays; Zineb (symmetric NAT) hangs from one and keeps a standby link to the
    other. The one feeding her is killed outright: her audio must be back within 2 s."""
    netlab.skip_unless_netns("nft")
    internet = lab.switch("internet")
    stun_ns = lab.namespace("stun")
    stun_ns.connect(internet, "203.0.113.3/24")
    stun_ns.ip("addr", "add", "203.0.113.4/24", "dev", "eth0")
    relay_nss = []
    for index in (1, 2):
        ns = lab.namespace(f"relay{index}")
        ns.connect(internet, f"203.0.113.{5 + index}/24")
        relay_nss.append(ns)
    amina_ns = home(lab, internet, "amina", "203.0.113.10", "192.168.1", random_ports=False)
    zineb_ns = home(lab, internet, "zineb", "203.0.113.20", "192.168.2", random_ports=True)

    with coturn(["203.0.113.3", "203.0.113.4"], prefix=["ip", "netns", "exec", stun_ns.name]):
        relays, boots = {}, []
        for index, ns in enumerate(relay_nss, 1):
            relay = cli(ns, tmp_path / f"relay{index}", "relay", "--listen",
                        "/ip4/0.0.0.0/tcp/4001", "--relay-slots", "4", *STUN,
                        *(("--bootstrap", boots[0]) if boots else ()))
            started = relay.expect(lambda m: m.get("type") == "relay_started", 30)
            boots.append(next(a for a in started["addrs"] if a.startswith("/ip4/203.0.113.")))
            relays[started["peer_id"]] = relay
        bootstrap = [arg for boot in boots for arg in ("--bootstrap", boot)]
        amina = cli(amina_ns, tmp_path / "amina", "host", "Two relays", "--input", "tone:440",
                    "--output", "none", *bootstrap, *STUN)
        room = amina.expect(lambda m: m.get("type") == "room_opened", 30)["key"]
        zineb = cli(zineb_ns, tmp_path / "zineb", "join", room, "--input", "none", "--output",
                    "none", *bootstrap, *STUN)
        zineb.expect(lambda m: m.get("type") == "first_audio", 60)

        # Wait until she hangs from one relay with a standby link up to the other.
        deadline = time.monotonic() + 30
        while True:
            status = status_of(zineb)
            paths = status["media"]["links"]["paths"]
            if status["parent"] in relays and set(relays) <= set(paths):
                break
            assert time.monotonic() < deadline, f"no standby link: {status}"
            time.sleep(0.5)
        time.sleep(2.0)
        before = next(iter(status_of(zineb)["media"]["engine"]["streams"].values()))
        victim = relays[status["parent"]]
        victim.popen.kill()
        killed = time.monotonic()
        time.sleep(6.0)
        streams = status_of(zineb)["media"]["engine"]["streams"]
        after = next(iter(streams.values()))
        hole_s = (after["long_gap_frames"] - before["long_gap_frames"]) * 0.02
        played = after["played"] + after["fec"] - before["played"] - before["fec"]
        LAB_REPORT.append(("the relay feeding a NAT'd listener is killed",
                           "Zineb symmetric", "to the standby relay",
                           f"hole {hole_s:.2f} s, {played} frames in the 6 s after"))
        assert len(streams) == 1 and after["played"] >= before["played"]  # the same stream
        assert hole_s <= 2.0, f"audio came back after {hole_s:.2f} s ({before} -> {after})"
        assert played >= (time.monotonic() - killed - 2.5) * 50 * 0.9


TURN = ("--turn", "turn:p2pvoix:lab-secret@203.0.113.3:3478")


def test_two_homes_behind_symmetric_nats_with_no_media_relay_talk_through_turn(lab, tmp_path):
    """Both ends behind random-port NATs and no p2pvoix relay to hang from: only TURN carries
    audio. The public node relays libp2p signalling (circuit relay), never media."""
    internet, node_ns, stun_ns = internet_with(lab, "node")
    amina_ns = home(lab, internet, "amina", "203.0.113.10", "192.168.1", random_ports=True)
    zineb_ns = home(lab, internet, "zineb", "203.0.113.20", "192.168.2", random_ports=True)

    with coturn(["203.0.113.3", "203.0.113.4"], prefix=["ip", "netns", "exec", stun_ns.name]):
        node = cli(node_ns, tmp_path / "node", "node", "--listen", "/ip4/0.0.0.0/tcp/4001",
                   *STUN)
        started = node.expect(lambda m: m.get("type") == "node_started", 30)
        boot = next(a for a in started["addrs"] if a.startswith("/ip4/203.0.113.2/"))
        amina = cli(amina_ns, tmp_path / "amina", "host", "Through TURN", "--input",
                    "tone:440", "--output", "none", "--bootstrap", boot, *STUN, *TURN)
        room = amina.expect(lambda m: m.get("type") == "room_opened", 30)["key"]
        zineb = cli(zineb_ns, tmp_path / "zineb", "join", room, "--input", "none", "--output",
                    "none", "--record", str(tmp_path / "zineb.wav"), "--bootstrap", boot,
                    *STUN, *TURN)
        first = first_audio(zineb, amina)
        heard_from = time.monotonic()
        time.sleep(6.0)
        status = status_of(zineb)
        path = status["media"]["links"]["paths"].get(status["parent"])
        LAB_REPORT.append(("both homes behind symmetric NATs, no media relay",
                           f"Zineb {status['reachability']['reach']}",
                           f"via TURN (ICE {path})", f"first audio {first['after_s']} s"))
        assert path is not None and "relay" in path, path
        zineb.send({"cmd": "leave"})
        assert zineb.wait(20) == 0
        listened = time.monotonic() - heard_from

    pcm, rate = read_wav(tmp_path / "zineb.wav")
    present = tone_presence(pcm, rate, [440.0], 100)[:, 0]
    tail = present[-int(listened * 10) + 10:]
    assert tail.mean() >= 0.95, f"the tone was present in {tail.mean():.0%} of 100 ms windows"
