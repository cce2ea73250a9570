"""A café meetup with no internet: nodes on one LAN, no bootstrap, default network settings.

Each node is the real `p2pvoix` CLI running in a network namespace of its own, joined by a bridge;
rooms are found through mDNS and joined by their bare key (no address hints), and audio flows.
"""

from __future__ import annotations

import pytest

from tests import netlab

lab = netlab.lab
pytestmark = pytest.mark.async_timeout(120)

ROOM_KEY_EVENT = "room_opened"


def cli(ns: netlab.Namespace, home: str, *args: str) -> netlab.Child:
    return ns.python("-m", "p2pvoix", *args, "--home", home)


def test_two_hosts_on_a_lan_find_each_others_rooms_and_a_third_node_joins_by_bare_key(
    lab, tmp_path
):
    switch = lab.switch("cafe")
    hosts = []
    for index, name in enumerate(("amina", "youssef", "zineb")):
        ns = lab.namespace(name)
        ns.connect(switch, f"10.77.0.{index + 2}/24")
        hosts.append(ns)
    amina, youssef, zineb = hosts

    rooms = {}
    for ns, title, tone in ((amina, "Darija corner", "tone:440"), (youssef, "Café français",
                                                                     "tone:660")):
        child = cli(ns, str(tmp_path / ns.name), "host", title, "--input", tone, "--output",
                    "none", "--json")
        opened = child.expect(lambda m: m.get("type") == ROOM_KEY_EVENT, 30)
        rooms[title] = (child, opened["key"])  # the bare key: no hints at all

    # Each host's node sees the other's room on the LAN (mDNS → directory).
    lister = cli(zineb, str(tmp_path / "zineb-lister"), "rooms", "--lan", "--json", "--wait", "6")
    listed = {m["title"]: m for m in lister.collect(20) if m.get("type") == "room"}
    assert lister.wait(10) == 0
    assert set(listed) == {"Darija corner", "Café français"}
    assert all("lan" in m["seen_via"] for m in listed.values())  # and gossip, once connected

    # Joining by the bare key: found through the LAN, connected, audio heard.
    _, key = rooms["Darija corner"]
    listener = cli(zineb, str(tmp_path / "zineb"), "join", key, "--output", "none", "--json")
    first = listener.expect(lambda m: m.get("type") == "first_audio", 40)
    assert first["after_s"] < 15
    listener.close()
    assert listener.popen.returncode == 0

    # The other host heard of Amina's room too (its node merged the LAN advert).
    youssef_rooms = cli(youssef, str(tmp_path / "youssef-lister"), "rooms", "--lan", "--json",
                        "--wait", "5")
    titles = {m["title"] for m in youssef_rooms.collect(15) if m.get("type") == "room"}
    assert "Darija corner" in titles
