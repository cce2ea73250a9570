"""A listener on a lossy link (issue 8): 5 % of its packets dropped each way by nftables.

The real `p2pvoix` CLI runs in two network namespaces joined by a switch; the speaker plays a
speech clip in a loop (Opus in-band FEC carries speech, not steady tones). What the listener's
playout did is read from its `status` line: every 20 ms tick counts as played, rebuilt by FEC,
concealed or stretched, and holes longer than 60 ms are counted with their length.
"""

from __future__ import annotations

import importlib.resources
import time

import pytest

from tests import netlab
from tests.lab.report import LAB_REPORT

lab = netlab.lab
pytestmark = [pytest.mark.async_timeout(120), pytest.mark.timeout(150)]

LOSS_PERCENT = 5
MEASURE_S = 20.0
SPEECH = str(importlib.resources.files("p2pvoix") / "assets" / "speech-en.ogg")


def cli(ns: netlab.Namespace, home: str, *args: str) -> netlab.Child:
    return ns.python("-m", "p2pvoix", *args, "--home", home, "--no-lan", "--json")


def playout(listener: netlab.Child) -> dict[str, int]:
    """The listener's playout counters for its one stream, from a fresh status line."""
    listener.send({"cmd": "status"})
    status = listener.expect(lambda m: m.get("type") == "status", 10)
    streams = status["media"]["engine"]["streams"]
    assert len(streams) == 1, streams
    return next(iter(streams.values()))


def test_five_percent_loss_each_way_leaves_99_percent_of_frames_without_a_long_hole(
    lab, tmp_path
):
    netlab.skip_unless_netns("nft")
    net = lab.switch("net")
    speaker_ns, listener_ns = lab.namespace("speaker"), lab.namespace("listener")
    speaker_ns.connect(net, "10.78.0.1/24")
    listener_ns.connect(net, "10.78.0.2/24")
    listener_ns.drop_randomly("eth0", LOSS_PERCENT)  # both directions: media, acks, heartbeats

    speaker = cli(speaker_ns, str(tmp_path / "speaker"), "host", "Lossy line", "--input", SPEECH,
                  "--loop", "--output", "none", "--listen", "/ip4/10.78.0.1/tcp/4001")
    key = speaker.expect(lambda m: m.get("type") == "room_opened", 30)["join_key"]
    listener = cli(listener_ns, str(tmp_path / "listener"), "join", key, "--input", "none",
                   "--output", "none", "--listen", "/ip4/10.78.0.2/tcp/4001")
    listener.expect(lambda m: m.get("type") == "first_audio", 40)
    time.sleep(2.0)  # past the first talkspurt's start-up
    before = playout(listener)
    time.sleep(MEASURE_S)
    after = playout(listener)

    delta = {k: after[k] - before[k] for k in after}
    ticks = delta["played"] + delta["fec"] + delta["concealed"] + delta["stretched"]
    assert ticks >= 0.9 * MEASURE_S * 50, delta  # the stream played throughout
    lost = delta["fec"] + delta["concealed"]
    assert lost >= 0.02 * ticks, f"the loss did not happen: {delta}"  # ~5 % expected
    assert delta["fec"] > 0, f"no frame was rebuilt by FEC: {delta}"
    clean = 1 - delta["long_gap_frames"] / ticks
    LAB_REPORT.append((f"{LOSS_PERCENT} % random loss each way on the listener's link", "public",
                       "direct", f"{ticks} ticks: {delta['fec']} FEC, {delta['concealed']} "
                       f"concealed, {delta['long_gaps']} holes > 60 ms; {clean:.2%} clean"))
    assert clean >= 0.99, delta
