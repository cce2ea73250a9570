"""A relay whose upload is capped (tc tbf) is not given more listeners than it can feed (issue 8).

    internet 203.0.113.0/24 ── Amina hosts (.10, feeds one child) ── relay1 (.6, uplink 200 kbit/s)
        ├─ relay2 (.7, started later, uncapped) ── a bootstrap node (.2)
        └─ audience (.30): five listeners that do not relay

One stream costs a child link about 77 kbit/s of upload here (Opus at 32 kbit/s in our frames, RTP,
SRTP, UDP and IP, plus RTCP; measured on relay1's interface: 8 kbit/s with no child, 85 with one,
158 with two), so relay1 can feed two children; a third would make every child lose ~15 %. It advertises more before it knows (4 slots, then what its CPU allows);
its children's receiver reports show the loss, and it must come down to two. Every node is the
real CLI in its namespace, with no setting about bandwidth (no --upload-kbps).
"""

from __future__ import annotations

import time

import pytest

from tests import netlab
from tests.lab.report import LAB_REPORT
from tests.lab.test_nat import cli, status_of

lab = netlab.lab
# About two minutes, and how fast the relay's loss shows depends on the box's load: `make lab`.
pytestmark = [pytest.mark.lab_only, pytest.mark.timeout(330)]

CAP_KBIT = 200
FEEDS = 2  # children that fit in CAP_KBIT
LISTENERS = 5


def slots_events(relay: netlab.Child, seconds: float) -> list[dict]:
    return [m for m in relay.collect(seconds) if m.get("type") == "slots"]


def test_a_relay_with_a_capped_uplink_is_not_given_more_listeners_than_it_can_feed(lab, tmp_path):
    netlab.skip_unless_netns("tc")
    internet = lab.switch("internet")
    spaces = {}
    for name, address in (("boot", "2"), ("amina", "10"), ("relay1", "6"), ("relay2", "7"),
                          ("audience", "30")):
        spaces[name] = lab.namespace(name)
        spaces[name].connect(internet, f"203.0.113.{address}/24")
    spaces["relay1"].limit_bandwidth("eth0", f"{CAP_KBIT}kbit")

    # A saturated uplink delays everything relay1 sends: newcomers bootstrap elsewhere.
    node = cli(spaces["boot"], tmp_path / "boot", "node", "--listen", "/ip4/0.0.0.0/tcp/4001")
    boot = next(a for a in node.expect(lambda m: m.get("type") == "node_started", 30)["addrs"]
                if a.startswith("/ip4/203.0.113.2/"))
    relay1 = cli(spaces["relay1"], tmp_path / "relay1", "relay", "--listen",
                 "/ip4/0.0.0.0/tcp/4001", "--relay-slots", "6", "--bootstrap", boot)
    names = {relay1.expect(lambda m: m.get("type") == "relay_started", 30)["peer_id"]: "relay1"}
    amina = cli(spaces["amina"], tmp_path / "amina", "host", "A capped relay", "--input",
                "tone:440", "--output", "none", "--relay-slots", "1", "--bootstrap", boot)
    room = amina.expect(lambda m: m.get("type") == "room_opened", 30)["key"]
    relay1.expect(lambda m: m.get("type") == "relaying", 30)
    listeners = [cli(spaces["audience"], tmp_path / f"listener{i}", "join", room, "--no-relay",
                     "--input", "none", "--output", "none", "--bootstrap", boot)
                 for i in range(LISTENERS)]
    for listener in listeners:
        listener.expect(lambda m: m.get("type") == "joined", 60)

    # relay1 takes more children than its uplink carries, sees them lose, and comes down.
    events, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        events += slots_events(relay1, 1.0)
        most = max((e["children"] for e in events), default=0)
        if most > FEEDS and events[-1]["slots"] <= FEEDS:
            break
    else:
        raise AssertionError(f"relay1 never backed off to {FEEDS} slots: {events}")
    backed_off = next(e for e in events if e["child_loss"] > 0.02)

    # Those it let go hang from relay2 once it comes; relay1 keeps what it can feed.
    relay2 = cli(spaces["relay2"], tmp_path / "relay2", "relay", "--listen",
                 "/ip4/0.0.0.0/tcp/4001", "--relay-slots", "6", "--bootstrap", boot)
    names[relay2.expect(lambda m: m.get("type") == "relay_started", 30)["peer_id"]] = "relay2"
    relay2.expect(lambda m: m.get("type") == "relaying", 30)
    deadline = time.monotonic() + 30
    while not all(_hearing(status_of(x)) for x in listeners):
        assert time.monotonic() < deadline, [_hearing(status_of(x)) for x in listeners]
        time.sleep(1.0)
    # relay2 arriving reshapes the tree (it takes a leaf's place, rebalancing follows): measure
    # once every listener has kept its parent for 8 s (a stream that just started or moved
    # is still adapting its playout for a few seconds).
    parents, steady_since, deadline = None, time.monotonic(), time.monotonic() + 40
    while time.monotonic() - steady_since < 8.0:
        assert time.monotonic() < deadline, f"the tree never settled: {parents}"
        now = [status_of(x)["parent"] for x in listeners]
        if now != parents:
            parents, steady_since = now, time.monotonic()
        time.sleep(1.0)
    events += slots_events(relay1, 0.1)  # what it said meanwhile: the last one is its state now
    before = [_stream(status_of(x)) for x in listeners]
    later = slots_events(relay1, 6.0)
    statuses = [status_of(x) for x in listeners]
    after = [_stream(s) for s in statuses]
    LAB_REPORT.append((f"a relay's uplink capped at {CAP_KBIT} kbit/s (tc tbf)", "all public",
                       f"relay1 fed {max(e['children'] for e in events)}, children lost "
                       f"{backed_off['child_loss']:.0%}, backed off to "
                       f"{min(e['slots'] for e in events)} slots",
                       "then every listener heard"))
    assert all(e["children"] <= FEEDS for e in [events[-1], *later]), (events, later)
    for status, b, a in zip(statuses, before, after, strict=True):
        played = a["played"] + a["fec"] - b["played"] - b["fec"]
        why = (names.get(status["parent"], status["parent"]), b, a, later)
        assert played >= 6.0 * 50 * 0.95, why
        assert a["long_gap_frames"] - b["long_gap_frames"] <= 3, why


def _hearing(status: dict) -> bool:
    return bool(status["parent"] and status["media"]["engine"]["streams"])


def _stream(status: dict) -> dict:
    streams = status["media"]["engine"]["streams"]
    assert len(streams) == 1, status
    return next(iter(streams.values()))
